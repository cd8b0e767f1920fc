#include <gtest/gtest.h>

#include <functional>

#include "cache/eviction_policy.h"
#include "tests/cache/policies/policy_test_util.h"

namespace kvtier {
namespace {

using policy_test::K;
using policy_test::ReplayBlocks;
using policy_test::Take;

TEST(FifoPolicyTest, HitsDoNotSaveABlock) {
  // Capacity 3; queue shown oldest first.
  //   1 2 3  miss x3        [1 2 3]
  //   1      hit            [1 2 3]  (unchanged)
  //   4      miss, evict 1  [2 3 4]
  //   1      miss, evict 2  [3 4 1]
  //   5      miss, evict 3  [4 1 5]
  // LRU would have kept 1 at its hit and evicted 2, then 3.
  const std::vector<uint64_t> requests = {1, 2, 3, 1, 4, 1, 5};
  auto fifo = NewFifoPolicy();
  const auto r = ReplayBlocks(*fifo, 3, requests);
  EXPECT_EQ(r.hits, (std::vector<bool>{false, false, false, true, false, false, false}));
  EXPECT_EQ(r.victims, (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(fifo->size(), 3u);

  auto lru = NewLruPolicy();
  EXPECT_EQ(ReplayBlocks(*lru, 3, requests).victims, (std::vector<uint64_t>{2, 3}));
}

TEST(FifoPolicyTest, EqualsLruWithoutReuse) {
  // Capacity 3, no request is a hit (keys return only after eviction), so
  // insertion order is recency order and LRU picks the same victims.
  //   1 2 3              [1 2 3]
  //   4 evict 1          [2 3 4]
  //   5 evict 2          [3 4 5]
  //   1 evict 3          [4 5 1]
  //   2 evict 4          [5 1 2]
  //   6 evict 5          [1 2 6]
  //   7 evict 1          [2 6 7]
  //   3 evict 2          [6 7 3]
  const std::vector<uint64_t> requests = {1, 2, 3, 4, 5, 1, 2, 6, 7, 3};
  auto fifo = NewFifoPolicy();
  auto lru = NewLruPolicy();
  const auto f = ReplayBlocks(*fifo, 3, requests);
  const auto l = ReplayBlocks(*lru, 3, requests);
  EXPECT_EQ(f.hits, std::vector<bool>(requests.size(), false));
  EXPECT_EQ(f.victims, (std::vector<uint64_t>{1, 2, 3, 4, 5, 1, 2}));
  EXPECT_EQ(l.victims, f.victims);
  EXPECT_EQ(l.hits, f.hits);
}

TEST(FifoPolicyTest, ReInsertAndTouchKeepThePlace) {
  auto p = NewFifoPolicy();
  for (uint64_t i = 1; i <= 3; ++i) p->Insert(K(i), PolicyBlock{});
  p->Insert(K(1), PolicyBlock{.bytes = 8, .miss_cost = 5.0, .expiry_ms = 10});
  p->Touch(K(1));
  p->Touch(K(2));
  EXPECT_EQ(p->size(), 3u);
  EXPECT_EQ(Take(*p, 3), (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(p->size(), 0u);
}

TEST(FifoPolicyTest, EraseAndUnknownKeys) {
  auto p = NewFifoPolicy();
  for (uint64_t i = 1; i <= 3; ++i) p->Insert(K(i), PolicyBlock{});
  p->Erase(K(2));  // present
  p->Erase(K(9));  // absent: ignored
  p->Touch(K(9));  // absent: ignored
  EXPECT_EQ(p->size(), 2u);
  EXPECT_EQ(Take(*p, 5), (std::vector<uint64_t>{1, 3}));  // fewer than asked
  // Empty: nothing chosen, nothing appended.
  std::vector<BlockKey> out = {K(42)};
  EXPECT_EQ(p->Victims(VictimQuery{}, &out), 0u);
  EXPECT_EQ(out, (std::vector<BlockKey>{K(42)}));
  // A key erased and inserted again is new: it goes to the back.
  p->Insert(K(1), PolicyBlock{});
  p->Insert(K(2), PolicyBlock{});
  p->Erase(K(1));
  p->Insert(K(1), PolicyBlock{});
  EXPECT_EQ(Take(*p, 2), (std::vector<uint64_t>{2, 1}));
}

TEST(FifoPolicyTest, SkipsIneligibleBlocksAndKeepsTheirPlace) {
  auto p = NewFifoPolicy();
  for (uint64_t i = 1; i <= 4; ++i) p->Insert(K(i), PolicyBlock{});  // [1 2 3 4]
  auto even = [](const BlockKey& k) { return k.lo % 2 == 0; };
  EXPECT_EQ(Take(*p, 1, even), (std::vector<uint64_t>{2}));  // 1 stepped over
  auto not3 = [](const BlockKey& k) { return k.lo != 3; };
  EXPECT_EQ(Take(*p, 5, not3), (std::vector<uint64_t>{1, 4}));  // only 2 eligible
  EXPECT_EQ(Take(*p, 5, [](const BlockKey&) { return false; }), std::vector<uint64_t>{});
  EXPECT_EQ(p->size(), 1u);
  p->Insert(K(5), PolicyBlock{});
  EXPECT_EQ(Take(*p, 2), (std::vector<uint64_t>{3, 5}));  // 3 kept its place ahead of 5
}

TEST(FifoPolicyTest, Name) { EXPECT_EQ(NewFifoPolicy()->Name(), "fifo"); }

}  // namespace
}  // namespace kvtier
