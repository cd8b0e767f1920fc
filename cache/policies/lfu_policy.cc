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
#include <iterator>
#include <list>
#include <vector>

#include "cache/eviction_policy.h"
#include "cache/policies/key_slots.h"

namespace kvtier {
namespace {

class LfuPolicy final : public EvictionPolicy {
 public:
  std::string_view Name() const override { return "lfu"; }

  void Insert(const BlockKey& key, const PolicyBlock&) override {
    int32_t s = slots_.Find(key);
    if (s != KeySlots::kNone) {
      Bump(s);
      return;
    }
    s = slots_.Add(key);
    if (prev_.size() < slots_.slot_bound()) {
      prev_.resize(slots_.slot_bound());
      next_.resize(slots_.slot_bound());
      bucket_.resize(slots_.slot_bound());
    }
    if (buckets_.empty() || buckets_.front().freq != 1) buckets_.push_front(Bucket{1});
    PushFront(buckets_.begin(), s);
  }

  void Touch(const BlockKey& key) override {
    const int32_t s = slots_.Find(key);
    if (s != KeySlots::kNone) Bump(s);
  }

  void Erase(const BlockKey& key) override {
    const int32_t s = slots_.Find(key);
    if (s == KeySlots::kNone) return;
    const BucketIt b = bucket_[s];
    Unlink(s);
    if (b->head == kNone) buckets_.erase(b);
    slots_.Remove(s);
  }

  size_t Victims(const VictimQuery& q, std::vector<BlockKey>* out) override {
    size_t taken = 0;
    EligibilityScan scan(q);
    for (auto b = buckets_.begin(); taken < q.n && b != buckets_.end() && !scan.Exhausted();) {
      for (int32_t s = b->tail; taken < q.n && s != kNone && !scan.Exhausted();) {
        const int32_t newer = prev_[s];
        if (scan.Accepts(slots_.key(s))) {
          out->push_back(slots_.key(s));
          Unlink(s);
          slots_.Remove(s);
          ++taken;
        }
        s = newer;
      }
      b = b->head == kNone ? buckets_.erase(b) : std::next(b);
    }
    return taken;
  }

  void Prefetch(const BlockKey& key) const override { slots_.Prefetch(key); }
  size_t size() const override { return slots_.size(); }

 private:
  static constexpr int32_t kNone = KeySlots::kNone;
  struct Bucket {
    uint64_t freq;
    int32_t head = kNone;  // most recently used
    int32_t tail = kNone;
  };
  using BucketIt = std::list<Bucket>::iterator;

  void PushFront(BucketIt b, int32_t s) {
    bucket_[s] = b;
    prev_[s] = kNone;
    next_[s] = b->head;
    if (b->head != kNone) prev_[b->head] = s;
    b->head = s;
    if (b->tail == kNone) b->tail = s;
  }
  void Unlink(int32_t s) {
    const BucketIt b = bucket_[s];
    if (prev_[s] != kNone) {
      next_[prev_[s]] = next_[s];
    } else {
      b->head = next_[s];
    }
    if (next_[s] != kNone) {
      prev_[next_[s]] = prev_[s];
    } else {
      b->tail = prev_[s];
    }
  }
  // Moves a block to the bucket one frequency up, creating it if needed.
  void Bump(int32_t s) {
    const BucketIt from = bucket_[s];
    BucketIt to = std::next(from);
    if (to == buckets_.end() || to->freq != from->freq + 1) {
      to = buckets_.insert(to, Bucket{from->freq + 1});
    }
    Unlink(s);
    PushFront(to, s);
    if (from->head == kNone) buckets_.erase(from);
  }

  KeySlots slots_;
  std::list<Bucket> buckets_;         // rising frequency; none empty
  std::vector<int32_t> prev_, next_;  // by slot, within its bucket (prev = more recent)
  std::vector<BucketIt> bucket_;      // by slot
};

}  // namespace

std::unique_ptr<EvictionPolicy> NewLfuPolicy() { return std::make_unique<LfuPolicy>(); }

}  // namespace kvtier
