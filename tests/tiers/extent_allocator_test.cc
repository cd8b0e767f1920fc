#include "tiers/hbm/extent_allocator.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

namespace kvtier {
namespace {

constexpr uint64_t kK = 4096;

TEST(ExtentAllocatorTest, ExtentBytesRoundsToAlignmentWithAFloor) {
  EXPECT_EQ(ExtentAllocator::ExtentBytes(1), 4096u);
  EXPECT_EQ(ExtentAllocator::ExtentBytes(4096), 4096u);
  EXPECT_EQ(ExtentAllocator::ExtentBytes(4097), 4096u + 256);
  EXPECT_EQ(ExtentAllocator::ExtentBytes(65536), 65536u);
}

TEST(ExtentAllocatorTest, ConsecutiveAllocationsAreContiguous) {
  ExtentAllocator a(64 * kK);
  EXPECT_EQ(a.Allocate(4 * kK), 0u);
  EXPECT_EQ(a.Allocate(4 * kK), 4 * kK);
  EXPECT_EQ(a.Allocate(8 * kK), 8 * kK);
  EXPECT_EQ(a.allocated_bytes(), 16 * kK);
  EXPECT_EQ(a.free_extents(), 1u);
  EXPECT_EQ(a.largest_free_bytes(), 48 * kK);
}

TEST(ExtentAllocatorTest, FullArenaRefusesAndFreeingMakesRoom) {
  ExtentAllocator a(16 * kK);
  EXPECT_EQ(a.Allocate(16 * kK), 0u);
  EXPECT_FALSE(a.Allocate(256).has_value());
  a.Free(4 * kK, 4 * kK);  // a piece of the extent handed out
  EXPECT_FALSE(a.Allocate(8 * kK).has_value());
  EXPECT_EQ(a.Allocate(4 * kK), 4 * kK);
  EXPECT_EQ(a.allocated_bytes(), 16 * kK);
}

TEST(ExtentAllocatorTest, BestFitPrefersTheSmallestHole) {
  ExtentAllocator a(64 * kK);
  ASSERT_EQ(a.Allocate(64 * kK), 0u);
  a.Free(0, 8 * kK);        // hole of 8 pages at 0
  a.Free(20 * kK, 2 * kK);  // hole of 2 pages at 20
  a.Free(40 * kK, 4 * kK);  // hole of 4 pages at 40
  EXPECT_EQ(a.Allocate(3 * kK), 40 * kK);
  EXPECT_EQ(a.Allocate(2 * kK), 20 * kK);
  EXPECT_EQ(a.Allocate(5 * kK), 0u);
  EXPECT_FALSE(a.Allocate(4 * kK).has_value());  // 1 + 3 pages left, apart
}

TEST(ExtentAllocatorTest, FreeMergesWithBothNeighbours) {
  ExtentAllocator a(12 * kK);
  ASSERT_EQ(a.Allocate(4 * kK), 0u);
  ASSERT_EQ(a.Allocate(4 * kK), 4 * kK);
  ASSERT_EQ(a.Allocate(4 * kK), 8 * kK);
  a.Free(0, 4 * kK);
  a.Free(8 * kK, 4 * kK);
  EXPECT_EQ(a.free_extents(), 2u);
  a.Free(4 * kK, 4 * kK);
  EXPECT_EQ(a.free_extents(), 1u);
  EXPECT_EQ(a.largest_free_bytes(), 12 * kK);
  EXPECT_EQ(a.Allocate(12 * kK), 0u);
}

TEST(ExtentAllocatorTest, ArenaIsRoundedDownToAlignment) {
  ExtentAllocator a(10000);
  EXPECT_EQ(a.arena_bytes(), 9984u);  // 39 * 256
  EXPECT_EQ(a.Allocate(9984), 0u);
}

TEST(ExtentAllocatorTest, RandomChurnNeverOverlapsAndEndsWhole) {
  const uint64_t arena = 1024 * kK;
  ExtentAllocator a(arena);
  std::mt19937_64 rng(7);
  std::vector<std::pair<uint64_t, uint64_t>> live;  // offset, bytes
  std::vector<int> owner(arena / 256, -1);
  for (int step = 0; step < 20000; ++step) {
    if (live.empty() || rng() % 3 != 0) {
      const uint64_t bytes = ExtentAllocator::ExtentBytes(1 + rng() % (40 * kK));
      std::optional<uint64_t> off = a.Allocate(bytes);
      if (!off) continue;
      ASSERT_EQ(*off % 256, 0u);
      ASSERT_LE(*off + bytes, arena);
      for (uint64_t g = *off / 256; g < (*off + bytes) / 256; ++g) {
        ASSERT_EQ(owner[g], -1) << "extent overlaps a live one at " << g * 256;
        owner[g] = step;
      }
      live.emplace_back(*off, bytes);
    } else {
      const size_t i = rng() % live.size();
      for (uint64_t g = live[i].first / 256; g < (live[i].first + live[i].second) / 256; ++g) {
        owner[g] = -1;
      }
      a.Free(live[i].first, live[i].second);
      live[i] = live.back();
      live.pop_back();
    }
  }
  uint64_t held = 0;
  for (auto& [off, bytes] : live) held += bytes;
  EXPECT_EQ(a.allocated_bytes(), held);
  for (auto& [off, bytes] : live) a.Free(off, bytes);
  EXPECT_EQ(a.allocated_bytes(), 0u);
  EXPECT_EQ(a.free_extents(), 1u);
  EXPECT_EQ(a.largest_free_bytes(), arena);
}

}  // namespace
}  // namespace kvtier
