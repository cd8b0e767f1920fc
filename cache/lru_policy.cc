// LRU and FIFO: one queue, newest at the front, victims from the back. LRU
// moves a block to the front on every use; FIFO never moves it (a hit
// changes nothing, and inserting a present key only takes its attributes,
// which FIFO ignores), so blocks leave in the order they entered.
#include <list>
#include <unordered_map>

#include "cache/eviction_policy.h"

namespace kvtier {
namespace {

class QueuePolicy final : public EvictionPolicy {
 public:
  explicit QueuePolicy(bool recency) : recency_(recency) {}

  std::string_view Name() const override { return recency_ ? "lru" : "fifo"; }

  void Insert(const BlockKey& key, const PolicyBlock&) override {
    auto it = pos_.find(key);
    if (it != pos_.end()) {
      Touch(key);
      return;
    }
    order_.push_front(key);
    pos_.emplace(key, order_.begin());
  }

  void Touch(const BlockKey& key) override {
    if (!recency_) return;
    auto it = pos_.find(key);
    if (it != pos_.end()) order_.splice(order_.begin(), order_, it->second);
  }

  void Erase(const BlockKey& key) override {
    auto it = pos_.find(key);
    if (it == pos_.end()) return;
    order_.erase(it->second);
    pos_.erase(it);
  }

  size_t Victims(const VictimQuery& q, std::vector<BlockKey>* out) override {
    size_t taken = 0;
    for (auto it = order_.end(); taken < q.n && it != order_.begin();) {
      --it;
      if (q.eligible && !q.eligible(*it)) continue;
      out->push_back(*it);
      pos_.erase(*it);
      it = order_.erase(it);
      ++taken;
    }
    return taken;
  }

  size_t size() const override { return pos_.size(); }

 private:
  const bool recency_;         // LRU: a use moves the block to the front
  std::list<BlockKey> order_;  // front = most recently used (LRU) or newest (FIFO)
  std::unordered_map<BlockKey, std::list<BlockKey>::iterator, BlockKeyHash> pos_;
};

}  // namespace

std::unique_ptr<EvictionPolicy> NewLruPolicy() { return std::make_unique<QueuePolicy>(true); }
std::unique_ptr<EvictionPolicy> NewFifoPolicy() { return std::make_unique<QueuePolicy>(false); }

}  // namespace kvtier
