// Ghost admission: a block is stored only on its second sight within a
// recent window, so one-hit wonders never take a place ("seen before", as
// 2Q's A1out and S3-FIFO's ghost queue decide which keys deserve the main
// queue, here before the block is stored at all).
//
// The window: the last H distinct keys referenced, H = kHistoryPerBlock x
// capacity. Keys live in two generations of Bloom filters; the current one
// takes each newly seen key, and after H/2 keys it becomes the previous one
// and an empty one takes over, so a key is remembered for between H/2 and H
// distinct references. A Bloom filter is 1 byte per key and answers with about
// 3% false positives (a few one-hit wonders get in).
//
// The victim plays no part: a block seen before is admitted over any victim.
#include <algorithm>
#include <utility>

#include "cache/admission.h"
#include "cache/admission/frequency_sketch.h"

namespace kvtier {
namespace {

// H / capacity: the history spans the same references as TinyLFU's sample
// (W = 10 x capacity), so both filters judge "recent" alike. A shorter one
// remembers little that the cache itself would not still hold.
constexpr uint64_t kHistoryPerBlock = 10;

class GhostAdmission final : public AdmissionFilter {
 public:
  explicit GhostAdmission(const AdmissionOptions& o)
      : seed_(o.seed),
        generation_keys_(std::max<uint64_t>(1, kHistoryPerBlock * o.capacity_blocks / 2)),
        current_(generation_keys_),
        previous_(generation_keys_) {}

  std::string_view Name() const override { return "ghost"; }
  bool ComparesVictim() const override { return false; }

  void Record(const BlockRef& ref, bool) override {
    const uint64_t h = AdmissionHash(ref.key, seed_);
    last_ = ref.key;
    last_seen_ = current_.Contains(h) || previous_.Contains(h);
    if (last_seen_) return;
    if (++in_current_ > generation_keys_) {
      std::swap(current_, previous_);
      current_.Clear();
      in_current_ = 1;
    }
    current_.Add(h);
  }

  void Prefetch(const BlockKey& key) const override {
    const uint64_t h = AdmissionHash(key, seed_);
    current_.Prefetch(h);
    previous_.Prefetch(h);
  }

  bool Admit(const BlockRef& ref, const BlockKey*) override {
    if (ref.key == last_) return last_seen_;
    const uint64_t h = AdmissionHash(ref.key, seed_);
    return current_.Contains(h) || previous_.Contains(h);
  }

 private:
  const uint64_t seed_;
  const uint64_t generation_keys_;  // H / 2
  BloomBits current_, previous_;
  uint64_t in_current_ = 0;  // keys added to current_
  // The last recorded key, and whether it had been seen before that
  // reference (Admit asks about the reference Record just saw).
  BlockKey last_;
  bool last_seen_ = false;
};

}  // namespace

std::unique_ptr<AdmissionFilter> NewGhostAdmission(const AdmissionOptions& options) {
  return std::make_unique<GhostAdmission>(options);
}

}  // namespace kvtier
