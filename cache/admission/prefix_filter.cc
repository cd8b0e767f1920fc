// Prefix admission: a reuse predictor for KV blocks, learned online.
//
// What it uses of how KV blocks are reused:
//  - A block is only ever hit through its prefix: one whose parent this
//    filter just kept out cannot be hit before the parent is stored again,
//    so it is kept out too (the rest of that request's chain follows it out).
//  - Reuse is uneven across a chain and across blocks' histories: a block
//    already seen is far likelier to be seen again than a new one (a shared
//    document, a conversation's earlier turns), and the tip of a request's
//    chain is often a partial block that no later request repeats, while
//    blocks deep in a long one-shot prompt are rarely asked for again.
//
// So every block falls in a class: how often it was seen before (0, 1, 2 or
// more, from a TinyLFU sketch, so "before" means within the sketch's recent
// sample), whether it was its request's chain tip, and its depth (log2
// buckets). For each class the filter counts the blocks stored in it and the
// hits they got while stored: the chance that a stored block of the class
// is hit before it leaves. A hit moves the block to the class one "seen"
// higher, so each count answers "will a block like this be hit (again)".
// Counts are halved every sketch sample, like the sketch, so the estimate
// follows the workload. A class starts at 1 hit in 2 (Laplace), so unseen
// classes are tried before they are judged.
//
// Admit compares the incoming block's class with the victim's current class
// (its class when stored, moved up by the hits it got since) and admits
// when the incoming one's chance is at least the victim's: with no evidence
// it admits, as a cache without a filter does.
#include <algorithm>
#include <array>
#include <bit>
#include <optional>
#include <vector>

#include "cache/admission.h"
#include "cache/admission/frequency_sketch.h"
#include "cache/policies/key_slots.h"

namespace kvtier {
namespace {

constexpr uint32_t kSeenBuckets = 3;   // seen before 0, 1, 2+ times
constexpr uint32_t kDepthBuckets = 8;  // depth 0, 1, 2-3, 4-7, ..., 64+
constexpr uint32_t kClasses = kSeenBuckets * 2 * kDepthBuckets;

struct BlockClass {
  uint32_t seen = 0;  // 0 .. kSeenBuckets - 1
  bool tip = false;
  uint32_t depth = 0;  // bucket
  uint32_t index() const { return (seen * 2 + (tip ? 1 : 0)) * kDepthBuckets + depth; }
  BlockClass SeenOnceMore() const {
    BlockClass c = *this;
    c.seen = std::min(seen + 1, kSeenBuckets - 1);
    return c;
  }
};

class PrefixAdmission final : public AdmissionFilter {
 public:
  explicit PrefixAdmission(const AdmissionOptions& o)
      : seed_(o.seed), sketch_(o.capacity_blocks, /*doorkeeper=*/true) {}

  std::string_view Name() const override { return "prefix"; }

  void Record(const BlockRef& ref, bool hit) override {
    const uint64_t h = AdmissionHash(ref.key, seed_);
    last_ = ref.key;
    last_class_ = ClassOf(ref, sketch_.Frequency(h));
    const uint64_t resets = sketch_.resets();
    sketch_.Increment(h);
    if (sketch_.resets() != resets) Age();
    if (!hit) return;
    const int32_t s = resident_.Find(ref.key);
    if (s == KeySlots::kNone) return;
    // A hit is an outcome of the block's class; from now on it is a block
    // seen once more.
    BlockClass& c = class_[s];
    hits_[c.index()] += 1;
    c = c.SeenOnceMore();
    stored_[c.index()] += 1;
  }

  bool Admit(const BlockRef& ref, const BlockKey* victim) override {
    const BlockClass mine = ref.key == last_ ? last_class_ : ClassOf(ref, 0);
    bool admit = true;
    if (ref.block.parent && refused_ && *ref.block.parent == *refused_) {
      admit = false;  // its prefix was kept out: it cannot be hit
    } else if (victim != nullptr) {
      const int32_t v = resident_.Find(*victim);
      if (v != KeySlots::kNone) admit = Chance(mine) >= Chance(class_[v]);
    }
    if (!admit) refused_ = ref.key;
    return admit;
  }

  void Inserted(const BlockRef& ref) override {
    if (resident_.Find(ref.key) != KeySlots::kNone) return;
    const BlockClass c = ref.key == last_ ? last_class_ : ClassOf(ref, 0);
    const int32_t s = resident_.Add(ref.key);
    if (class_.size() < resident_.slot_bound()) class_.resize(resident_.slot_bound());
    class_[s] = c;
    stored_[c.index()] += 1;
  }

  void Evicted(const BlockKey& key) override {
    const int32_t s = resident_.Find(key);
    if (s != KeySlots::kNone) resident_.Remove(s);
  }

 private:
  static BlockClass ClassOf(const BlockRef& ref, uint32_t seen_before) {
    BlockClass c;
    c.seen = std::min(seen_before, kSeenBuckets - 1);
    c.tip = ref.chain_tip;
    c.depth = std::min<uint32_t>(std::bit_width(ref.block.depth), kDepthBuckets - 1);
    return c;
  }

  // Estimated chance that a stored block of class c is hit before it
  // leaves: (hits + 1) / (stored + 2).
  double Chance(const BlockClass& c) const {
    return (hits_[c.index()] + 1.0) / (stored_[c.index()] + 2.0);
  }

  void Age() {
    for (double& x : hits_) x /= 2;
    for (double& x : stored_) x /= 2;
  }

  const uint64_t seed_;
  FrequencySketch sketch_;                 // "seen before", over the recent sample
  std::array<double, kClasses> stored_{};  // blocks that entered each class while stored
  std::array<double, kClasses> hits_{};    // of them, hit while stored
  KeySlots resident_;                      // the stored blocks; by slot, their class
  std::vector<BlockClass> class_;
  // The last recorded key and its class (Admit and Inserted follow Record).
  BlockKey last_;
  BlockClass last_class_;
  std::optional<BlockKey> refused_;  // the last block kept out
};

}  // namespace

std::unique_ptr<AdmissionFilter> NewPrefixAdmission(const AdmissionOptions& options) {
  return std::make_unique<PrefixAdmission>(options);
}

}  // namespace kvtier
