// LeafList: an intrusive doubly linked list over slot numbers that can
// insert in the middle (SlotList cannot), for the prefix-aware policies,
// which place a block that has just become a leaf by its last use.
// Not thread-safe (a policy is used under its owner's lock).
#pragma once

#include <cstdint>
#include <vector>

#include "cache/policies/key_slots.h"

namespace kvtier {

class LeafList {
 public:
  static constexpr int32_t kNone = KeySlots::kNone;

  // Makes room for slots below `n`.
  void Reserve(size_t n) {
    if (prev_.size() < n) {
      prev_.resize(n, kNone);
      next_.resize(n, kNone);
    }
  }
  void PushFront(int32_t s) { InsertBefore(head_, s); }
  // Inserts s on the newer (head) side of `at`; at == kNone: at the tail.
  void InsertBefore(int32_t at, int32_t s) {
    const int32_t before = at == kNone ? tail_ : prev_[at];
    prev_[s] = before;
    next_[s] = at;
    (before == kNone ? head_ : next_[before]) = s;
    (at == kNone ? tail_ : prev_[at]) = s;
  }
  // `s` must be in the list.
  void Unlink(int32_t s) {
    (prev_[s] == kNone ? head_ : next_[prev_[s]]) = next_[s];
    (next_[s] == kNone ? tail_ : prev_[next_[s]]) = prev_[s];
    prev_[s] = next_[s] = kNone;
  }
  void MoveToFront(int32_t s) {
    if (head_ == s) return;
    Unlink(s);
    PushFront(s);
  }
  int32_t head() const { return head_; }
  int32_t tail() const { return tail_; }
  int32_t prev(int32_t s) const { return prev_[s]; }  // towards the head (newer)
  int32_t next(int32_t s) const { return next_[s]; }  // towards the tail (older)
  bool empty() const { return head_ == kNone; }

 private:
  std::vector<int32_t> prev_, next_;
  int32_t head_ = kNone, tail_ = kNone;
};

}  // namespace kvtier
