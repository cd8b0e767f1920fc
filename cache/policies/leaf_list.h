// LeafLists: intrusive doubly linked lists over slot numbers that can insert
// in the middle (SlotLists cannot), for the prefix-aware policies, which
// place a block that has just become a leaf by its last use. A slot is in at
// most one list at a time; the lists share one pair of link arrays, so a
// policy with several lists (prefix-reuse's new leaves, reused leaves and
// ghosts) touches one place per slot. LeafList: one such list.
// Not thread-safe (a policy is used under its owner's lock).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "cache/policies/key_slots.h"

namespace kvtier {

class LeafLists {
 public:
  static constexpr int32_t kNone = KeySlots::kNone;

  explicit LeafLists(size_t lists) : ends_(lists) {}

  // Makes room for slots below `n`.
  void Reserve(size_t n) {
    if (links_.size() < n) links_.resize(n);
  }
  void PushFront(size_t list, int32_t s) { InsertBefore(list, ends_[list].head, s); }
  // Inserts s on the head (newer) side of `at`, a slot of `list`; at ==
  // kNone: at the tail.
  void InsertBefore(size_t list, int32_t at, int32_t s) {
    Ends& e = ends_[list];
    const int32_t before = at == kNone ? e.tail : links_[at].prev;
    links_[s] = Link{before, at};
    (before == kNone ? e.head : links_[before].next) = s;
    (at == kNone ? e.tail : links_[at].prev) = s;
    ++e.size;
  }
  // `s` must be in `list`.
  void Unlink(size_t list, int32_t s) {
    Ends& e = ends_[list];
    const Link l = links_[s];
    (l.prev == kNone ? e.head : links_[l.prev].next) = l.next;
    (l.next == kNone ? e.tail : links_[l.next].prev) = l.prev;
    links_[s] = Link{};
    --e.size;
  }
  void MoveToFront(size_t list, int32_t s) {
    if (ends_[list].head == s) return;
    Unlink(list, s);
    PushFront(list, s);
  }
  int32_t head(size_t list) const { return ends_[list].head; }
  int32_t tail(size_t list) const { return ends_[list].tail; }
  size_t size(size_t list) const { return ends_[list].size; }
  int32_t prev(int32_t s) const { return links_[s].prev; }  // towards the head (newer)
  int32_t next(int32_t s) const { return links_[s].next; }  // towards the tail (older)

 private:
  struct Link {
    int32_t prev = kNone, next = kNone;
  };
  struct Ends {
    int32_t head = kNone, tail = kNone;
    size_t size = 0;
  };
  std::vector<Link> links_;  // by slot
  std::vector<Ends> ends_;   // by list
};

class LeafList {
 public:
  static constexpr int32_t kNone = KeySlots::kNone;

  void Reserve(size_t n) { lists_.Reserve(n); }
  void PushFront(int32_t s) { lists_.PushFront(0, s); }
  void InsertBefore(int32_t at, int32_t s) { lists_.InsertBefore(0, at, s); }
  void Unlink(int32_t s) { lists_.Unlink(0, s); }
  void MoveToFront(int32_t s) { lists_.MoveToFront(0, s); }
  int32_t head() const { return lists_.head(0); }
  int32_t tail() const { return lists_.tail(0); }
  int32_t prev(int32_t s) const { return lists_.prev(s); }
  int32_t next(int32_t s) const { return lists_.next(s); }

 private:
  LeafLists lists_{1};
};

}  // namespace kvtier
