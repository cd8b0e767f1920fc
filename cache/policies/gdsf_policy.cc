// GDSF and ttl-cost: the two priority-ordered policies, one implementation.
//
// GDSF (Cherkasova, "Improving WWW Proxies Performance with Greedy-Dual-Size-
// Frequency Caching Policy", HP Labs 1998): each block has the priority
//   H = L + freq * miss_cost / bytes
// and the block of lowest H goes first (equal H: the one inserted earlier).
// L, the inflation value, starts at 0 and becomes the H of each block evicted
// through Victims, so a block not used for long is eventually outranked by
// newly inserted ones. A new block starts at freq 1. A hit (Touch, or Insert of
// a present key, which also takes the new miss_cost, bytes and expiry) adds 1
// to freq and recomputes H with the current L. A block keeps its insertion
// sequence number across hits. Erase does not move L.
//
// When `eligible` makes Victims step over blocks of lower H, the block taken
// may have an H below L (one skipped earlier and taken now); L never
// decreases: it becomes max(L, H). Without `eligible` this is the plain rule,
// since the block taken always has the lowest H and no H is below L.
//
// ttl-cost: blocks whose expiry_ms <= now_ms are taken first, earliest expiry
// first (equal expiry: inserted earlier first); a second heap keeps blocks by
// expiry. kNoExpiry never counts as expired. Then the unexpired
// ones in GDSF order, with the miss cost the cache computes from its drain-
// time cost model (cache/placement.h). Taking an expired block does not move
// L: it left for being stale, not for being the cheapest to lose, and
// inflating by its H would age the live blocks for nothing.
//
// Insert and Erase are O(log n), Touch O(1); Victims is O(log n) per block
// taken or stepped over. The orders are indexed heaps over slot arrays
// (cache/policies/key_slots.h), keyed (h, seq) and (expiry, seq): seq makes each key
// unique, so the order is total and a replay deterministic. A hit only raises
// a block's h, so Touch records the new h and leaves the heap entry where it
// is, lagging below; Victims brings an entry up to date (and sinks it) when it
// reaches the front. The block taken is still the one of lowest h: every
// other entry's true key is at least its lagging one, which is at least the
// front's. So a hit is O(1), and a block hit many times between evictions
// sinks once.
#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "cache/eviction_policy.h"
#include "cache/policies/key_slots.h"

namespace kvtier {
namespace {

class PriorityPolicy final : public EvictionPolicy {
 public:
  PriorityPolicy(std::string_view name, bool expired_first)
      : name_(name), expired_first_(expired_first) {}

  std::string_view Name() const override { return name_; }

  void Insert(const BlockKey& key, const PolicyBlock& block) override {
    int32_t s = slots_.Find(key);
    if (s == KeySlots::kNone) {
      s = slots_.Add(key);
      if (blocks_.size() < slots_.slot_bound()) blocks_.resize(slots_.slot_bound());
      Entry& e = blocks_[s];
      e.seq = next_seq_++;
      e.freq = 1;
      SetAttributes(e, block);
      e.h = Priority(e);
      by_priority_.Push(s, PriorityKey(e));
      if (HasExpiry(e)) by_expiry_.Push(s, ExpiryKey(e));
      return;
    }
    Entry& e = blocks_[s];
    if (HasExpiry(e)) by_expiry_.Erase(s);
    SetAttributes(e, block);
    if (HasExpiry(e)) by_expiry_.Push(s, ExpiryKey(e));
    ++e.freq;
    e.h = Priority(e);  // may be lower (a new cost or size): placed now
    by_priority_.Update(s, PriorityKey(e));
  }

  void Touch(const BlockKey& key) override {
    const int32_t s = slots_.Find(key);
    if (s == KeySlots::kNone) return;
    Entry& e = blocks_[s];
    ++e.freq;
    e.h = Priority(e);  // only higher: by_priority_ learns it lazily
  }

  void Erase(const BlockKey& key) override {
    const int32_t s = slots_.Find(key);
    if (s != KeySlots::kNone) Forget(s);
  }

  size_t Victims(const VictimQuery& q, std::vector<BlockKey>* out) override {
    size_t taken = 0;
    EligibilityScan scan(q);
    if (expired_first_) {
      // Taking an expired block does not move L: it left for being stale.
      TakeInOrder(
          by_expiry_, q.n, scan, out, &taken, [&](int32_t s) { return ExpiryKey(blocks_[s]); },
          [&](int32_t s) { return blocks_[s].expiry_ms > q.now_ms; }, [](int32_t) {});
    }
    // Expired blocks still here were refused by `eligible`, so every block
    // taken below is unexpired.
    TakeInOrder(
        by_priority_, q.n, scan, out, &taken, [&](int32_t s) { return PriorityKey(blocks_[s]); },
        [](int32_t) { return false; },
        [&](int32_t s) { inflation_ = std::max(inflation_, blocks_[s].h); });
    return taken;
  }

  void Prefetch(const BlockKey& key) const override { slots_.Prefetch(key); }
  size_t size() const override { return slots_.size(); }

 private:
  struct Entry {
    double h = 0;       // priority: L + freq * miss_cost / bytes
    uint64_t seq = 0;   // insertion order; breaks ties in h and expiry
    uint64_t freq = 0;  // uses since insertion, counting the insertion
    double miss_cost = 1;
    uint64_t bytes = 1;
    int64_t expiry_ms = kNoExpiry;
  };

  static void SetAttributes(Entry& e, const PolicyBlock& block) {
    e.miss_cost = block.miss_cost;
    e.bytes = std::max<uint64_t>(block.bytes, 1);  // contract says > 0; never divide by 0
    e.expiry_ms = block.expiry_ms;
  }

  // h = L + freq * miss_cost / bytes.
  double Priority(const Entry& e) const {
    return inflation_ + static_cast<double>(e.freq) * e.miss_cost / static_cast<double>(e.bytes);
  }

  static HeapKey PriorityKey(const Entry& e) { return {OrderedBits(e.h), e.seq}; }
  static HeapKey ExpiryKey(const Entry& e) { return {OrderedBits(e.expiry_ms), e.seq}; }

  bool HasExpiry(const Entry& e) const { return expired_first_ && e.expiry_ms != kNoExpiry; }

  void Forget(int32_t s) {
    by_priority_.Erase(s);
    if (by_expiry_.contains(s)) by_expiry_.Erase(s);
    slots_.Remove(s);
  }

  // Takes blocks from the front of `heap` until `stop(slot)`, calling
  // `on_take(slot)` before each goes. `current(slot)` is a block's priority
  // now: a heap entry may lag behind it (below it, never above), and is
  // brought up to date when it reaches the front. Blocks `scan` refuses are
  // set aside and put back with their priorities, so they keep their place.
  template <typename Current, typename Stop, typename OnTake>
  void TakeInOrder(SlotHeap& heap, size_t n, EligibilityScan& scan, std::vector<BlockKey>* out,
                   size_t* taken, Current current, Stop stop, OnTake on_take) {
    std::vector<std::pair<int32_t, HeapKey>> refused;
    while (*taken < n && !heap.empty() && !scan.Exhausted()) {
      const int32_t s = heap.top();
      if (const auto now = current(s); heap.top_priority() != now) {
        heap.Update(s, now);
        continue;
      }
      if (stop(s)) break;
      if (!scan.Accepts(slots_.key(s))) {
        refused.emplace_back(s, heap.top_priority());
        heap.Pop();
        continue;
      }
      on_take(s);
      out->push_back(slots_.key(s));
      Forget(s);
      ++*taken;
    }
    for (const auto& [s, p] : refused) heap.Push(s, p);
  }

  const std::string_view name_;
  const bool expired_first_;  // ttl-cost: expired blocks go before the GDSF order
  double inflation_ = 0;      // L
  uint64_t next_seq_ = 0;
  KeySlots slots_;
  std::vector<Entry> blocks_;  // by slot
  // Lowest (h, seq) first.
  SlotHeap by_priority_;
  // ttl-cost only: the blocks with an expiry, earliest (expiry, seq) first.
  SlotHeap by_expiry_;
};

}  // namespace

std::unique_ptr<EvictionPolicy> NewGdsfPolicy() {
  return std::make_unique<PriorityPolicy>("gdsf", false);
}

std::unique_ptr<EvictionPolicy> NewTtlCostPolicy() {
  return std::make_unique<PriorityPolicy>("ttl-cost", true);
}

}  // namespace kvtier
