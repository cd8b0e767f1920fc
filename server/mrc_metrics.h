// The miss-ratio curve's Prometheus series (docs/operations.md): kvtierd's
// estimate of the LRU hit ratio its block uses would get from a cache of
// other sizes (cache/mrc.h), at a fixed set of sizes, so that a series keeps
// its labels from scrape to scrape:
//  - kvtier_mrc_hit_ratio{size_bytes}: at powers of two spanning the stack,
//    from an eighth of its smallest tier to four times its whole capacity
//    (every other power where that is more than kMaxGridPoints);
//  - kvtier_mrc_tier_hit_ratio{tier, added_bytes}: at the capacity of the
//    tiers up to and including `tier`, as it is (added_bytes 0), with 1 GiB
//    more, and with that tier doubled;
//  - the sample behind them: uses, sampled uses, rate and tracked blocks.
#pragma once

#include <cstdint>
#include <vector>

#include "cache/mrc.h"
#include "server/metrics.h"
#include "tiers/tier.h"

namespace kvtier {

// Most sizes on the kvtier_mrc_hit_ratio grid.
inline constexpr size_t kMaxGridPoints = 24;

// The grid of kvtier_mrc_hit_ratio for tiers of these capacities, increasing;
// empty when no tier has a capacity.
std::vector<uint64_t> MrcGridSizes(const std::vector<uint64_t>& tier_capacity_bytes);

void AppendMrcMetrics(const MrcSnapshot& mrc, const std::vector<TierInfo>& tiers, MetricsText* m);

}  // namespace kvtier
