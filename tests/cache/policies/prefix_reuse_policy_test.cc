// prefix-reuse: leaf-first eviction that learns how much longer than new
// chains the reused ones should stay.
#include <gtest/gtest.h>

#include <algorithm>
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

std::unique_ptr<EvictionPolicy> Reuse(uint64_t capacity) {
  return NewPrefixReusePolicy(PolicyOptions{capacity});
}

PolicyBlock Child(uint64_t parent) {
  PolicyBlock b;
  b.parent = K(parent);
  return b;
}

// A tier of `capacity` one-byte blocks serving chained requests: a request's
// cached blocks are touched, its missing ones inserted under their parent.
class ChainCache {
 public:
  ChainCache(EvictionPolicy& p, uint64_t capacity) : p_(p), capacity_(capacity) {}

  // Returns the request's hits, prefix semantics (the leading cached run).
  uint64_t Request(const std::vector<uint64_t>& chain) {
    uint64_t hits = 0;
    bool run = true;
    for (size_t i = 0; i < chain.size(); ++i) {
      const uint64_t k = chain[i];
      if (present_.count(k)) {
        hits += run;
        p_.Touch(K(k));
        continue;
      }
      run = false;
      const BlockKey incoming = K(k);
      while (present_.size() >= capacity_) {
        std::vector<BlockKey> out;
        VictimQuery q;
        q.incoming = &incoming;
        EXPECT_EQ(p_.Victims(q, &out), 1u);
        if (out.empty()) return hits;
        EXPECT_EQ(present_.erase(out[0].lo), 1u);
      }
      p_.Insert(incoming, i ? Child(chain[i - 1]) : PolicyBlock{});
      present_.insert(k);
    }
    return hits;
  }

  bool Has(uint64_t k) const { return present_.count(k) > 0; }

 private:
  EvictionPolicy& p_;
  const uint64_t capacity_;
  std::set<uint64_t> present_;
};

// Until a ghost comes back the order is prefix-lru's exactly (credit 0) on
// chains that do not branch (conversations), used whole from their first
// block as an engine looks them up. (Where a parent is used after its
// child, the two place it by a bounded walk in different lists, and the
// orders may differ a little.)
TEST(PrefixReusePolicyTest, WithoutReturningGhostsItIsPrefixLru) {
  auto reuse = Reuse(1000);
  auto lru = NewPrefixLruPolicy();
  std::mt19937 rng(3);
  uint64_t next = 1;
  std::vector<uint64_t> held;
  std::map<uint64_t, uint64_t> parent;  // held block -> its parent (0: a root)
  std::map<uint64_t, int> children;     // held block -> its held children
  // A random held leaf (the end of a chain), or 0.
  auto leaf = [&]() -> uint64_t {
    if (held.empty()) return 0;
    const uint64_t k = held[rng() % held.size()];
    return children[k] == 0 ? k : 0;
  };
  auto use_chain = [&](uint64_t k) {
    std::vector<uint64_t> chain;
    for (uint64_t b = k; b != 0 && parent.count(b); b = parent[b]) chain.push_back(b);
    for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
      reuse->Touch(K(*it));
      lru->Touch(K(*it));
    }
  };
  for (int step = 0; step < 3000; ++step) {
    if (held.empty() || rng() % 3 != 0) {
      const uint64_t under = rng() % 2 ? leaf() : 0;
      if (under) use_chain(under);
      const PolicyBlock b = under ? Child(under) : PolicyBlock{};
      reuse->Insert(K(next), b);
      lru->Insert(K(next), b);
      parent[next] = under;
      if (under) ++children[under];
      held.push_back(next++);
    } else if (rng() % 2) {
      if (const uint64_t k = leaf()) use_chain(k);
    } else {
      // Victims never come back (new keys only): no ghost returns.
      auto a = Take(*reuse, 1);
      auto b = Take(*lru, 1);
      ASSERT_EQ(a, b) << "step " << step;
      held.erase(std::find(held.begin(), held.end(), a[0]));
      if (parent[a[0]]) --children[parent[a[0]]];
      parent.erase(a[0]);
      children.erase(a[0]);
    }
  }
}

// A conversation's chain is used every round and grows by two blocks, under
// a stream of one-shot prompts (new chains of 8 blocks) that, with it,
// overflow the tier. prefix-lru keeps the blocks used last, the one-shot
// prompts, and loses the conversation's end every round. prefix-reuse sees
// the conversation's blocks come back as ghosts, learns to give reused
// chains more time, and keeps the whole conversation: the two blocks
// appended each round continue a reused chain and are reused from the
// start.
TEST(PrefixReusePolicyTest, LearnsToKeepAReusedChainThroughOneShotPrompts) {
  auto run = [](EvictionPolicy& p) {
    ChainCache cache(p, 100);
    std::vector<uint64_t> conversation;
    uint64_t next = 1000;
    for (uint64_t i = 0; i < 10; ++i) conversation.push_back(i);
    uint64_t late_hits = 0, late_refs = 0;
    for (int round = 0; round < 20; ++round) {
      const uint64_t hits = cache.Request(conversation);
      if (round >= 15) {
        late_hits += hits;
        late_refs += conversation.size() - 2;  // the two new blocks cannot hit
      }
      for (int j = 0; j < 10; ++j) {
        std::vector<uint64_t> prompt;
        for (int b = 0; b < 8; ++b) prompt.push_back(next++);
        cache.Request(prompt);
      }
      conversation.push_back(100 + 2 * round);
      conversation.push_back(101 + 2 * round);
    }
    return double(late_hits) / double(late_refs);
  };
  auto reuse = Reuse(100);
  auto lru = NewPrefixLruPolicy();
  const double with_reuse = run(*reuse), leaf_lru = run(*lru);
  EXPECT_GE(with_reuse, 0.95);
  EXPECT_LE(leaf_lru, 0.6);
}

// After the conversation above has taught the policy to keep reused
// chains, two blocks arrive: Y continues the conversation (its parent, the
// last block, has no reused child: Y is reused from the start), X branches
// off the middle (its parent already has a reused child, the rest of the
// conversation: a fan-out point, so X is new). One-shot prompts then push
// blocks out: X goes while Y, used before X, stays.
TEST(PrefixReusePolicyTest, ABranchBesideAReusedChildStartsNew) {
  auto p = Reuse(100);
  ChainCache cache(*p, 100);
  std::vector<uint64_t> conversation;
  uint64_t next = 1000;
  for (uint64_t i = 0; i < 10; ++i) conversation.push_back(i);
  auto one_shot = [&] {
    std::vector<uint64_t> prompt;
    for (int b = 0; b < 8; ++b) prompt.push_back(next++);
    cache.Request(prompt);
  };
  for (int round = 0; round < 20; ++round) {
    cache.Request(conversation);
    for (int j = 0; j < 10; ++j) one_shot();
    conversation.push_back(100 + 2 * round);
    conversation.push_back(101 + 2 * round);
  }
  std::vector<uint64_t> y = conversation;
  y.push_back(6000);
  cache.Request(y);
  std::vector<uint64_t> x(conversation.begin(), conversation.begin() + 6);
  x.push_back(5000);
  cache.Request(x);
  ASSERT_TRUE(cache.Has(5000) && cache.Has(6000));
  for (int i = 0; i < 40 && cache.Has(5000); ++i) one_shot();
  EXPECT_FALSE(cache.Has(5000));
  EXPECT_TRUE(cache.Has(6000));
}

// Leaves only, as prefix-lru: a parent never goes before its cached child.
TEST(PrefixReusePolicyTest, EvictsLeavesOnly) {
  auto p = Reuse(10);
  p->Insert(K(1), PolicyBlock{});
  p->Insert(K(2), Child(1));
  p->Insert(K(3), Child(2));
  p->Insert(K(4), PolicyBlock{});
  EXPECT_EQ(Take(*p, 4), (std::vector<uint64_t>{3, 2, 1, 4}));
  // Every leaf refused: nothing, parents included.
  p->Insert(K(5), PolicyBlock{});
  p->Insert(K(6), Child(5));
  EXPECT_EQ(Take(*p, 2, [](const BlockKey& k) { return k.lo != 6; }), (std::vector<uint64_t>{}));
  EXPECT_EQ(p->size(), 2u);
}

// Erase leaves no ghost, unknown keys are ignored, and a ghost is not held.
TEST(PrefixReusePolicyTest, EraseAndGhostsAreNotHeld) {
  auto p = Reuse(4);
  for (uint64_t i = 1; i <= 3; ++i) p->Insert(K(i), PolicyBlock{});
  EXPECT_EQ(Take(*p, 1), (std::vector<uint64_t>{1}));  // 1 is a ghost now
  p->Touch(K(1));
  p->Erase(K(1));
  p->Erase(K(9));
  EXPECT_EQ(p->size(), 2u);
  p->Erase(K(2));
  EXPECT_EQ(p->size(), 1u);
  EXPECT_EQ(Take(*p, 5), (std::vector<uint64_t>{3}));
  EXPECT_EQ(p->size(), 0u);
}

TEST(PrefixReusePolicyTest, MixedSizesNeverOverflow) {
  auto p = Reuse(400);
  ReplayMixedSizes(*p, 400, 0, 5);
  auto u = Reuse(0);
  ReplayMixedSizes(*u, 0, 300, 5);
}

TEST(PrefixReusePolicyTest, FactoryName) {
  EXPECT_EQ(Reuse(1)->Name(), "prefix-reuse");
  EXPECT_EQ(NewEvictionPolicy("prefix-reuse", PolicyOptions{8})->Name(), "prefix-reuse");
}

}  // namespace
}  // namespace kvtier
