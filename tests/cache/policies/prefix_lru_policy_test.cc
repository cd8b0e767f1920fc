// prefix-lru: leaf-first LRU over the prefix tree (SGLang's radix-tree
// eviction). A parent is never a victim while it has a cached child.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>
#include <vector>

#include "cache/eviction_policy.h"
#include "tests/cache/policies/policy_test_util.h"

namespace kvtier {
namespace {

using policy_test::K;
using policy_test::ReplayMixedSizes;
using policy_test::Take;

PolicyBlock Child(uint64_t parent, uint32_t depth) {
  PolicyBlock b;
  b.parent = K(parent);
  b.depth = depth;
  return b;
}

// Chains 1 <- 2 <- 3 and 4 <- 5, inserted in that order. LRU would take
// 1 2 3 4 5, cutting each chain at its root; leaf-first takes the oldest
// leaf 3, then its parent 2 (now a leaf, used before every other leaf),
// then 1, then the other chain from its end.
TEST(PrefixLruPolicyTest, EvictsLeavesFirstAndChainsFromTheirEnd) {
  auto p = NewPrefixLruPolicy();
  p->Insert(K(1), PolicyBlock{});
  p->Insert(K(2), Child(1, 1));
  p->Insert(K(3), Child(2, 2));
  p->Insert(K(4), PolicyBlock{});
  p->Insert(K(5), Child(4, 1));
  EXPECT_EQ(Take(*p, 1), (std::vector<uint64_t>{3}));
  EXPECT_EQ(Take(*p, 4), (std::vector<uint64_t>{2, 1, 5, 4}));
  EXPECT_EQ(p->size(), 0u);
}

// A shared parent stays while any child is cached: 1 has children 2 and 3;
// touching the whole of 1 <- 2 keeps 2 newer than 3.
TEST(PrefixLruPolicyTest, SharedParentOutlivesItsChildren) {
  auto p = NewPrefixLruPolicy();
  p->Insert(K(1), PolicyBlock{});
  p->Insert(K(2), Child(1, 1));
  p->Insert(K(3), Child(1, 1));
  p->Touch(K(1));
  p->Touch(K(2));
  EXPECT_EQ(Take(*p, 1), (std::vector<uint64_t>{3}));
  EXPECT_EQ(Take(*p, 1), (std::vector<uint64_t>{2}));
  EXPECT_EQ(Take(*p, 1), (std::vector<uint64_t>{1}));
}

// A parent used after its children (a request that ended at it) becomes a
// leaf at the place its last use gives it, not at the victim end.
//  1 <- 2, then 3, then a use of 1: leaves by last use 2 3; 2 goes, 1 is
//  placed after 3 (used later), so 3 goes before it.
TEST(PrefixLruPolicyTest, NewLeafTakesItsPlaceByLastUse) {
  auto p = NewPrefixLruPolicy();
  p->Insert(K(1), PolicyBlock{});
  p->Insert(K(2), Child(1, 1));
  p->Insert(K(3), PolicyBlock{});
  p->Touch(K(1));
  EXPECT_EQ(Take(*p, 3), (std::vector<uint64_t>{2, 3, 1}));
}

// Refused leaves keep their place; a parent that becomes a leaf in the
// same call is looked at in its turn.
//  9 (oldest), 1 <- 2. Refusing 9: 2 goes, then 1 (a leaf now), 9 stays.
TEST(PrefixLruPolicyTest, SkipsIneligibleBlocksAndKeepsThem) {
  auto p = NewPrefixLruPolicy();
  p->Insert(K(9), PolicyBlock{});
  p->Insert(K(1), PolicyBlock{});
  p->Insert(K(2), Child(1, 1));
  EXPECT_EQ(Take(*p, 3, [](const BlockKey& k) { return k.lo != 9; }),
            (std::vector<uint64_t>{2, 1}));
  EXPECT_EQ(p->size(), 1u);
  EXPECT_EQ(Take(*p, 3), (std::vector<uint64_t>{9}));
}

// Interior blocks are never taken, even when every leaf is refused.
TEST(PrefixLruPolicyTest, NeverTakesAParentWhenLeavesAreRefused) {
  auto p = NewPrefixLruPolicy();
  p->Insert(K(1), PolicyBlock{});
  p->Insert(K(2), Child(1, 1));
  EXPECT_EQ(Take(*p, 2, [](const BlockKey& k) { return k.lo != 2; }), (std::vector<uint64_t>{}));
  EXPECT_EQ(p->size(), 2u);
}

// Erase of an interior block leaves its children as roots. The erased
// key's slot is reused when it comes back; its old child's link is stale
// and must not count against the new block's children.
//  1 <- 2; Erase 1; Insert 1 again with child 3. Leaves 2 3. Taking 2 must
//  not make 1 a leaf: 3 goes next, then 1.
TEST(PrefixLruPolicyTest, EraseOfAParentLeavesRoots) {
  auto p = NewPrefixLruPolicy();
  p->Insert(K(1), PolicyBlock{});
  p->Insert(K(2), Child(1, 1));
  p->Erase(K(1));
  p->Erase(K(77));
  p->Touch(K(77));
  EXPECT_EQ(p->size(), 1u);
  p->Insert(K(1), PolicyBlock{});
  p->Insert(K(3), Child(1, 1));
  EXPECT_EQ(Take(*p, 1), (std::vector<uint64_t>{2}));
  EXPECT_EQ(Take(*p, 1), (std::vector<uint64_t>{3}));
  EXPECT_EQ(Take(*p, 1), (std::vector<uint64_t>{1}));
}

// Random chains (conversations that grow and branch), random uses, erases
// and eligibility: no victim ever has a cached child, and the policy holds
// exactly the blocks the test holds.
TEST(PrefixLruPolicyTest, NoVictimHasACachedChild) {
  auto p = NewPrefixLruPolicy();
  std::mt19937 rng(5);
  std::map<uint64_t, uint64_t> parent;          // cached block -> its parent (0: root)
  std::map<uint64_t, std::set<uint64_t>> kids;  // cached block -> cached children
  uint64_t next_key = 1;
  std::vector<uint64_t> tips;  // blocks a new child may hang from
  for (int step = 0; step < 20000; ++step) {
    const int op = static_cast<int>(rng() % 10);
    if (op < 5 || parent.empty()) {
      // A new block under a random cached tip (or a new root).
      uint64_t par = 0;
      if (!tips.empty() && rng() % 4 != 0) {
        const uint64_t t = tips[rng() % tips.size()];
        if (parent.count(t)) par = t;
      }
      const uint64_t k = next_key++;
      p->Insert(K(k), par ? Child(par, 1) : PolicyBlock{});
      parent[k] = par;
      if (par) kids[par].insert(k);
      tips.push_back(k);
      if (tips.size() > 64) tips.erase(tips.begin());
    } else if (op < 8) {
      auto it = parent.begin();
      std::advance(it, rng() % parent.size());
      p->Touch(K(it->first));
    } else {
      const uint64_t odd = rng() % 2;
      auto v =
          Take(*p, 1 + rng() % 3, [&](const BlockKey& k) { return k.lo % 2 == odd || rng() % 2; });
      for (uint64_t k : v) {
        ASSERT_TRUE(parent.count(k)) << k;
        ASSERT_TRUE(kids[k].empty()) << "victim " << k << " has cached children";
        if (parent[k]) kids[parent[k]].erase(k);
        parent.erase(k);
        kids.erase(k);
      }
    }
    ASSERT_EQ(p->size(), parent.size());
  }
  // Everything drains, leaves first.
  while (!parent.empty()) {
    auto v = Take(*p, 1);
    ASSERT_EQ(v.size(), 1u);
    ASSERT_TRUE(kids[v[0]].empty());
    if (parent[v[0]]) kids[parent[v[0]]].erase(v[0]);
    parent.erase(v[0]);
    kids.erase(v[0]);
  }
  EXPECT_EQ(p->size(), 0u);
}

TEST(PrefixLruPolicyTest, MixedSizesNeverOverflow) {
  auto p = NewPrefixLruPolicy();
  ReplayMixedSizes(*p, 400, 0, 3);
}

TEST(PrefixLruPolicyTest, FactoryName) {
  EXPECT_EQ(NewPrefixLruPolicy()->Name(), "prefix-lru");
  EXPECT_EQ(NewEvictionPolicy("prefix-lru")->Name(), "prefix-lru");
}

}  // namespace
}  // namespace kvtier
