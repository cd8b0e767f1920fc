// The storage under the multi-tier replays (replay/tier_replay.h,
// replay/cluster_replay.h): a tier that keeps each block's size and expiry,
// not its bytes, and the ledger of what moved between a stack's tiers; and
// the scenario's local tiers as the CacheManager's slots, with the options
// the replays run the CacheManager under.
//
// Sizes are in tokens: the replays scale bytes by the model's KV bytes per
// token (tier_replay.h says why the decisions do not change). A replay tier
// is thread-safe, as the Tier contract asks, but the replays drive
// everything from one thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "cache/cache_manager.h"
#include "common/clock.h"
#include "common/status.h"
#include "replay/tier_scenario.h"
#include "replay/trace.h"
#include "tiers/tier.h"

namespace kvtier {

// What a stack's replay tiers saw move: a block read from one tier and then
// written to another (a CacheManager promotion or demotion: copy, then
// switch) is a move; a write with no read before it is a placement. Units
// are tokens. Not thread-safe: the tiers that share one are driven by one
// thread.
struct MoveLedger {
  explicit MoveLedger(size_t tiers)
      : moved(tiers, std::vector<double>(tiers, 0)),
        placed_blocks(tiers, 0),
        placed_units(tiers, 0) {}
  std::unordered_map<BlockKey, size_t, BlockKeyHash> read_from;
  std::vector<std::vector<double>> moved;  // units (tokens), [from][to]
  std::vector<uint64_t> placed_blocks;
  std::vector<double> placed_units;
};

// A tier of `capacity_units` that keeps sizes and expiries (reads fill the
// destination with zeros), reporting `read_units_per_s` as its bandwidth.
// It is tier `index` of its stack: its reads and writes go to `ledger`
// under that index. Expiry is judged on `clock`. The ledger and the clock
// must outlive it.
std::unique_ptr<Tier> NewReplayTier(std::string name, uint64_t capacity_units,
                                    double read_units_per_s, size_t index, MoveLedger* ledger,
                                    const Clock* clock);

// The CacheManager as a replay drives it: on the replay's clock, with the
// sweeps and promotions run by the replay loop, and the scenario's costs.
CacheManagerOptions ReplayCacheOptions(const TierScenario& sc, Clock* clock);

// The scenario's tiers as slots, tier i writing to `ledger` as index i:
// replay tiers of the scaled capacities and bandwidths, the scenario's
// policies and admission filters, the tiers' full-size $/s. kInvalidArgument
// for a tier that holds less than one of the trace's blocks.
Result<std::vector<TierSlot>> ReplayTierSlots(const Trace& trace, const TierScenario& sc,
                                              MoveLedger* ledger, const Clock* clock);

}  // namespace kvtier
