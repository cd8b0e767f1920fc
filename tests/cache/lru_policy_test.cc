#include <gtest/gtest.h>

#include <algorithm>

#include "cache/eviction_policy.h"

namespace kvtier {
namespace {

BlockKey K(uint64_t i) { return BlockKey{0, i}; }

VictimQuery Take(size_t n, std::function<bool(const BlockKey&)> eligible = nullptr) {
  VictimQuery q;
  q.n = n;
  q.eligible = std::move(eligible);
  return q;
}

TEST(LruPolicyTest, EvictsLeastRecentlyUsedFirst) {
  auto p = NewLruPolicy();
  for (uint64_t i = 1; i <= 4; ++i) p->Insert(K(i), PolicyBlock{});
  p->Touch(K(1));                  // order, most recent first: 1 4 3 2
  p->Insert(K(3), PolicyBlock{});  // re-insert is a touch:     3 1 4 2
  std::vector<BlockKey> v;
  EXPECT_EQ(p->Victims(Take(3), &v), 3u);
  EXPECT_EQ(v, (std::vector<BlockKey>{K(2), K(4), K(1)}));
  EXPECT_EQ(p->size(), 1u);
}

TEST(LruPolicyTest, SkipsIneligibleBlocksAndKeepsThem) {
  auto p = NewLruPolicy();
  for (uint64_t i = 1; i <= 4; ++i) p->Insert(K(i), PolicyBlock{});
  std::vector<BlockKey> v;
  p->Victims(Take(2, [](const BlockKey& k) { return k.lo % 2 == 0; }), &v);
  EXPECT_EQ(v, (std::vector<BlockKey>{K(2), K(4)}));
  v.clear();
  EXPECT_EQ(p->Victims(Take(5), &v), 2u);
  EXPECT_EQ(v, (std::vector<BlockKey>{K(1), K(3)}));
}

TEST(LruPolicyTest, EraseAndUnknownKeys) {
  auto p = NewLruPolicy();
  p->Insert(K(1), PolicyBlock{});
  p->Insert(K(2), PolicyBlock{});
  p->Erase(K(1));
  p->Erase(K(7));
  p->Touch(K(7));
  std::vector<BlockKey> v;
  EXPECT_EQ(p->Victims(Take(5), &v), 1u);
  EXPECT_EQ(v[0], K(2));
  EXPECT_EQ(p->Victims(Take(5), &v), 0u);
}

TEST(EvictionPolicyTest, FactoryKnowsEveryPolicyByItsName) {
  for (const std::string& name : EvictionPolicyNames()) {
    std::unique_ptr<EvictionPolicy> p = NewEvictionPolicy(name, PolicyOptions{100});
    ASSERT_NE(p, nullptr) << name;
    EXPECT_EQ(p->Name(), name);
  }
  EXPECT_EQ(EvictionPolicyNames().size(), 8u);
  EXPECT_EQ(NewEvictionPolicy("nope"), nullptr);
}

// Every policy: holds what it is given, honours eligibility, forgets victims
// and erased keys, and ends up empty.
TEST(EvictionPolicyTest, EveryPolicyKeepsTheContract) {
  for (const std::string& name : EvictionPolicyNames()) {
    SCOPED_TRACE(name);
    std::unique_ptr<EvictionPolicy> p = NewEvictionPolicy(name, PolicyOptions{8});
    for (uint64_t i = 1; i <= 8; ++i) p->Insert(K(i), PolicyBlock{});
    EXPECT_EQ(p->size(), 8u);
    p->Touch(K(3));
    p->Touch(K(99));  // absent: ignored
    p->Erase(K(5));
    p->Erase(K(99));
    EXPECT_EQ(p->size(), 7u);
    std::vector<BlockKey> v;
    // Only odd keys are eligible: 1, 3, 7 (5 is gone).
    EXPECT_EQ(p->Victims(Take(10, [](const BlockKey& k) { return k.lo % 2 == 1; }), &v), 3u);
    std::sort(v.begin(), v.end());
    EXPECT_EQ(v, (std::vector<BlockKey>{K(1), K(3), K(7)}));
    EXPECT_EQ(p->size(), 4u);
    v.clear();
    EXPECT_EQ(p->Victims(Take(10), &v), 4u);
    std::sort(v.begin(), v.end());
    EXPECT_EQ(v, (std::vector<BlockKey>{K(2), K(4), K(6), K(8)}));
    EXPECT_EQ(p->size(), 0u);
    EXPECT_EQ(p->Victims(Take(1), &v), 0u);
  }
}

}  // namespace
}  // namespace kvtier
