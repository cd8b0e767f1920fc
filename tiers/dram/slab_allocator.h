// SlabAllocator: carves one contiguous arena into chunks by size class.
//
// The arena is divided into pages (page_bytes, 64 KiB by default). A slab is a
// run of contiguous pages holding chunks of one class; a class is a request
// size rounded up to kChunkAlignment, and at least kMinChunkBytes, so blocks
// of one model (all the same size) waste nothing inside a chunk, and the
// number of blocks (with every per-block structure above the tier) is bounded
// by arena / 4 KiB whatever sizes clients send. A slab holds as many whole
// chunks as fit in the slab target (1/64 of the arena, at least one page, at
// most 2 MiB; at least one chunk), rounded up to whole pages, so the waste at
// the end of a slab is under one page and a small arena still has room for
// several size classes. A slab whose last chunk is freed goes back to the page
// pool, so space moves between classes as the mix of block sizes changes.
//
// Not thread-safe: the owner serialises calls. Allocate and Free are O(1)
// amortised; creating a slab scans the page map (next-fit), which happens once
// per ~2 MiB allocated.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <unordered_map>
#include <vector>

namespace kvtier {

class SlabAllocator {
 public:
  static constexpr size_t kChunkAlignment = 64;           // bytes; a cache line
  static constexpr size_t kMinChunkBytes = 4096;          // bytes; the smallest chunk
  static constexpr size_t kMaxSlabTargetBytes = 2 << 20;  // 2 MiB

  // Manages offsets [0, arena_bytes); arena_bytes is rounded down to pages.
  SlabAllocator(uint64_t arena_bytes, uint64_t page_bytes);

  // Returns the offset of a chunk of at least `bytes` bytes, or nullopt when no
  // slab of its class has room and no run of free pages is large enough.
  // Requires 0 < bytes.
  std::optional<uint64_t> Allocate(uint64_t bytes);
  // Requires an offset returned by Allocate and not freed since.
  void Free(uint64_t offset);

  // The chunk size serving a request of `bytes`.
  static uint64_t ClassBytes(uint64_t bytes);

  uint64_t arena_bytes() const { return pages_ * page_bytes_; }
  uint64_t allocated_bytes() const { return allocated_bytes_; }  // sum of live chunks
  uint64_t free_pages() const { return free_pages_; }
  uint64_t slab_count() const { return slab_count_; }
  uint64_t slab_target_bytes() const { return slab_target_bytes_; }

 private:
  static constexpr uint32_t kNoSlab = UINT32_MAX;

  struct Slab {
    uint64_t class_bytes = 0;
    uint64_t first_page = 0;
    uint64_t num_pages = 0;
    uint32_t capacity = 0;              // chunks in the slab
    uint32_t next_unused = 0;           // chunks [next_unused, capacity) never handed out
    std::vector<uint32_t> free_chunks;  // freed chunk indexes
    uint32_t live = 0;
    bool in_use = false;
    uint32_t Available() const {
      return static_cast<uint32_t>(free_chunks.size()) + (capacity - next_unused);
    }
  };

  std::optional<uint32_t> NewSlab(uint64_t class_bytes);
  void ReleaseSlab(uint32_t slab_id);
  std::optional<uint64_t> FindFreeRun(uint64_t num_pages);

  uint64_t page_bytes_;
  uint64_t pages_;
  uint64_t slab_target_bytes_;
  uint64_t free_pages_;
  uint64_t allocated_bytes_ = 0;
  uint64_t slab_count_ = 0;
  uint64_t cursor_ = 0;              // next-fit start for page runs
  std::vector<uint32_t> page_slab_;  // page -> owning slab, or kNoSlab
  std::vector<Slab> slabs_;
  std::vector<uint32_t> free_slab_ids_;
  // class bytes -> slabs of that class with at least one available chunk
  std::unordered_map<uint64_t, std::vector<uint32_t>> open_slabs_;
};

}  // namespace kvtier
