// SIEVE: Zhang et al., "SIEVE is Simpler than LRU: an Efficient Turn-Key
// Eviction Algorithm for Web Caches", NSDI'24.
//
// One FIFO queue: new keys enter at the head; a hit sets the key's visited
// bit and moves nothing. To evict, the hand (starting at the tail when it has
// no position) looks at its key: a visited key has its bit cleared and the
// hand moves one step towards the head (from the head it wraps to the tail);
// the first unvisited key is evicted, and the hand stays at the evicted key's
// neighbour towards the head (none if it was the head: the next eviction
// starts at the tail). Sizes play no part.
//
// Refused blocks (query.eligible) are stepped over with their bit untouched.
// If the hand goes twice round the whole queue without evicting, no block is
// eligible (an eligible one would have had its bit cleared on the first lap
// and been taken on the second), so the call stops and the hand goes back to
// where the last eviction left it: refused blocks change nothing, the hand's
// place included. So each block is looked at no more than about twice per
// victim, and a call never loops.
#include <vector>

#include "cache/eviction_policy.h"
#include "cache/policies/key_slots.h"

namespace kvtier {
namespace {

class SievePolicy final : public EvictionPolicy {
 public:
  std::string_view Name() const override { return "sieve"; }

  void Insert(const BlockKey& key, const PolicyBlock&) override {
    int32_t s = slots_.Find(key);
    if (s != KeySlots::kNone) {
      visited_[s] = 1;
      return;
    }
    s = slots_.Add(key);
    queue_.Reserve(slots_.slot_bound());
    if (visited_.size() < slots_.slot_bound()) visited_.resize(slots_.slot_bound());
    visited_[s] = 0;
    queue_.PushFront(s);
  }

  void Touch(const BlockKey& key) override {
    const int32_t s = slots_.Find(key);
    if (s != KeySlots::kNone) visited_[s] = 1;
  }

  void Erase(const BlockKey& key) override {
    const int32_t s = slots_.Find(key);
    if (s == KeySlots::kNone) return;
    if (hand_ == s) hand_ = queue_.prev(s);  // as after an eviction: the next key towards the head
    queue_.Unlink(s);
    slots_.Remove(s);
  }

  size_t Victims(const VictimQuery& q, std::vector<BlockKey>* out) override {
    size_t taken = 0;
    int32_t at = hand_;
    size_t steps = 0;  // since the last eviction
    EligibilityScan scan(q);
    while (taken < q.n && slots_.size() > 0 && steps < 2 * slots_.size() && !scan.Exhausted()) {
      if (at == SlotList::kNone) at = queue_.tail();  // no position, or past the head: the tail
      ++steps;
      const BlockKey& key = slots_.key(at);
      if (!scan.Accepts(key)) {
        at = queue_.prev(at);
        continue;
      }
      if (visited_[at]) {
        visited_[at] = 0;
        at = queue_.prev(at);
        continue;
      }
      out->push_back(key);
      const int32_t next = queue_.prev(at);
      queue_.Unlink(at);
      slots_.Remove(at);
      at = next;
      hand_ = at;
      steps = 0;
      ++taken;
    }
    return taken;
  }

  void Prefetch(const BlockKey& key) const override { slots_.Prefetch(key); }
  size_t size() const override { return slots_.size(); }

 private:
  KeySlots slots_;
  SlotList queue_;                // head = newest, tail = oldest
  std::vector<uint8_t> visited_;  // by slot
  // The next slot to look at, moving from the tail towards the head;
  // kNone = no position (start at the tail).
  int32_t hand_ = SlotList::kNone;
};

}  // namespace

std::unique_ptr<EvictionPolicy> NewSievePolicy() { return std::make_unique<SievePolicy>(); }

}  // namespace kvtier
