#include <gtest/gtest.h>

#include "cache/eviction_policy.h"

namespace kvtier {
namespace {

BlockKey K(uint64_t i) { return BlockKey{0, i}; }
auto All() {
  return [](const BlockKey&) { return true; };
}

TEST(LruPolicyTest, EvictsLeastRecentlyUsedFirst) {
  auto p = NewLruPolicy();
  for (uint64_t i = 1; i <= 4; ++i) p->Insert(K(i), 1);
  p->Touch(K(1));      // order, most recent first: 1 4 3 2
  p->Insert(K(3), 1);  // re-insert is a touch:     3 1 4 2
  std::vector<BlockKey> v;
  EXPECT_EQ(p->Victims(3, All(), &v), 3u);
  EXPECT_EQ(v, (std::vector<BlockKey>{K(2), K(4), K(1)}));
  EXPECT_EQ(p->size(), 1u);
}

TEST(LruPolicyTest, SkipsIneligibleBlocksAndKeepsThem) {
  auto p = NewLruPolicy();
  for (uint64_t i = 1; i <= 4; ++i) p->Insert(K(i), 1);
  std::vector<BlockKey> v;
  p->Victims(
      2, [](const BlockKey& k) { return k.lo % 2 == 0; }, &v);
  EXPECT_EQ(v, (std::vector<BlockKey>{K(2), K(4)}));
  v.clear();
  EXPECT_EQ(p->Victims(5, All(), &v), 2u);
  EXPECT_EQ(v, (std::vector<BlockKey>{K(1), K(3)}));
}

TEST(LruPolicyTest, EraseAndUnknownKeys) {
  auto p = NewLruPolicy();
  p->Insert(K(1), 1);
  p->Insert(K(2), 1);
  p->Erase(K(1));
  p->Erase(K(7));
  p->Touch(K(7));
  std::vector<BlockKey> v;
  EXPECT_EQ(p->Victims(5, All(), &v), 1u);
  EXPECT_EQ(v[0], K(2));
  EXPECT_EQ(p->Victims(5, All(), &v), 0u);
}

TEST(LruPolicyTest, FactoryKnowsLruOnly) {
  ASSERT_NE(NewEvictionPolicy("lru"), nullptr);
  EXPECT_EQ(NewEvictionPolicy("lru")->Name(), "lru");
  EXPECT_EQ(NewEvictionPolicy("nope"), nullptr);
}

}  // namespace
}  // namespace kvtier
