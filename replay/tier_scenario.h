// A multi-tier replay's scenario (replay/tier_replay.h): the stack of tiers
// (capacities, bandwidths, prices, eviction policies), the model's KV
// geometry and the GPU that would otherwise prefill, as plain structs, and
// their parser from the JSON files of bench/scenarios/ (docs/traces.md).
#pragma once

#include <cstdint>
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
};

// A scenario as JSON (docs/traces.md gives the fields and their units).
// kInvalidArgument naming the field for anything missing, mistyped or out of
// range.
Result<TierScenario> ParseTierScenario(const std::string& json, const std::string& name);

// The file at `path`, at most 1 MiB, parsed as above; kNotFound when it
// cannot be opened.
Result<TierScenario> ReadTierScenario(const std::string& path);

// Checks the figures of a scenario built in code as the parser checks a
// file's: 1 to 8 tiers, every figure in range, every policy known.
// kInvalidArgument saying which is not.
Status ValidateTierScenario(const TierScenario& scenario);

}  // namespace kvtier
