#include "tiers/dram/slab_allocator.h"

#include <gtest/gtest.h>

#include <map>
#include <random>

namespace kvtier {
namespace {

constexpr uint64_t kPage = 64 << 10;

TEST(SlabAllocatorTest, ClassesRoundToCacheLinesAboveAMinimum) {
  EXPECT_EQ(SlabAllocator::ClassBytes(1), 4096u);
  EXPECT_EQ(SlabAllocator::ClassBytes(4096), 4096u);
  EXPECT_EQ(SlabAllocator::ClassBytes(4097), 4160u);
  EXPECT_EQ(SlabAllocator::ClassBytes(81920), 81920u);
  EXPECT_EQ(SlabAllocator::ClassBytes(81921), 81984u);
}

TEST(SlabAllocatorTest, SlabTargetScalesWithTheArena) {
  EXPECT_EQ(SlabAllocator(4 * kPage, kPage).slab_target_bytes(), kPage);
  EXPECT_EQ(SlabAllocator(128 * kPage, kPage).slab_target_bytes(), 2 * kPage);
  EXPECT_EQ(SlabAllocator(1ull << 30, kPage).slab_target_bytes(), 2u << 20);
}

TEST(SlabAllocatorTest, FillsTheArenaThenRefuses) {
  SlabAllocator a(64 * kPage, kPage);  // 4 MiB in 64 KiB slabs of two 32 KiB chunks
  std::vector<uint64_t> got;
  while (auto off = a.Allocate(32 << 10)) got.push_back(*off);
  EXPECT_EQ(got.size(), 128u);
  EXPECT_EQ(a.free_pages(), 0u);
  EXPECT_FALSE(a.Allocate(100).has_value());  // no page left for a new class
  EXPECT_EQ(a.slab_count(), 64u);
  a.Free(got.back());
  auto again = a.Allocate(32 << 10);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(*again, got.back());
}

TEST(SlabAllocatorTest, EmptySlabsReturnTheirPagesToOtherClasses) {
  SlabAllocator a(32 * kPage, kPage);  // 2 MiB in one-page slabs
  std::vector<uint64_t> small;
  while (auto off = a.Allocate(1000)) small.push_back(*off);
  EXPECT_EQ(small.size(), 32u * 16);  // 4 KiB minimum chunks
  EXPECT_FALSE(a.Allocate(40 << 10).has_value());
  for (uint64_t off : small) a.Free(off);
  EXPECT_EQ(a.free_pages(), 32u);
  EXPECT_EQ(a.slab_count(), 0u);
  EXPECT_TRUE(a.Allocate(40 << 10).has_value());
}

TEST(SlabAllocatorTest, BlocksLargerThanAPageSpanContiguousPages) {
  SlabAllocator a(64 * kPage, kPage);
  auto off = a.Allocate(3 << 20);  // 3 MiB: one chunk over 48 pages
  ASSERT_TRUE(off.has_value());
  EXPECT_EQ(a.free_pages(), 16u);
  EXPECT_FALSE(a.Allocate(3 << 20).has_value());
  a.Free(*off);
  EXPECT_EQ(a.free_pages(), 64u);
}

TEST(SlabAllocatorTest, RandomMixNeverOverlapsAndAccountsExactly) {
  SlabAllocator a(256 * kPage, kPage);
  std::mt19937_64 rng(42);
  std::map<uint64_t, uint64_t> live;  // offset -> class bytes
  uint64_t expect_allocated = 0;
  const uint64_t sizes[] = {100, 4096, 20000, 81920, 300000, 1 << 20, 3 << 20};
  for (int step = 0; step < 20000; ++step) {
    if (live.empty() || rng() % 3 != 0) {
      uint64_t size = sizes[rng() % 7];
      auto off = a.Allocate(size);
      if (!off) continue;
      const uint64_t cls = SlabAllocator::ClassBytes(size);
      ASSERT_LE(*off + cls, a.arena_bytes());
      auto next = live.lower_bound(*off);
      if (next != live.end()) {
        ASSERT_LE(*off + cls, next->first) << "overlaps the next chunk";
      }
      if (next != live.begin()) {
        auto prev = std::prev(next);
        ASSERT_LE(prev->first + prev->second, *off) << "overlaps the previous chunk";
      }
      live[*off] = cls;
      expect_allocated += cls;
    } else {
      auto it = live.begin();
      std::advance(it, static_cast<long>(rng() % live.size()));
      a.Free(it->first);
      expect_allocated -= it->second;
      live.erase(it);
    }
    ASSERT_EQ(a.allocated_bytes(), expect_allocated);
  }
  for (auto& [off, cls] : live) a.Free(off);
  EXPECT_EQ(a.free_pages(), 256u);
  EXPECT_EQ(a.allocated_bytes(), 0u);
}

}  // namespace
}  // namespace kvtier
