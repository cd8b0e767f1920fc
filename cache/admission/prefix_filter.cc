// Prefix admission: a reuse predictor for KV blocks, learned online.
//
// What it uses of how KV blocks are reused:
//  - A block is only ever hit through its prefix: one whose parent this
//    filter just kept out cannot be hit before the parent is stored again,
//    so it is kept out too (the rest of that request's chain follows it out).
//  - A block seen before (within the sketch's recent sample) is far likelier
//    to be seen again than a new one: a shared document, a conversation's
//    earlier turns. Such blocks are admitted.
//  - A new block's chance of reuse depends on where it sits in its chain,
//    and the filter learns it per class rather than assuming it:
//     * depth (log2 buckets): a chain's early blocks are shared by more
//       requests (a system prompt, a document several questions ask about)
//       than its deep ones (one prompt's own text);
//     * whether the request's new blocks continue a reused chain (they begin
//       below a seen block deeper than the first two), as a conversation's
//       next turn does, or start a fresh one;
//     * whether it is its request's chain tip (often a partial block that no
//       later request repeats).
//    Per class, how often a block first seen in it is seen again:
//    again[c] / first[c], counted from every reference through a TinyLFU
//    sketch (cache/admission/frequency_sketch.h) and halved with it, so the
//    estimate follows the workload. A small table remembers the class each
//    recently first-seen block had, for its second sighting.
//
// A new block is admitted when its class's estimate is at least a bar, and
// the bar adapts to what the filter's own choices cost, as ARC adapts its
// target with ghost hits: a block kept out that is asked for again while it
// would still have been held (it is in the ghost of the last `capacity`
// keys refused) lowers the bar; a block evicted to make room for a new one
// that is asked for again while it would still have been held (the ghost of
// the last `capacity` such victims) raises it. The bar starts at 0: with no
// evidence every block is admitted, as without a filter, so a cache large
// enough to hold reuse keeps doing so, and a small one learns to keep new
// blocks out.
#include <algorithm>
#include <array>
#include <bit>
#include <optional>
#include <vector>

#include "cache/admission.h"
#include "cache/admission/frequency_sketch.h"
#include "common/prefetch.h"

namespace kvtier {
namespace {

constexpr uint32_t kDepthBuckets = 8;             // depth 0, 1, 2-3, 4-7, ..., 64+
constexpr uint32_t kClasses = kDepthBuckets * 4;  // x continues a reused chain x chain tip

// A bounded "recently added" set: two generations of Bloom filters of
// `keys / 2` keys each; a key is remembered for between keys/2 and keys
// additions.
class RecentKeys {
 public:
  explicit RecentKeys(uint64_t keys)
      : generation_(std::max<uint64_t>(1, keys / 2)),
        current_(generation_),
        previous_(generation_) {}
  void Add(uint64_t h) {
    if (++in_current_ > generation_) {
      std::swap(current_, previous_);
      current_.Clear();
      in_current_ = 1;
    }
    current_.Add(h);
  }
  bool Contains(uint64_t h) const { return current_.Contains(h) || previous_.Contains(h); }

 private:
  uint64_t generation_;
  BloomBits current_, previous_;
  uint64_t in_current_ = 0;
};

// The class each recently first-seen block had then, so that its second
// sighting counts for that class: one byte per entry, direct-mapped by hash
// (6 bits of tag, 2 of the class's continues/tip bits; the depth is the
// block's own). A collision overwrites; a miss reads as "neither", which
// only blurs the estimates a little.
class ClassTable {
 public:
  explicit ClassTable(uint64_t keys)
      : cells_(std::bit_ceil(std::max<uint64_t>(keys, 64)), 0), mask_(cells_.size() - 1) {}
  void Put(uint64_t h, uint32_t c) { cells_[Index(h)] = static_cast<uint8_t>(Tag(h) | (c & 3)); }
  void Prefetch(uint64_t h) const { PrefetchLine(&cells_[Index(h)]); }
  // The class of depth bucket `c`'s block: `c` with the stored bits.
  uint32_t Get(uint64_t h, uint32_t depth_class) const {
    const uint8_t cell = cells_[Index(h)];
    return (cell & 0xfc) == Tag(h) ? (depth_class & ~3u) | (cell & 3) : depth_class & ~3u;
  }

 private:
  size_t Index(uint64_t h) const { return (h >> 24) & mask_; }
  static uint8_t Tag(uint64_t h) { return static_cast<uint8_t>(h >> 56) | 4; }  // never 0
  std::vector<uint8_t> cells_;
  uint64_t mask_;
};

class PrefixAdmission final : public AdmissionFilter {
 public:
  explicit PrefixAdmission(const AdmissionOptions& o)
      : seed_(o.seed),
        bar_step_(1.0 / static_cast<double>(std::max<uint64_t>(o.capacity_blocks, 1))),
        sketch_(o.capacity_blocks, /*doorkeeper=*/true),
        first_class_(10 * o.capacity_blocks),
        refused_keys_(o.capacity_blocks),
        displaced_keys_(o.capacity_blocks) {}

  std::string_view Name() const override { return "prefix"; }

  void Record(const BlockRef& ref, bool hit) override {
    const uint64_t h = AdmissionHash(ref.key, seed_);
    const uint64_t resets = sketch_.resets();
    const uint32_t seen = sketch_.Add(h);
    if (sketch_.resets() != resets) {
      for (double& x : first_) x /= 2;
      for (double& x : again_) x /= 2;
    }
    // Where this request's new part of the chain began: a new block under a
    // seen parent starts it here; under a new parent it continues it.
    const bool follows_last = ref.block.parent && *ref.block.parent == last_;
    if (!follows_last) {
      branch_depth_ = 0;
    } else if (last_seen_) {
      branch_depth_ = ref.block.depth;
    }
    const bool continues = branch_depth_ >= 2;
    last_ = ref.key;
    last_seen_ = seen > 0;
    if (seen == 0) {
      last_class_ = Class(ref.block.depth, continues, ref.chain_tip);
      first_[last_class_] += 1;
      first_class_.Put(h, last_class_);
    } else if (seen == 1) {
      // An outcome of its class as first seen.
      again_[first_class_.Get(h, Class(ref.block.depth, false, false))] += 1;
    }
    if (hit) return;
    // Regrets: this miss would have been a hit had the filter chosen
    // otherwise.
    if (refused_keys_.Contains(h)) bar_ = std::max(0.0, bar_ - bar_step_);
    if (displaced_keys_.Contains(h)) bar_ = std::min(1.0, bar_ + bar_step_);
  }

  bool ComparesVictim() const override { return false; }

  // What Record reads for every reference: the sketch and the class table.
  // (The regret ghosts are read on misses only, and are small.)
  void Prefetch(const BlockKey& key) const override {
    const uint64_t h = AdmissionHash(key, seed_);
    sketch_.Prefetch(h);
    first_class_.Prefetch(h);
  }

  bool Admit(const BlockRef& ref, const BlockKey*) override {
    const bool seen = ref.key == last_ ? last_seen_ : false;
    bool admit;
    if (ref.block.parent && refused_ && *ref.block.parent == *refused_) {
      admit = false;  // its prefix was kept out: it cannot be hit
    } else if (seen) {
      return true;
    } else {
      admit = Chance(ref.key == last_ ? last_class_ : Class(ref.block.depth, false, false)) >= bar_;
    }
    if (admit) {
      displacing_ = true;
    } else {
      refused_ = ref.key;
      refused_keys_.Add(AdmissionHash(ref.key, seed_));
    }
    return admit;
  }

  // The victims evicted for a new block the filter admitted.
  void Evicted(const BlockKey& key) override {
    if (displacing_) displaced_keys_.Add(AdmissionHash(key, seed_));
  }
  void Inserted(const BlockRef&) override { displacing_ = false; }

 private:
  static uint32_t Class(uint32_t depth, bool continues, bool tip) {
    const uint32_t bucket = std::min<uint32_t>(std::bit_width(depth), kDepthBuckets - 1);
    return bucket * 4 + (continues ? 2 : 0) + (tip ? 1 : 0);
  }
  // How often a block first seen in bucket b was seen again: (again + 1) /
  // (first + 2), so an unobserved bucket starts at 1/2.
  double Chance(uint32_t c) const { return (again_[c] + 1.0) / (first_[c] + 2.0); }

  const uint64_t seed_;
  // The bar moves by 1 / capacity per regret: as ARC moves its target by one
  // block of c per ghost hit, one regret moves the bar by one part in c.
  const double bar_step_;
  FrequencySketch sketch_;                // "seen before", over the recent sample
  std::array<double, kClasses> first_{};  // first sightings per class
  std::array<double, kClasses> again_{};  // second sightings per class
  double bar_ = 0;                        // a new block needs Chance >= bar_
  ClassTable first_class_;     // blocks' classes at first sight, over the sketch's sample
  RecentKeys refused_keys_;    // new blocks kept out
  RecentKeys displaced_keys_;  // victims evicted for new blocks
  // The last recorded key, and whether it had been seen before (Admit
  // follows Record for the same reference).
  BlockKey last_;
  bool last_seen_ = false;
  uint32_t last_class_ = 0;
  uint32_t branch_depth_ = 0;        // where the current request's new blocks began
  std::optional<BlockKey> refused_;  // the last block kept out
  bool displacing_ = false;          // between admitting a new block and its insertion
};

}  // namespace

std::unique_ptr<AdmissionFilter> NewPrefixAdmission(const AdmissionOptions& options) {
  return std::make_unique<PrefixAdmission>(options);
}

}  // namespace kvtier
