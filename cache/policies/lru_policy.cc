// LRU and FIFO: one queue, newest at the front, victims from the back. LRU
// moves a block to the front on every use; FIFO never moves it (a hit
// changes nothing, and inserting a present key only takes its attributes,
// which FIFO ignores), so blocks leave in the order they entered.
#include "cache/eviction_policy.h"
#include "cache/policies/key_slots.h"

namespace kvtier {
namespace {

class QueuePolicy final : public EvictionPolicy {
 public:
  explicit QueuePolicy(bool recency) : recency_(recency) {}

  std::string_view Name() const override { return recency_ ? "lru" : "fifo"; }

  void Insert(const BlockKey& key, const PolicyBlock&) override {
    if (slots_.Find(key) != KeySlots::kNone) {
      Touch(key);
      return;
    }
    const int32_t s = slots_.Add(key);
    order_.Reserve(slots_.slot_bound());
    order_.PushFront(s);
  }

  void Touch(const BlockKey& key) override {
    if (!recency_) return;
    const int32_t s = slots_.Find(key);
    if (s != KeySlots::kNone) order_.MoveToFront(s);
  }

  void Erase(const BlockKey& key) override {
    const int32_t s = slots_.Find(key);
    if (s == KeySlots::kNone) return;
    order_.Unlink(s);
    slots_.Remove(s);
  }

  size_t Victims(const VictimQuery& q, std::vector<BlockKey>* out) override {
    size_t taken = 0;
    EligibilityScan scan(q);
    for (int32_t s = order_.tail(); taken < q.n && s != SlotList::kNone && !scan.Exhausted();) {
      const int32_t before = order_.prev(s);
      if (scan.Accepts(slots_.key(s))) {
        out->push_back(slots_.key(s));
        order_.Unlink(s);
        slots_.Remove(s);
        ++taken;
      }
      s = before;
    }
    return taken;
  }

  void Prefetch(const BlockKey& key) const override { slots_.Prefetch(key); }

  size_t size() const override { return slots_.size(); }

 private:
  const bool recency_;  // LRU: a use moves the block to the front
  KeySlots slots_;      // the blocks held, by slot
  SlotList order_;      // head = most recently used (LRU) or newest (FIFO)
};

}  // namespace

std::unique_ptr<EvictionPolicy> NewLruPolicy() { return std::make_unique<QueuePolicy>(true); }
std::unique_ptr<EvictionPolicy> NewFifoPolicy() { return std::make_unique<QueuePolicy>(false); }

}  // namespace kvtier
