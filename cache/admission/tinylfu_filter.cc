// TinyLFU admission (Einziger et al., ACM ToS 2017, section 3): every
// reference feeds the frequency sketch; a missed block replaces the victim
// only if its estimated frequency is strictly higher, so a block seen once
// never displaces one seen as often or more. Ties keep the victim: it is
// already paid for, and under a scan every newcomer ties.
//
// Caffeine also admits, at random, 1 in 128 candidates whose frequency is
// above 5, against an attacker who keeps a victim's counters high by hash
// collisions. Here AdmissionOptions::seed is that defence (a daemon seeds
// its hash at random), and replays stay deterministic.
#include "cache/admission.h"
#include "cache/admission/frequency_sketch.h"

namespace kvtier {
namespace {

class TinyLfuAdmission final : public AdmissionFilter {
 public:
  explicit TinyLfuAdmission(const AdmissionOptions& o)
      : seed_(o.seed), sketch_(o.capacity_blocks, /*doorkeeper=*/true) {}

  std::string_view Name() const override { return "tinylfu"; }

  void Record(const BlockRef& ref, bool) override { sketch_.Add(AdmissionHash(ref.key, seed_)); }

  void Prefetch(const BlockKey& key) const override { sketch_.Prefetch(AdmissionHash(key, seed_)); }

  bool Admit(const BlockRef& ref, const BlockKey* victim) override {
    if (victim == nullptr) return true;
    return sketch_.Frequency(AdmissionHash(ref.key, seed_)) >
           sketch_.Frequency(AdmissionHash(*victim, seed_));
  }

 private:
  const uint64_t seed_;
  FrequencySketch sketch_;
};

}  // namespace

std::unique_ptr<AdmissionFilter> NewTinyLfuAdmission(const AdmissionOptions& options) {
  return std::make_unique<TinyLfuAdmission>(options);
}

}  // namespace kvtier
