// Multi-tier trace replay (DESIGN §4, §5, §11): a serving trace through the
// daemon's own CacheManager over a stack of tiers described by a scenario
// (capacities, bandwidths, prices, a model's KV geometry), to see where the
// drain-time placement puts the blocks and what that saves.
//
// What runs is the real thing: CacheManager (index, placement, promotion,
// demotion, drop-for-recompute, TTLs) with the scenario's eviction policy per
// tier. What is simulated is the storage under it: a replay tier keeps each
// block's size and expiry, not its bytes, and never touches a device, so a
// trace of terabytes of KV replays in seconds. Sizes are scaled down by the
// model's KV bytes per token (a block of n tokens is n bytes to the replay
// tiers, and a tier's capacity and bandwidth are divided likewise): the
// cost model's decisions depend only on ratios (s/B_t, C_t/B_t) and on the
// $/s figures, which are not scaled, so they are the decisions of the
// full-size system. Time is the trace's (a manual clock), so reuse
// estimates, TTLs and the tier costs over the trace's duration are too.
//
// Per request: Lookup (its leading cached run is the hit, counted per tier);
// queued promotions run; then every block after the run is inserted (a
// cached one is refreshed, as a writer's insert would). The estimates:
//  - prefill takes 2·active_params·tokens / prefill_flops_per_s (linear in
//    tokens: attention's quadratic part is left out, so long prompts' savings
//    are understated), and a hit block instead costs its bytes over its
//    tier's read bandwidth (fetches one after another, not overlapped);
//  - TTFT = that prefill + those fetches; TTFT saved = cold − cached;
//  - cost = the tiers (provisioned or used, see CostSummary) + the GPU's
//    time for prefill and fetches at P_gpu; per million input tokens.
//  - every block occupies a whole block of KV in a tier (a page), a
//    request's partial last block too; a fetch moves only its tokens' KV.
// Against three references from the same trace: no cache (all prefill, no
// tiers); everything in HBM: the top tier's price and bandwidth with a
// capacity of the trace's whole footprint, every prefix-reuse a hit; and the
// oracle, a lower bound on what any placement of this stack can cost:
//  - it knows every block's next use. Between two uses of a block it pays
//    the cheapest of holding it in one tier until then (the page's bytes ×
//    the tier's price per byte-second × the interval, plus fetching its
//    tokens at the tier's bandwidth at P_gpu) or dropping it and prefilling
//    it again; a first use is always prefilled, and nothing is held after a
//    last use. Tiers that cannot return a page within the fetch budget, and
//    holds longer than the TTL, are not allowed (the tiered stack has
//    neither);
//  - it relaxes capacity (every tier holds whatever it chooses), the prefix
//    rule (a block counts as a hit even when an earlier block of the request
//    missed), and the moves between tiers (free, as they are in these
//    costs). Within an interval a real placement only moves a block down
//    the stack (promotions happen at hits), to cheaper holding and a slower
//    fetch, so each interval costs it at least the oracle's choice; a block
//    lost before its reuse costs at least the prefill. Hence a true bound
//    on the costs "as used" (the oracle's provisioned tiers are its used
//    ones: it sizes nothing).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/status.h"
#include "replay/tier_scenario.h"
#include "replay/trace.h"

namespace kvtier {

struct TierReplayTier {
  std::string name;
  std::string policy;
  double capacity_bytes = 0;
  double drain_time_s = 0;  // C/B
  uint64_t hit_blocks = 0;  // lookup hits served from this tier
  uint64_t hit_tokens = 0;
  double hit_bytes = 0;        // fetched from it on hits
  uint64_t placed_blocks = 0;  // inserts that landed here
  double placed_bytes = 0;
  double peak_used_bytes = 0;  // at the occupancy samples
  double mean_used_bytes = 0;
  double usd = 0;       // P_t · duration
  double usd_used = 0;  // P_t · duration · mean used / capacity
};

// One way of serving the trace: what it costs and how long prompts wait.
// Tiers are costed two ways: provisioned (the whole tier's hardware for the
// trace's duration, used or not: one deployment serving only this trace)
// and used (the bytes actually held, at the tier's price per byte: a shared
// cache service whose capacity serves other traffic too, and the way the
// cost model itself charges a block).
struct CostSummary {
  double tier_usd = 0;       // provisioned
  double tier_usd_used = 0;  // held bytes × time × price
  double gpu_s = 0;          // prefill and fetch seconds
  double gpu_usd = 0;        // gpu_s at P_gpu
  double input_tokens = 0;
  uint64_t hit_tokens = 0;  // tokens not prefilled
  double mean_ttft_s = 0;   // per request

  double total_usd() const { return tier_usd + gpu_usd; }
  double total_usd_used() const { return tier_usd_used + gpu_usd; }
  // Per million input tokens.
  double usd_per_mtok() const { return input_tokens > 0 ? total_usd() / input_tokens * 1e6 : 0; }
  double usd_per_mtok_used() const {
    return input_tokens > 0 ? total_usd_used() / input_tokens * 1e6 : 0;
  }
};

struct OccupancySample {
  double time_s = 0;
  std::vector<double> used_bytes;  // per tier
  double all_in_top_bytes = 0;     // the everything-in-the-top-tier reference
};

struct TierReplayResult {
  std::string scenario;
  double duration_s = 0;
  uint64_t requests = 0;
  uint64_t block_refs = 0;
  uint64_t block_hits = 0;
  uint64_t tokens = 0;
  uint64_t hit_tokens = 0;
  std::vector<TierReplayTier> tiers;
  // Bytes moved from tier i to tier j (promotions up, demotions down).
  std::vector<std::vector<double>> moved_bytes;
  uint64_t promotions = 0, demotions = 0, remat_drops = 0, drops = 0, expired = 0;
  uint64_t aged_out = 0;  // of demotions and remat_drops: by the idle review
  uint64_t insert_failures = 0;
  CostSummary tiered, all_in_top, no_cache, oracle;
  double ttft_saved_s = 0;  // summed over requests, against no cache
  std::vector<OccupancySample> occupancy;
  double seconds = 0;  // wall time of the replay
};

// `progress`, when given, is called now and then with the fraction of the
// trace's requests replayed so far.
Result<TierReplayResult> ReplayTiers(const Trace& trace, const TierScenario& scenario,
                                     const std::function<void(double)>& progress = nullptr);

}  // namespace kvtier
