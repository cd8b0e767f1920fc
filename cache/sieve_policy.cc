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
#include <list>
#include <unordered_map>

#include "cache/eviction_policy.h"

namespace kvtier {
namespace {

class SievePolicy final : public EvictionPolicy {
 public:
  SievePolicy() = default;
  SievePolicy(const SievePolicy&) = delete;  // hand_ points into queue_
  SievePolicy& operator=(const SievePolicy&) = delete;

  std::string_view Name() const override { return "sieve"; }

  void Insert(const BlockKey& key, const PolicyBlock&) override {
    auto it = index_.find(key);
    if (it != index_.end()) {
      it->second->visited = true;
      return;
    }
    queue_.push_back(Entry{key, false});
    index_.emplace(key, std::prev(queue_.end()));
  }

  void Touch(const BlockKey& key) override {
    auto it = index_.find(key);
    if (it != index_.end()) it->second->visited = true;
  }

  void Erase(const BlockKey& key) override {
    auto it = index_.find(key);
    if (it == index_.end()) return;
    if (hand_ == it->second) ++hand_;  // as after an eviction: the next key towards the head
    queue_.erase(it->second);
    index_.erase(it);
  }

  size_t Victims(const VictimQuery& q, std::vector<BlockKey>* out) override {
    size_t taken = 0;
    auto at = hand_;
    size_t steps = 0;  // since the last eviction
    while (taken < q.n && !queue_.empty() && steps < 2 * queue_.size()) {
      if (at == queue_.end()) at = queue_.begin();  // no position, or past the head: the tail
      ++steps;
      if (q.eligible && !q.eligible(at->key)) {
        ++at;
        continue;
      }
      if (at->visited) {
        at->visited = false;
        ++at;
        continue;
      }
      out->push_back(at->key);
      index_.erase(at->key);
      at = queue_.erase(at);
      hand_ = at;
      steps = 0;
      ++taken;
    }
    return taken;
  }

  size_t size() const override { return queue_.size(); }

 private:
  struct Entry {
    BlockKey key;
    bool visited;
  };

  std::list<Entry> queue_;  // front = tail (oldest), back = head (newest)
  // The next key to look at; end() = no position (start at the tail).
  std::list<Entry>::iterator hand_ = queue_.end();
  std::unordered_map<BlockKey, std::list<Entry>::iterator, BlockKeyHash> index_;
};

}  // namespace

std::unique_ptr<EvictionPolicy> NewSievePolicy() { return std::make_unique<SievePolicy>(); }

}  // namespace kvtier
