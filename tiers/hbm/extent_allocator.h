// ExtentAllocator: carves one contiguous arena (the HBM tier's device memory)
// into extents of any size, so that a batch of blocks can be placed back to
// back and moved with one large copy (docs/hbm.md, "Coalescing").
//
// Extents start and end on kAlignment (256 bytes: what cudaMalloc guarantees,
// so every block is aligned for copies and kernels) and are at least
// kMinExtentBytes, which bounds the number of blocks (and every per-block
// structure above the tier) by arena / 4 KiB, as the DRAM tier's slabs do.
// Allocation is best fit (the smallest free extent that holds the request,
// the lowest offset among equals), carved from the front of that extent;
// freeing merges an extent with its free neighbours. The allocator tracks free
// space only: an extent handed out may be freed in pieces (the HBM tier
// allocates a batch as one extent and frees its blocks one by one).
//
// Not thread-safe: the owner serialises calls. Allocate and Free are
// O(log free extents).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <utility>

namespace kvtier {

class ExtentAllocator {
 public:
  static constexpr uint64_t kAlignment = 256;        // bytes
  static constexpr uint64_t kMinExtentBytes = 4096;  // bytes

  // Manages offsets [0, arena_bytes); arena_bytes is rounded down to kAlignment.
  explicit ExtentAllocator(uint64_t arena_bytes);

  // The extent size that holds a payload of `bytes` (> 0): rounded up to
  // kAlignment, and at least kMinExtentBytes.
  static uint64_t ExtentBytes(uint64_t bytes);

  // Returns the offset of a free extent of `bytes` (rounded up to kAlignment),
  // or nullopt when no single free extent is large enough. Requires bytes > 0.
  std::optional<uint64_t> Allocate(uint64_t bytes);
  // Returns [offset, offset + bytes) to the free space. Requires a range (or a
  // piece of one) handed out by Allocate and not freed since, with offset and
  // bytes multiples of kAlignment.
  void Free(uint64_t offset, uint64_t bytes);

  uint64_t arena_bytes() const { return arena_bytes_; }
  uint64_t allocated_bytes() const { return allocated_bytes_; }
  uint64_t free_extents() const { return by_offset_.size(); }
  uint64_t largest_free_bytes() const;

 private:
  void Insert(uint64_t offset, uint64_t bytes);
  void Remove(std::map<uint64_t, uint64_t>::iterator it);

  uint64_t arena_bytes_;
  uint64_t allocated_bytes_ = 0;
  std::map<uint64_t, uint64_t> by_offset_;           // free extents: offset -> bytes
  std::set<std::pair<uint64_t, uint64_t>> by_size_;  // the same, as (bytes, offset)
};

}  // namespace kvtier
