#include <gtest/gtest.h>

#include <algorithm>

#include "cache/eviction_policy.h"
#include "tests/cache/policies/policy_test_util.h"

namespace kvtier {
namespace {

using policy_test::K;
using policy_test::Take;

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

}  // namespace
}  // namespace kvtier
