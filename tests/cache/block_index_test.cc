#include "cache/block_index.h"

#include <gtest/gtest.h>

#include <thread>

namespace kvtier {
namespace {

BlockKey K(uint64_t i) { return BlockKey{i * 0x9e3779b97f4a7c15ull, i}; }

class BlockIndexTest : public ::testing::Test {
 protected:
  ManualClock clock_;
  BlockIndex index_{&clock_};
};

TEST_F(BlockIndexTest, LongestPrefixStopsAtFirstGap) {
  index_.Upsert(K(1), std::nullopt, 0, 10, kNoExpiry);
  index_.Upsert(K(2), K(1), 0, 10, kNoExpiry);
  index_.Upsert(K(4), K(3), 0, 10, kNoExpiry);  // K(3) is missing
  std::vector<BlockKey> keys = {K(1), K(2), K(3), K(4)};
  std::vector<IndexEntry> entries;
  EXPECT_EQ(index_.LongestPrefix(keys, &entries), 2u);
  EXPECT_EQ(entries.size(), 2u);
  std::vector<BlockKey> from_gap = {K(3), K(4)};
  EXPECT_EQ(index_.LongestPrefix(from_gap), 0u);
}

TEST_F(BlockIndexTest, ExpiredBlocksDoNotHit) {
  index_.Upsert(K(1), std::nullopt, 0, 10, clock_.NowMs() + 1000);
  index_.Upsert(K(2), K(1), 0, 10, kNoExpiry);
  std::vector<BlockKey> keys = {K(1), K(2)};
  EXPECT_EQ(index_.LongestPrefix(keys), 2u);
  clock_.AdvanceMs(1000);
  EXPECT_EQ(index_.LongestPrefix(keys), 0u);
  EXPECT_FALSE(index_.Pin(K(1)).valid());
  EXPECT_EQ(index_.Expired(10), std::vector<BlockKey>{K(1)});
}

TEST_F(BlockIndexTest, LookupRecordsLastAccess) {
  index_.Upsert(K(1), std::nullopt, 0, 10, kNoExpiry);
  const int64_t t0 = clock_.NowMs();
  clock_.AdvanceMs(5000);
  std::vector<BlockKey> keys = {K(1)};
  index_.LongestPrefix(keys);
  EXPECT_EQ(index_.Get(K(1))->last_access_ms, t0 + 5000);
}

TEST_F(BlockIndexTest, PinnedBlocksCannotBeRemovedUntilTheHandleGoes) {
  index_.Upsert(K(1), std::nullopt, 0, 10, kNoExpiry);
  {
    PinHandle a = index_.Pin(K(1));
    PinHandle b = index_.Pin(K(1));
    ASSERT_TRUE(a.valid() && b.valid());
    EXPECT_EQ(index_.Get(K(1))->pins, 2u);
    EXPECT_EQ(index_.Remove(K(1)).status().code(), StatusCode::kRetry);
    EXPECT_FALSE(index_.Evictable(K(1), false));
    PinHandle moved = std::move(a);
    EXPECT_FALSE(a.valid());  // NOLINT(bugprone-use-after-move): the moved-from state is tested
    EXPECT_EQ(index_.Get(K(1))->pins, 2u);
    b.Reset();
    EXPECT_EQ(index_.Get(K(1))->pins, 1u);
  }
  EXPECT_EQ(index_.Get(K(1))->pins, 0u);
  auto removed = index_.Remove(K(1));
  ASSERT_TRUE(removed.ok());
  EXPECT_EQ(removed->bytes, 10u);
  EXPECT_TRUE(index_.Remove(K(1)).status().IsNotFound());
  EXPECT_FALSE(index_.Pin(K(1)).valid());
}

TEST_F(BlockIndexTest, ParentsCountCachedChildren) {
  index_.Upsert(K(1), std::nullopt, 0, 10, kNoExpiry);
  index_.Upsert(K(2), K(1), 0, 10, kNoExpiry);
  index_.Upsert(K(3), K(1), 0, 10, kNoExpiry);  // a branch
  index_.Upsert(K(2), K(1), 1, 10, kNoExpiry);  // an update is not a new child
  EXPECT_EQ(index_.Get(K(1))->cached_children, 2u);
  EXPECT_FALSE(index_.Evictable(K(1), /*leaves_only=*/true));
  EXPECT_TRUE(index_.Evictable(K(1), /*leaves_only=*/false));
  EXPECT_TRUE(index_.Evictable(K(2), true));
  ASSERT_TRUE(index_.Remove(K(2)).ok());
  ASSERT_TRUE(index_.Remove(K(3)).ok());
  EXPECT_EQ(index_.Get(K(1))->cached_children, 0u);
  EXPECT_TRUE(index_.Evictable(K(1), true));
}

// Depth: 0 for a chain's first block, the parent's + 1 below it, 1 under a
// parent the index does not hold; an update keeps it.
TEST_F(BlockIndexTest, DepthFollowsTheChain) {
  index_.Upsert(K(1), std::nullopt, 0, 10, kNoExpiry);
  index_.Upsert(K(2), K(1), 0, 10, kNoExpiry);
  index_.Upsert(K(3), K(2), 0, 10, kNoExpiry);
  index_.Upsert(K(5), K(4), 0, 10, kNoExpiry);  // K(4) is missing
  EXPECT_EQ(index_.Get(K(1))->depth, 0u);
  EXPECT_EQ(index_.Get(K(2))->depth, 1u);
  EXPECT_EQ(index_.Get(K(3))->depth, 2u);
  EXPECT_EQ(index_.Get(K(5))->depth, 1u);
  index_.Upsert(K(3), std::nullopt, 1, 10, kNoExpiry);
  EXPECT_EQ(index_.Get(K(3))->depth, 2u) << "an update keeps it";
}

TEST_F(BlockIndexTest, UpdateKeepsPinsAndMovesTier) {
  index_.Upsert(K(1), std::nullopt, 0, 10, kNoExpiry);
  PinHandle p = index_.Pin(K(1));
  EXPECT_EQ(index_.Upsert(K(1), std::nullopt, 0, 20, kNoExpiry), std::optional<uint32_t>(0));
  EXPECT_EQ(index_.Upsert(K(2), std::nullopt, 0, 20, kNoExpiry), std::nullopt);
  EXPECT_TRUE(index_.SetExpiry(K(2), 5));
  EXPECT_EQ(index_.Get(K(2))->expiry_ms, 5);
  EXPECT_FALSE(index_.SetExpiry(K(3), 5));
  EXPECT_TRUE(index_.SetTier(K(1), 2));
  auto e = index_.Get(K(1));
  EXPECT_EQ(e->pins, 1u);
  EXPECT_EQ(e->tier, 2u);
  EXPECT_EQ(e->bytes, 20u);
  EXPECT_FALSE(index_.SetTier(K(9), 1));
}

TEST_F(BlockIndexTest, ConcurrentWritersAndReadersAgreeOnTheEnd) {
  constexpr int kThreads = 4, kPerThread = 5000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        uint64_t id = static_cast<uint64_t>(t) * kPerThread + i + 1;
        index_.Upsert(K(id), std::nullopt, 0, 1, kNoExpiry);
        std::vector<BlockKey> keys = {K(id)};
        EXPECT_EQ(index_.LongestPrefix(keys), 1u);
        PinHandle p = index_.Pin(K(id));
        EXPECT_TRUE(p.valid());
        if (i % 2 == 0) {
          p.Reset();
          EXPECT_TRUE(index_.Remove(K(id)).ok());
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(index_.size(), size_t{kThreads * kPerThread / 2});
}

}  // namespace
}  // namespace kvtier
