// Belady's MIN with bypass over a trace's block references, as both replays
// use it (policy_replay.cc counts prefix hits with it, independent_replay.cc
// each reference on its own): on a miss with a full tier it evicts the
// cached block whose next use is farthest, or keeps the incoming one out
// when its own is.
#pragma once

#include <cstdint>
#include <queue>
#include <utility>
#include <vector>

#include "replay/trace.h"

namespace kvtier {

class BeladyCache {
 public:
  BeladyCache(const Trace& t, uint64_t size)
      : t_(t),
        size_(size),
        next_(t.blocks.size(), kNever),
        next_use_(t.distinct_blocks, kNever),
        cached_(t.distinct_blocks, 0) {
    // next_[i]: the reference number of the next use of reference i's block.
    std::vector<uint64_t> last(t.distinct_blocks, kNever);
    for (size_t i = t.blocks.size(); i-- > 0;) {
      next_[i] = last[t.blocks[i]];
      last[t.blocks[i]] = i;
    }
  }

  bool Cached(uint32_t id) const { return cached_[id] != 0; }

  // Reference number `ref` (an index into Trace::blocks) uses its block:
  // true when it was cached; a missing block is admitted, evicting the
  // farthest, unless its own next use is the farthest.
  bool Use(size_t ref) {
    const uint32_t id = t_.blocks[ref];
    if (cached_[id]) {
      next_use_[id] = next_[ref];
      heap_.emplace(next_[ref], id);
      return true;
    }
    if (used_ >= size_) {
      while (!heap_.empty() &&
             (!cached_[heap_.top().second] || next_use_[heap_.top().second] != heap_.top().first)) {
        heap_.pop();
      }
      if (heap_.empty() || heap_.top().first <= next_[ref]) return false;  // bypass
      cached_[heap_.top().second] = 0;
      heap_.pop();
      --used_;
    }
    cached_[id] = 1;
    next_use_[id] = next_[ref];
    heap_.emplace(next_[ref], id);
    ++used_;
    // Rebuilt when stale entries dominate, so the heap stays O(size).
    if (heap_.size() > 4 * (used_ + 1024)) {
      std::priority_queue<std::pair<uint64_t, uint32_t>> fresh;
      for (uint32_t b = 0; b < t_.distinct_blocks; ++b) {
        if (cached_[b]) fresh.emplace(next_use_[b], b);
      }
      heap_.swap(fresh);
    }
    return false;
  }

 private:
  static constexpr uint64_t kNever = UINT64_MAX;
  const Trace& t_;
  const uint64_t size_;
  std::vector<uint64_t> next_;
  // Cached blocks by next use, farthest on top; an entry is stale once its
  // block is used again (its next use moved) or evicted, and is skipped.
  std::vector<uint64_t> next_use_;
  std::vector<uint8_t> cached_;
  std::priority_queue<std::pair<uint64_t, uint32_t>> heap_;
  uint64_t used_ = 0;
};

}  // namespace kvtier
