// FIFO: blocks leave in the order they entered. A hit changes nothing, and
// inserting a present key only takes its new attributes, which FIFO ignores,
// so the block keeps its place.
#include <list>
#include <unordered_map>

#include "cache/eviction_policy.h"

namespace kvtier {
namespace {

class FifoPolicy final : public EvictionPolicy {
 public:
  std::string_view Name() const override { return "fifo"; }

  void Insert(const BlockKey& key, const PolicyBlock&) override {
    if (pos_.contains(key)) return;
    order_.push_front(key);
    pos_.emplace(key, order_.begin());
  }

  void Touch(const BlockKey&) override {}

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
  std::list<BlockKey> order_;  // front = newest, back = oldest (next victim)
  std::unordered_map<BlockKey, std::list<BlockKey>::iterator, BlockKeyHash> pos_;
};

}  // namespace

std::unique_ptr<EvictionPolicy> NewFifoPolicy() { return std::make_unique<FifoPolicy>(); }

}  // namespace kvtier
