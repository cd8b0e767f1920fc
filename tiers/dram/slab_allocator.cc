#include "tiers/dram/slab_allocator.h"

#include <algorithm>

namespace kvtier {
namespace {
uint64_t RoundUp(uint64_t v, uint64_t unit) { return (v + unit - 1) / unit * unit; }
}  // namespace

SlabAllocator::SlabAllocator(uint64_t arena_bytes, uint64_t page_bytes)
    : page_bytes_(page_bytes),
      pages_(arena_bytes / page_bytes),
      slab_target_bytes_(std::clamp<uint64_t>(pages_ * page_bytes / 64 / page_bytes * page_bytes,
                                              page_bytes,
                                              std::max<uint64_t>(page_bytes, kMaxSlabTargetBytes))),
      free_pages_(pages_),
      page_slab_(pages_, kNoSlab) {}

uint64_t SlabAllocator::ClassBytes(uint64_t bytes) {
  return std::max<uint64_t>(kMinChunkBytes, RoundUp(bytes, kChunkAlignment));
}

std::optional<uint64_t> SlabAllocator::Allocate(uint64_t bytes) {
  const uint64_t cls = ClassBytes(bytes);
  std::vector<uint32_t>& open = open_slabs_[cls];
  if (open.empty()) {
    std::optional<uint32_t> id = NewSlab(cls);
    if (!id) return std::nullopt;
    open.push_back(*id);
  }
  Slab& s = slabs_[open.back()];
  uint32_t chunk;
  if (!s.free_chunks.empty()) {
    chunk = s.free_chunks.back();
    s.free_chunks.pop_back();
  } else {
    chunk = s.next_unused++;
  }
  ++s.live;
  if (s.Available() == 0) open.pop_back();
  allocated_bytes_ += cls;
  return s.first_page * page_bytes_ + static_cast<uint64_t>(chunk) * cls;
}

void SlabAllocator::Free(uint64_t offset) {
  const uint32_t id = page_slab_[offset / page_bytes_];
  Slab& s = slabs_[id];
  const uint32_t chunk =
      static_cast<uint32_t>((offset - s.first_page * page_bytes_) / s.class_bytes);
  const bool was_full = s.Available() == 0;
  s.free_chunks.push_back(chunk);
  --s.live;
  allocated_bytes_ -= s.class_bytes;
  if (s.live == 0) {
    ReleaseSlab(id);
  } else if (was_full) {
    open_slabs_[s.class_bytes].push_back(id);
  }
}

std::optional<uint32_t> SlabAllocator::NewSlab(uint64_t cls) {
  // Enough whole chunks to fill the slab target (at least one), rounded up to
  // pages; the rounding may make room for more chunks, which are used too.
  const uint64_t chunks = std::max<uint64_t>(1, slab_target_bytes_ / cls);
  const uint64_t num_pages = RoundUp(chunks * cls, page_bytes_) / page_bytes_;
  std::optional<uint64_t> first = FindFreeRun(num_pages);
  if (!first) return std::nullopt;
  uint32_t id;
  if (!free_slab_ids_.empty()) {
    id = free_slab_ids_.back();
    free_slab_ids_.pop_back();
  } else {
    id = static_cast<uint32_t>(slabs_.size());
    slabs_.emplace_back();
  }
  Slab& s = slabs_[id];
  s = Slab{};
  s.class_bytes = cls;
  s.first_page = *first;
  s.num_pages = num_pages;
  s.capacity = static_cast<uint32_t>(num_pages * page_bytes_ / cls);
  s.in_use = true;
  std::fill_n(page_slab_.begin() + static_cast<int64_t>(*first), num_pages, id);
  free_pages_ -= num_pages;
  ++slab_count_;
  return id;
}

void SlabAllocator::ReleaseSlab(uint32_t id) {
  Slab& s = slabs_[id];
  std::vector<uint32_t>& open = open_slabs_[s.class_bytes];
  auto it = std::find(open.begin(), open.end(), id);
  if (it != open.end()) {
    *it = open.back();
    open.pop_back();
  }
  std::fill_n(page_slab_.begin() + static_cast<int64_t>(s.first_page), s.num_pages, kNoSlab);
  free_pages_ += s.num_pages;
  --slab_count_;
  s = Slab{};
  free_slab_ids_.push_back(id);
}

std::optional<uint64_t> SlabAllocator::FindFreeRun(uint64_t num_pages) {
  if (num_pages > free_pages_ || num_pages > pages_) return std::nullopt;
  // Next-fit: scan from the cursor, wrapping once.
  uint64_t run = 0;
  for (uint64_t scanned = 0, p = cursor_; scanned < pages_ + num_pages; ++scanned, ++p) {
    if (p == pages_) {
      p = 0;
      run = 0;  // a run may not wrap around the end of the arena
    }
    if (page_slab_[p] != kNoSlab) {
      run = 0;
      continue;
    }
    if (++run == num_pages) {
      uint64_t first = p + 1 - num_pages;
      cursor_ = (p + 1) % pages_;
      return first;
    }
  }
  return std::nullopt;
}

}  // namespace kvtier
