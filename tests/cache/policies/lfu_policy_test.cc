#include <gtest/gtest.h>

#include <functional>

#include "cache/eviction_policy.h"
#include "tests/cache/policies/policy_test_util.h"

namespace kvtier {
namespace {

using policy_test::K;
using policy_test::ReplayBlocks;
using policy_test::Take;

TEST(LfuPolicyTest, FrequentBlocksSurviveAScan) {
  // Capacity 3; buckets by frequency, each listed most recent first.
  //   1      miss           f1:[1]
  //   1 1    hit, hit       f3:[1]
  //   2      miss           f1:[2] f3:[1]
  //   2      hit            f2:[2] f3:[1]
  //   3      miss           f1:[3] f2:[2] f3:[1]
  //   4      miss, evict 3  f1:[4] f2:[2] f3:[1]
  //   3      miss, evict 4  f1:[3] f2:[2] f3:[1]
  //   5      miss, evict 3  f1:[5] f2:[2] f3:[1]
  //   2      hit            f1:[5] f3:[2 1]
  //   6      miss, evict 5  f1:[6] f3:[2 1]
  //   1      hit            f1:[6] f3:[2] f4:[1]
  //   7      miss, evict 6  f1:[7] f3:[2] f4:[1]
  auto p = NewLfuPolicy();
  const auto r = ReplayBlocks(*p, 3, {1, 1, 1, 2, 2, 3, 4, 3, 5, 2, 6, 1, 7});
  EXPECT_EQ(r.victims, (std::vector<uint64_t>{3, 4, 3, 5, 6}));
  EXPECT_EQ(p->size(), 3u);
  EXPECT_EQ(Take(*p, 3), (std::vector<uint64_t>{7, 2, 1}));
}

TEST(LfuPolicyTest, TiesGoToTheLeastRecentlyUsed) {
  auto p = NewLfuPolicy();
  for (uint64_t i = 1; i <= 4; ++i) p->Insert(K(i), PolicyBlock{});  // f1:[4 3 2 1]
  p->Touch(K(3));                                                    // f1:[4 2 1] f2:[3]
  p->Touch(K(1));                                                    // f1:[4 2]   f2:[1 3]
  EXPECT_EQ(Take(*p, 4), (std::vector<uint64_t>{2, 4, 3, 1}));
}

TEST(LfuPolicyTest, ReInsertCountsAsAUse) {
  auto p = NewLfuPolicy();
  for (uint64_t i = 1; i <= 3; ++i) p->Insert(K(i), PolicyBlock{});  // f1:[3 2 1]
  p->Insert(K(1), PolicyBlock{.bytes = 4, .miss_cost = 2.0, .expiry_ms = kNoExpiry});
  // f1:[3 2] f2:[1]
  p->Touch(K(2));
  p->Touch(K(2));  // f1:[3] f2:[1] f3:[2]
  EXPECT_EQ(p->size(), 3u);
  EXPECT_EQ(Take(*p, 3), (std::vector<uint64_t>{3, 1, 2}));
}

TEST(LfuPolicyTest, BucketsAppearAndVanishInOrder) {
  auto p = NewLfuPolicy();
  p->Insert(K(1), PolicyBlock{});
  p->Insert(K(2), PolicyBlock{});  // f1:[2 1]
  p->Touch(K(1));
  p->Touch(K(1));                  // f1:[2] f3:[1]   (f2 made and dropped)
  p->Touch(K(2));                  // f2:[2] f3:[1]   (f2 made between f1 and f3; f1 dropped)
  p->Insert(K(3), PolicyBlock{});  // f1:[3] f2:[2] f3:[1]
  EXPECT_EQ(Take(*p, 1), (std::vector<uint64_t>{3}));
  p->Insert(K(4), PolicyBlock{});  // f1:[4] f2:[2] f3:[1]
  p->Touch(K(4));                  // f2:[4 2] f3:[1]
  EXPECT_EQ(Take(*p, 3), (std::vector<uint64_t>{2, 4, 1}));
}

TEST(LfuPolicyTest, EraseAndUnknownKeys) {
  auto p = NewLfuPolicy();
  p->Insert(K(1), PolicyBlock{});
  p->Insert(K(2), PolicyBlock{});
  p->Touch(K(1));  // f1:[2] f2:[1]
  p->Erase(K(1));  // present; f2 empties: f1:[2]
  p->Erase(K(9));  // absent: ignored
  p->Touch(K(9));  // absent: ignored
  EXPECT_EQ(p->size(), 1u);
  p->Touch(K(2));                  // f2:[2]
  p->Insert(K(3), PolicyBlock{});  // f1:[3] f2:[2]
  p->Insert(K(1), PolicyBlock{});  // erased, so new at f1: f1:[1 3] f2:[2]
  EXPECT_EQ(Take(*p, 5), (std::vector<uint64_t>{3, 1, 2}));
  std::vector<BlockKey> out = {K(42)};
  EXPECT_EQ(p->Victims(VictimQuery{}, &out), 0u);
  EXPECT_EQ(out, (std::vector<BlockKey>{K(42)}));
}

TEST(LfuPolicyTest, SkipsIneligibleBlocksAndKeepsTheirState) {
  auto p = NewLfuPolicy();
  for (uint64_t i = 1; i <= 4; ++i) p->Insert(K(i), PolicyBlock{});  // f1:[4 3 2 1]
  p->Touch(K(1));                                                    // f1:[4 3 2] f2:[1]
  auto not2 = [](const BlockKey& k) { return k.lo != 2; };
  EXPECT_EQ(Take(*p, 2, not2), (std::vector<uint64_t>{3, 4}));  // f1:[2] f2:[1]
  // 2 kept frequency 1 and its recency: it goes before a newer f1 block.
  p->Insert(K(5), PolicyBlock{});  // f1:[5 2] f2:[1]
  EXPECT_EQ(Take(*p, 1), (std::vector<uint64_t>{2}));
  // Only 1 eligible of f1:[5] f2:[1]: fewer than asked.
  EXPECT_EQ(Take(*p, 3, [](const BlockKey& k) { return k.lo == 1; }), (std::vector<uint64_t>{1}));
  EXPECT_EQ(Take(*p, 3, [](const BlockKey&) { return false; }), std::vector<uint64_t>{});
  EXPECT_EQ(Take(*p, 3), (std::vector<uint64_t>{5}));
}

TEST(LfuPolicyTest, Name) { EXPECT_EQ(NewLfuPolicy()->Name(), "lfu"); }

}  // namespace
}  // namespace kvtier
