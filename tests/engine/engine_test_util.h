// Shared set-up of the engine tests: models, a DRAM-tier cache, the shared
// data directory.
#pragma once

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "cache/cache_manager.h"
#include "model/model_weights.h"
#include "tiers/dram/dram_tier.h"

namespace kvtier {

// ../shared/data (CTest passes KVTIER_SHARED_DATA).
inline std::string SharedDataDir() {
  const char* env = std::getenv("KVTIER_SHARED_DATA");
  return env != nullptr ? env : "../shared/data";
}

inline std::string Stories260KDir() { return SharedDataDir() + "/models/stories260K"; }

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
