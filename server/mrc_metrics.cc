#include "server/mrc_metrics.h"

#include <algorithm>
#include <bit>
#include <string>

namespace kvtier {

std::vector<uint64_t> MrcGridSizes(const std::vector<uint64_t>& tier_capacity_bytes) {
  uint64_t smallest = UINT64_MAX, total = 0;
  for (uint64_t c : tier_capacity_bytes) {
    if (c == 0) continue;
    smallest = std::min(smallest, c);
    total = total > UINT64_MAX - c ? UINT64_MAX : total + c;
  }
  if (total == 0) return {};
  // From 2^lo <= smallest / 8 to 2^hi >= 4 * total, within 2^0 .. 2^62.
  const int lo = std::max(0, static_cast<int>(std::bit_width(smallest)) - 1 - 3);
  const int hi = std::min(62, static_cast<int>(std::bit_width(total - 1)) + 2);
  const int step =
      (hi - lo + 1 + static_cast<int>(kMaxGridPoints) - 1) / static_cast<int>(kMaxGridPoints);
  std::vector<uint64_t> sizes;
  for (int e = lo; e <= hi; e += step) sizes.push_back(uint64_t{1} << e);
  return sizes;
}

void AppendMrcMetrics(const MrcSnapshot& mrc, const std::vector<TierInfo>& tiers, MetricsText* m) {
  m->Counter("kvtier_mrc_uses_total",
             "Block uses the miss-ratio curve counts: lookup hits, reads that are uses, inserts.",
             static_cast<double>(mrc.uses));
  m->Counter("kvtier_mrc_sampled_uses_total", "Of them, uses of the blocks sampled (SHARDS).",
             static_cast<double>(mrc.sampled_uses));
  m->Gauge("kvtier_mrc_sampling_rate", "The share of blocks the miss-ratio curve samples now.",
           mrc.sampling_rate);
  m->Gauge("kvtier_mrc_sampled_blocks", "Blocks the miss-ratio curve tracks now.",
           static_cast<double>(mrc.sampled_keys));
  std::vector<uint64_t> capacities;
  for (const TierInfo& t : tiers) capacities.push_back(t.capacity_bytes);
  for (uint64_t size : MrcGridSizes(capacities)) {
    m->Gauge("kvtier_mrc_hit_ratio",
             "Estimated hit ratio of an LRU cache of size_bytes over the block uses so far.",
             mrc.HitRatioAt(size), {{"size_bytes", std::to_string(size)}});
  }
  constexpr uint64_t kGiB = uint64_t{1} << 30;
  uint64_t through = 0;  // capacity of tiers 0..t
  for (const TierInfo& t : tiers) {
    through += t.capacity_bytes;
    // Distinct: a tier of exactly 1 GiB doubles by 1 GiB.
    std::vector<uint64_t> added_sizes = {0, kGiB, t.capacity_bytes};
    std::sort(added_sizes.begin(), added_sizes.end());
    added_sizes.erase(std::unique(added_sizes.begin(), added_sizes.end()), added_sizes.end());
    for (uint64_t added : added_sizes) {
      m->Gauge("kvtier_mrc_tier_hit_ratio",
               "Estimated LRU hit ratio of the tiers up to and including this one, with "
               "added_bytes more in it (0: as it is; its own capacity: doubled).",
               mrc.HitRatioAt(through + added),
               {{"tier", t.name}, {"added_bytes", std::to_string(added)}});
    }
  }
}

}  // namespace kvtier
