// Shared set-up of the engine tests: models and a DRAM-tier cache (the
// shared data directory and stories260K are in tests/shared_data.h).
#pragma once

#include <memory>
#include <vector>

#include "cache/cache_manager.h"
#include "model/model_weights.h"
#include "tiers/dram/dram_tier.h"

namespace kvtier {

// A random model of the "tiny" preset's shape with a shorter context.
inline std::unique_ptr<ModelWeights> TinyRandomModel(uint64_t seed = 7) {
  ModelConfig c = ModelPreset("tiny").value();
  auto w = RandomModel(c, seed);
  return std::move(w).value();
}

// A cache of one DRAM tier.
inline std::unique_ptr<CacheManager> DramCache(uint64_t bytes = 64ull << 20,
                                               Clock* clock = SystemClock()) {
  DramTierOptions o;
  o.capacity_bytes = bytes;
  o.read_bytes_per_s = 1e9;
  o.write_bytes_per_s = 1e9;
  o.clock = clock;
  std::vector<TierSlot> slots;
  slots.push_back({std::move(OpenDramTier(o).value()), NewLruPolicy()});
  CacheManagerOptions co;
  co.clock = clock;
  co.sweep_interval_ms = 0;  // tests sweep when they move the clock
  co.background_promotion = false;
  return std::move(CacheManager::Open(std::move(slots), co).value());
}

}  // namespace kvtier
