// LFU in O(1) (Shah, Mitra & Matani, "An O(1) algorithm for implementing the
// LFU cache eviction scheme", 2010): a list of frequency buckets in rising
// frequency, each holding the blocks used exactly that often.
//
// A new block starts at frequency 1; a hit or a re-insert moves it to the
// bucket of the next frequency (made on demand right after its own), at the
// front. A block enters a bucket exactly when it is used, so within a bucket
// the back is the least recently used: victims are taken from the lowest
// bucket, back first, which breaks frequency ties by least recent use.
// Buckets are dropped as soon as they empty, so each step is O(1).
#include <cstdint>
#include <list>
#include <unordered_map>

#include "cache/eviction_policy.h"

namespace kvtier {
namespace {

class LfuPolicy final : public EvictionPolicy {
 public:
  std::string_view Name() const override { return "lfu"; }

  void Insert(const BlockKey& key, const PolicyBlock&) override {
    auto it = pos_.find(key);
    if (it != pos_.end()) {
      Bump(it->second);
      return;
    }
    if (buckets_.empty() || buckets_.front().freq != 1) buckets_.push_front(Bucket{1, {}});
    auto bucket = buckets_.begin();
    bucket->keys.push_front(key);
    pos_.emplace(key, Pos{bucket, bucket->keys.begin()});
  }

  void Touch(const BlockKey& key) override {
    auto it = pos_.find(key);
    if (it != pos_.end()) Bump(it->second);
  }

  void Erase(const BlockKey& key) override {
    auto it = pos_.find(key);
    if (it == pos_.end()) return;
    auto bucket = it->second.bucket;
    bucket->keys.erase(it->second.item);
    if (bucket->keys.empty()) buckets_.erase(bucket);
    pos_.erase(it);
  }

  size_t Victims(const VictimQuery& q, std::vector<BlockKey>* out) override {
    size_t taken = 0;
    for (auto bucket = buckets_.begin(); taken < q.n && bucket != buckets_.end();) {
      for (auto it = bucket->keys.end(); taken < q.n && it != bucket->keys.begin();) {
        --it;
        if (q.eligible && !q.eligible(*it)) continue;
        out->push_back(*it);
        pos_.erase(*it);
        it = bucket->keys.erase(it);
        ++taken;
      }
      bucket = bucket->keys.empty() ? buckets_.erase(bucket) : std::next(bucket);
    }
    return taken;
  }

  size_t size() const override { return pos_.size(); }

 private:
  struct Bucket {
    uint64_t freq;
    std::list<BlockKey> keys;  // front = most recently used
  };
  using BucketIt = std::list<Bucket>::iterator;
  struct Pos {
    BucketIt bucket;
    std::list<BlockKey>::iterator item;
  };

  // Moves a block to the bucket one frequency up, creating it if needed.
  void Bump(Pos& pos) {
    BucketIt from = pos.bucket;
    BucketIt to = std::next(from);
    if (to == buckets_.end() || to->freq != from->freq + 1) {
      to = buckets_.insert(to, Bucket{from->freq + 1, {}});
    }
    to->keys.splice(to->keys.begin(), from->keys, pos.item);
    pos.bucket = to;
    if (from->keys.empty()) buckets_.erase(from);
  }

  std::list<Bucket> buckets_;  // rising frequency; none empty
  std::unordered_map<BlockKey, Pos, BlockKeyHash> pos_;
};

}  // namespace

std::unique_ptr<EvictionPolicy> NewLfuPolicy() { return std::make_unique<LfuPolicy>(); }

}  // namespace kvtier
