// KeySlots: a flat index from BlockKey to a dense slot number, for eviction
// policies that keep their per-block state in arrays indexed by slot (one
// cache line or two per operation instead of a node allocation and pointer
// chase per map entry). Open addressing with linear probing and
// backward-shift deletion (no tombstones); slots freed by Remove are reused.
// SlotList: an intrusive doubly linked list over slot numbers.
// Not thread-safe (a policy is used under its owner's lock).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/block_key.h"

namespace kvtier {

class KeySlots {
 public:
  static constexpr int32_t kNone = -1;

  // The slot of `key`, or kNone.
  int32_t Find(const BlockKey& key) const {
    if (size_ == 0) return kNone;
    for (size_t i = Hash(key) & mask_;; i = (i + 1) & mask_) {
      const int32_t s = table_[i];
      if (s == kNone) return kNone;
      if (keys_[s] == key) return s;
    }
  }
  // Adds an absent key; returns its slot.
  int32_t Add(const BlockKey& key);
  // Removes the key in `slot`; the slot may be handed out again.
  void Remove(int32_t slot);

  const BlockKey& key(int32_t slot) const { return keys_[slot]; }
  size_t size() const { return size_; }
  // One past the largest slot handed out so far: the length side arrays need.
  size_t slot_bound() const { return keys_.size(); }

 private:
  static uint64_t Hash(const BlockKey& k) {
    uint64_t h = (k.lo ^ (k.hi * 0x9e3779b97f4a7c15ull)) * 0xbf58476d1ce4e5b9ull;
    h ^= h >> 31;
    h *= 0x94d049bb133111ebull;
    return h ^ (h >> 29);
  }
  void Grow();

  std::vector<BlockKey> keys_;  // by slot
  std::vector<int32_t> free_;   // slots to reuse
  std::vector<int32_t> table_;  // open-addressing table of slots; kNone = empty
  size_t mask_ = 0;
  size_t size_ = 0;
};

class SlotList {
 public:
  static constexpr int32_t kNone = KeySlots::kNone;

  // Makes room for slots below `bound`.
  void Reserve(size_t bound) {
    if (prev_.size() < bound) {
      prev_.resize(bound, kNone);
      next_.resize(bound, kNone);
    }
  }
  void PushFront(int32_t s) {
    prev_[s] = kNone;
    next_[s] = head_;
    if (head_ != kNone) prev_[head_] = s;
    head_ = s;
    if (tail_ == kNone) tail_ = s;
  }
  void Unlink(int32_t s) {
    if (prev_[s] != kNone)
      next_[prev_[s]] = next_[s];
    else
      head_ = next_[s];
    if (next_[s] != kNone)
      prev_[next_[s]] = prev_[s];
    else
      tail_ = prev_[s];
    prev_[s] = next_[s] = kNone;
  }
  void MoveToFront(int32_t s) {
    if (head_ == s) return;
    Unlink(s);
    PushFront(s);
  }
  int32_t head() const { return head_; }
  int32_t tail() const { return tail_; }
  int32_t prev(int32_t s) const { return prev_[s]; }
  int32_t next(int32_t s) const { return next_[s]; }

 private:
  std::vector<int32_t> prev_, next_;
  int32_t head_ = kNone, tail_ = kNone;
};

}  // namespace kvtier
