// LRU: a recency list, most recent at the front.
#include <list>
#include <unordered_map>

#include "cache/eviction_policy.h"

namespace kvtier {
namespace {

class LruPolicy final : public EvictionPolicy {
 public:
  std::string_view Name() const override { return "lru"; }

  void Insert(const BlockKey& key, const PolicyBlock&) override {
    auto it = pos_.find(key);
    if (it != pos_.end()) {
      order_.splice(order_.begin(), order_, it->second);
      return;
    }
    order_.push_front(key);
    pos_.emplace(key, order_.begin());
  }

  void Touch(const BlockKey& key) override {
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
  std::list<BlockKey> order_;  // front = most recently used
  std::unordered_map<BlockKey, std::list<BlockKey>::iterator, BlockKeyHash> pos_;
};

}  // namespace

std::unique_ptr<EvictionPolicy> NewLruPolicy() { return std::make_unique<LruPolicy>(); }

}  // namespace kvtier
