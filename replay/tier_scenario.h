// A multi-tier replay's scenario (replay/tier_replay.h): the stack of tiers
// (capacities, bandwidths, prices, eviction policies), the model's KV
// geometry and the GPU that would otherwise prefill, and for the cluster
// replay (replay/cluster_replay.h) the shared cluster tier below every
// node's stack, as plain structs, and their parser from the JSON files of
// bench/scenarios/ (docs/traces.md).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace kvtier {

struct ScenarioTier {
  std::string name;
  double capacity_bytes = 0;       // > 0
  double read_bytes_per_s = 0;     // > 0: bringing a block back to the engine
  double usd_per_gib_month = 0;    // >= 0
  std::string policy = "lru";      // kvtierd's default (docs/placement.md)
  std::string admission = "none";  // the tier's admission filter (cache/admission.h)
};

// The shared cluster tier of the cluster replay (DESIGN §10): one store
// every node writes through to and adopts blocks from, as kvtierd's Redis
// Cluster tier (tiers/cluster/redis_tier.h). Each of N nodes gets 1/N of
// the capacity as its share of writes.
struct ScenarioSharedTier {
  std::string name = "cluster";
  double capacity_bytes = 0;       // > 0: the whole store, all nodes together
  double read_bytes_per_s = 0;     // > 0: one node's bandwidth from the store
  double latency_s = 0;            // >= 0: one round trip, paid per block fetched
  double usd_per_gib_month = 0;    // >= 0
  std::string policy = "lru";      // each node's eviction policy for its share
  std::string admission = "none";  // and its admission filter (cache/admission.h)
  // The longest a write-through copy lives (CacheManagerOptions::
  // shared_max_ttl_ms, kvtierd's default); 0: no cap.
  int64_t max_ttl_ms = 3'600'000;
};

struct TierScenario {
  std::string name;
  std::string model;              // a label
  double kv_bytes_per_token = 0;  // > 0, all layers, K and V
  double active_params = 0;       // > 0: prefill FLOPs = 2 · active_params · tokens
  double prefill_flops_per_s = 4e14;
  double gpu_usd_per_hour = 2.5;
  double fetch_budget_s = 1.0;      // a tier must return one block within this
  double default_idle_s = 600;      // T with no reuse estimate and no TTL
  int64_t ttl_ms = 0;               // blocks' TTL, refreshed on use; 0 = none
  std::vector<ScenarioTier> tiers;  // top (fastest) first, 1 to 8
  int occupancy_samples = 240;      // points of the occupancy-over-time series
  // The cluster replay's shared tier ("cluster": {"shared_tier": ...});
  // none: the nodes share nothing. The single-node replay ignores it.
  std::optional<ScenarioSharedTier> shared_tier;
};

// A scenario as JSON (docs/traces.md gives the fields and their units).
// kInvalidArgument naming the field for anything missing, mistyped or out of
// range.
Result<TierScenario> ParseTierScenario(const std::string& json, const std::string& name);

// The file at `path`, at most 1 MiB, parsed as above; kNotFound when it
// cannot be opened.
Result<TierScenario> ReadTierScenario(const std::string& path);

// Checks the figures of a scenario built in code as the parser checks a
// file's: 1 to 8 tiers, every figure in range, every policy known, the
// shared tier's too.
// kInvalidArgument saying which is not.
Status ValidateTierScenario(const TierScenario& scenario);

}  // namespace kvtier
