#include "tiers/hbm/extent_allocator.h"

#include <algorithm>
#include <cassert>
#include <iterator>

namespace kvtier {
namespace {
uint64_t RoundUp(uint64_t v, uint64_t unit) { return (v + unit - 1) / unit * unit; }
}  // namespace

ExtentAllocator::ExtentAllocator(uint64_t arena_bytes)
    : arena_bytes_(arena_bytes / kAlignment * kAlignment) {
  if (arena_bytes_ > 0) Insert(0, arena_bytes_);
}

uint64_t ExtentAllocator::ExtentBytes(uint64_t bytes) {
  return std::max(kMinExtentBytes, RoundUp(bytes, kAlignment));
}

std::optional<uint64_t> ExtentAllocator::Allocate(uint64_t bytes) {
  bytes = RoundUp(bytes, kAlignment);
  if (bytes == 0) return std::nullopt;
  auto fit = by_size_.lower_bound({bytes, 0});
  if (fit == by_size_.end()) return std::nullopt;
  const auto [free_bytes, offset] = *fit;
  Remove(by_offset_.find(offset));
  if (free_bytes > bytes) Insert(offset + bytes, free_bytes - bytes);
  allocated_bytes_ += bytes;
  return offset;
}

void ExtentAllocator::Free(uint64_t offset, uint64_t bytes) {
  assert(bytes > 0 && offset % kAlignment == 0 && bytes % kAlignment == 0);
  assert(offset + bytes <= arena_bytes_);
  allocated_bytes_ -= bytes;
  auto next = by_offset_.lower_bound(offset);
  assert(next == by_offset_.end() || offset + bytes <= next->first);
  if (next != by_offset_.end() && next->first == offset + bytes) {
    bytes += next->second;
    auto after = std::next(next);
    Remove(next);
    next = after;
  }
  if (next != by_offset_.begin()) {
    auto prev = std::prev(next);
    assert(prev->first + prev->second <= offset);
    if (prev->first + prev->second == offset) {
      offset = prev->first;
      bytes += prev->second;
      Remove(prev);
    }
  }
  Insert(offset, bytes);
}

uint64_t ExtentAllocator::largest_free_bytes() const {
  return by_size_.empty() ? 0 : by_size_.rbegin()->first;
}

void ExtentAllocator::Insert(uint64_t offset, uint64_t bytes) {
  by_offset_.emplace(offset, bytes);
  by_size_.emplace(bytes, offset);
}

void ExtentAllocator::Remove(std::map<uint64_t, uint64_t>::iterator it) {
  by_size_.erase({it->second, it->first});
  by_offset_.erase(it);
}

}  // namespace kvtier
