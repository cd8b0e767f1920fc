// AdmissionFilter: whether a missed block is stored at all (DESIGN §5).
//
// Eviction decides which resident block leaves; admission decides whether an
// incoming block is worth a resident block's place. They are separate small
// interfaces, so any eviction policy runs with any filter: the owner asks
// the policy for the victim it would take, asks the filter whether the
// incoming block beats it, and only then evicts. A filter that rejects keeps
// the incoming block out and leaves the victim where it was.
//
// What a filter is told: every reference of a block, hit or miss, in order
// (Record); every block that entered or left the tier (Inserted, Evicted),
// for filters that learn from outcomes; and, on a miss that needs room in a
// full tier, the question (Admit). A miss that finds room is stored without
// asking: an empty place costs nothing.
//
// Not thread-safe: the owner serialises calls, as for EvictionPolicy.
// Deterministic: the same calls give the same answers (hashes use fixed
// seeds unless AdmissionOptions::seed says otherwise).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cache/eviction_policy.h"
#include "common/block_key.h"

namespace kvtier {

// One reference of a block, as a filter sees it.
struct BlockRef {
  const BlockKey& key;
  const PolicyBlock& block;  // bytes, parent and depth in its prefix chain
  // No block of this request follows it: the tip of the chain the request
  // asked for (prefix caches see a one-shot prompt's tail here).
  bool chain_tip = false;
};

struct AdmissionOptions {
  // The tier's size in blocks: sizes the filter's history (sketch sample,
  // ghost window, outcome horizon). > 0.
  uint64_t capacity_blocks = 0;
  // Mixed into every hash. A daemon facing untrusted keys passes a random
  // one (no client can aim keys at one counter); replays keep 0 and are
  // deterministic.
  uint64_t seed = 0;
};

class AdmissionFilter {
 public:
  virtual ~AdmissionFilter() = default;

  virtual std::string_view Name() const = 0;
  // A reference of `ref.key`; `hit` when the block was resident. Called for
  // every reference, before Admit for the same reference.
  virtual void Record(const BlockRef& ref, bool hit) = 0;
  // `ref` missed and the tier is full. `victim`: the block the eviction
  // policy would evict for it, or null when it has none to offer (a filter
  // that needs one then admits). True: evict the victim and store `ref`;
  // false: keep `ref` out.
  virtual bool Admit(const BlockRef& ref, const BlockKey* victim) = 0;
  // False when Admit ignores `victim`: the owner may then pass null and save
  // finding it.
  virtual bool ComparesVictim() const { return true; }
  // `ref` entered the tier (admitted, or there was room).
  virtual void Inserted(const BlockRef& ref) { (void)ref; }
  // `key` left the tier (evicted or removed).
  virtual void Evicted(const BlockKey& key) { (void)key; }
  // A hint: `key` will be Recorded soon (a replay knows its next
  // references). Starts loading the memory Record will read for it, so that
  // the load overlaps the work in between; changes no state and no answer.
  virtual void Prefetch(const BlockKey& key) const { (void)key; }
};

// The filters:
//  none     admits everything (no filter).
//  tinylfu  Einziger et al., TinyLFU (ACM ToS 2017): a count-min sketch of
//           4-bit counters with a doorkeeper Bloom filter, halved every
//           W = 10 x capacity references; admits when the incoming block's
//           estimated frequency is above the victim's.
//  ghost    admits a block only if it was seen before: within the last
//           5..10 x capacity distinct keys referenced (the same horizon as
//           TinyLFU's sample).
//  prefix   a prefix-aware reuse predictor (cache/admission/prefix_filter.cc):
//           admits blocks seen before; a new block only if the chance that
//           a block of its class (depth bucket, continuing a reused chain or
//           not, chain tip or not) is seen again, learned online, reaches a
//           bar that its own regrets move (ARC-style ghosts of refused and of
//           displaced blocks); never a block whose parent it just kept out.
std::unique_ptr<AdmissionFilter> NewNoAdmission();
std::unique_ptr<AdmissionFilter> NewTinyLfuAdmission(const AdmissionOptions& options);
std::unique_ptr<AdmissionFilter> NewGhostAdmission(const AdmissionOptions& options);
std::unique_ptr<AdmissionFilter> NewPrefixAdmission(const AdmissionOptions& options);

// A filter by name (the names above); nullptr for an unknown name or
// capacity_blocks == 0.
std::unique_ptr<AdmissionFilter> NewAdmissionFilter(std::string_view name,
                                                    const AdmissionOptions& options);
// Every name NewAdmissionFilter knows, in the order above.
const std::vector<std::string>& AdmissionFilterNames();
bool IsAdmissionFilterName(std::string_view name);

}  // namespace kvtier
