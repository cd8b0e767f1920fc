// KeySlots: a flat index from BlockKey to a dense slot number, for eviction
// policies that keep their per-block state in arrays indexed by slot (one
// cache line or two per operation instead of a node allocation and pointer
// chase per map entry). Open addressing with linear probing and
// backward-shift deletion (no tombstones); slots freed by Remove are reused.
// SlotLists / SlotList: intrusive doubly linked lists over slot numbers.
// SlotHeap: an indexed priority queue over slot numbers.
// Not thread-safe (a policy is used under its owner's lock).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/block_key.h"
#include "common/prefetch.h"

namespace kvtier {

class KeySlots {
 public:
  static constexpr int32_t kNone = -1;

  // The slot of `key`, or kNone.
  int32_t Find(const BlockKey& key) const {
    if (size_ == 0) return kNone;
    const uint32_t h = Hash(key);
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      const Cell c = table_[i];
      if (c.slot == kNone) return kNone;
      if (c.hash == h && keys_[c.slot] == key) return c.slot;
    }
  }
  // Starts loading the table cell where Find(key) begins (a hint; no effect).
  void Prefetch(const BlockKey& key) const {
    if (!table_.empty()) PrefetchLine(&table_[Hash(key) & mask_]);
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
  // A table cell: a slot and its key's hash, so that probing and deletion
  // compare and place keys without reading keys_ (a cache miss each).
  struct Cell {
    int32_t slot = kNone;
    uint32_t hash = 0;
  };

  // 32 bits of a 64-bit mix: the home cell (tables stay below 2^32 cells)
  // and the tag compared before the key.
  static uint32_t Hash(const BlockKey& k) {
    uint64_t h = (k.lo ^ (k.hi * 0x9e3779b97f4a7c15ull)) * 0xbf58476d1ce4e5b9ull;
    h ^= h >> 31;
    h *= 0x94d049bb133111ebull;
    return static_cast<uint32_t>(h ^ (h >> 29));
  }
  void Grow();

  std::vector<BlockKey> keys_;  // by slot
  std::vector<int32_t> free_;   // slots to reuse
  std::vector<Cell> table_;     // open addressing, linear probing; slot kNone = empty
  size_t mask_ = 0;
  size_t size_ = 0;
};

// The slot of a new block's parent, or kNone. Engines insert a chain in
// order, so the parent is usually `last`, the slot used just before: its
// key is compared first, which saves a hash probe.
inline int32_t FindParent(const KeySlots& slots, int32_t last, const BlockKey& parent) {
  return last != KeySlots::kNone && slots.key(last) == parent ? last : slots.Find(parent);
}

// Several intrusive doubly linked lists over one set of slot links; a slot
// is in at most one of them at a time (ARC's T1/T2/B1/B2, S3-FIFO's queues).
// Each list keeps its length.
class SlotLists {
 public:
  static constexpr int32_t kNone = KeySlots::kNone;

  explicit SlotLists(size_t lists) : ends_(lists) {}

  // Makes room for slots below `bound`.
  void Reserve(size_t bound) {
    if (prev_.size() < bound) {
      prev_.resize(bound, kNone);
      next_.resize(bound, kNone);
    }
  }
  void PushFront(size_t list, int32_t s) {
    Ends& e = ends_[list];
    prev_[s] = kNone;
    next_[s] = e.head;
    if (e.head != kNone) prev_[e.head] = s;
    e.head = s;
    if (e.tail == kNone) e.tail = s;
    ++e.size;
  }
  // `s` must be in `list`.
  void Unlink(size_t list, int32_t s) {
    Ends& e = ends_[list];
    if (prev_[s] != kNone)
      next_[prev_[s]] = next_[s];
    else
      e.head = next_[s];
    if (next_[s] != kNone)
      prev_[next_[s]] = prev_[s];
    else
      e.tail = prev_[s];
    prev_[s] = next_[s] = kNone;
    --e.size;
  }
  // Moves `s` from list `from` to the front of list `to` (may be the same).
  void MoveToFront(size_t from, size_t to, int32_t s) {
    if (from == to && ends_[to].head == s) return;
    Unlink(from, s);
    PushFront(to, s);
  }
  int32_t head(size_t list) const { return ends_[list].head; }
  int32_t tail(size_t list) const { return ends_[list].tail; }
  size_t size(size_t list) const { return ends_[list].size; }
  // Neighbours within the slot's list: prev towards the head, next towards the tail.
  int32_t prev(int32_t s) const { return prev_[s]; }
  int32_t next(int32_t s) const { return next_[s]; }

 private:
  struct Ends {
    int32_t head = kNone, tail = kNone;
    size_t size = 0;
  };
  std::vector<int32_t> prev_, next_;
  std::vector<Ends> ends_;
};

// One list over slots.
class SlotList {
 public:
  static constexpr int32_t kNone = KeySlots::kNone;

  void Reserve(size_t bound) { lists_.Reserve(bound); }
  void PushFront(int32_t s) { lists_.PushFront(0, s); }
  void Unlink(int32_t s) { lists_.Unlink(0, s); }
  void MoveToFront(int32_t s) { lists_.MoveToFront(0, 0, s); }
  int32_t head() const { return lists_.head(0); }
  int32_t tail() const { return lists_.tail(0); }
  int32_t prev(int32_t s) const { return lists_.prev(s); }
  int32_t next(int32_t s) const { return lists_.next(s); }
  size_t size() const { return lists_.size(0); }

 private:
  SlotLists lists_{1};
};

// A SlotHeap priority: `major` first, then `minor` (give it a unique
// tie-break, such as an insertion number, so that the order is total and
// replays are deterministic). Compared without branches: the heap compares
// often and equal majors are common, so a data-dependent branch would be
// mispredicted about half the time.
struct HeapKey {
  uint64_t major = 0;
  uint64_t minor = 0;

  friend bool operator<(const HeapKey& a, const HeapKey& b) {
    return (a.major < b.major) | ((a.major == b.major) & (a.minor < b.minor));
  }
  friend bool operator==(const HeapKey& a, const HeapKey& b) = default;
};

// Order-preserving maps to unsigned: a < b exactly when Ordered(a) < Ordered(b)
// (doubles other than NaN; -0 sorts just below +0).
inline uint64_t OrderedBits(double d) {
  uint64_t u;
  std::memcpy(&u, &d, sizeof u);
  return (u >> 63) != 0 ? ~u : u | (uint64_t{1} << 63);
}
inline uint64_t OrderedBits(int64_t v) { return static_cast<uint64_t>(v) ^ (uint64_t{1} << 63); }

// An indexed min-heap of slots by HeapKey. A slot's position is kept, so a
// slot's key can be changed or the slot removed in O(log n). Four children
// per node: shallower than a binary heap, and a node's children share a
// cache line or two, which are prefetched a level ahead.
class SlotHeap {
 public:
  static constexpr int32_t kNone = KeySlots::kNone;
  using Priority = HeapKey;

  bool empty() const { return heap_.empty(); }
  size_t size() const { return heap_.size(); }
  bool contains(int32_t s) const {
    return static_cast<size_t>(s) < pos_.size() && pos_[s] != kNone;
  }
  // The slot of smallest priority, and that priority; the heap must not be empty.
  int32_t top() const { return heap_[0].slot; }
  const HeapKey& top_priority() const { return heap_[0].p; }
  const HeapKey& priority(int32_t s) const { return heap_[pos_[s]].p; }

  // Adds an absent slot.
  void Push(int32_t s, const HeapKey& p) {
    if (pos_.size() <= static_cast<size_t>(s)) pos_.resize(static_cast<size_t>(s) + 1, kNone);
    heap_.push_back(Node{p, s});
    Place(heap_.size() - 1);
  }
  // Gives a present slot a new priority.
  void Update(int32_t s, const HeapKey& p) {
    heap_[pos_[s]].p = p;
    Place(pos_[s]);
  }
  // Removes a present slot.
  void Erase(int32_t s) {
    const size_t i = pos_[s];
    pos_[s] = kNone;
    const Node last = heap_.back();
    heap_.pop_back();
    if (i == heap_.size()) return;
    // Bottom-up (Floyd): the hole sinks to a leaf along the smaller children,
    // then the last node rises from there. The last node is usually among the
    // largest, so it rises little, and the way down costs one comparison per
    // child instead of one more per level against the node.
    size_t hole = i;
    for (size_t least; (least = LeastChild(hole)) != kNoChild; hole = least) {
      Set(hole, heap_[least]);
    }
    Set(hole, last);
    Place(hole);
  }
  int32_t Pop() {
    const int32_t s = top();
    Erase(s);
    return s;
  }

 private:
  static constexpr size_t kArity = 4;
  struct Node {
    HeapKey p;
    int32_t slot;
  };

  // Restores the heap order around position i: up if it is now smaller than
  // its parent, else down.
  void Place(size_t i) {
    const Node node = heap_[i];
    while (i > 0) {
      const size_t parent = (i - 1) / kArity;
      if (!(node.p < heap_[parent].p)) break;
      Set(i, heap_[parent]);
      i = parent;
    }
    for (size_t least; (least = LeastChild(i)) != kNoChild && heap_[least].p < node.p; i = least) {
      Set(i, heap_[least]);
    }
    Set(i, node);
  }

  static constexpr size_t kNoChild = SIZE_MAX;
  // The position of i's smallest child, or kNoChild for a leaf. The next
  // level is read next: all four candidates' children are asked for at once,
  // so that their cache misses overlap.
  size_t LeastChild(size_t i) const {
    const size_t first = i * kArity + 1;
    if (first >= heap_.size()) return kNoChild;
    const size_t end = std::min(first + kArity, heap_.size());
    for (size_t c = first; c < end && c * kArity + 1 < heap_.size(); ++c) {
      __builtin_prefetch(&heap_[c * kArity + 1]);
    }
    size_t least = first;
    for (size_t c = first + 1; c < end; ++c) least = heap_[c].p < heap_[least].p ? c : least;
    return least;
  }
  void Set(size_t i, const Node& n) {
    heap_[i] = n;
    pos_[n.slot] = static_cast<int32_t>(i);
  }

  std::vector<Node> heap_;
  std::vector<int32_t> pos_;  // by slot: index in heap_, or kNone
};

}  // namespace kvtier
