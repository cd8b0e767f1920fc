// Engine::Sequence: one request as the engine runs it. Private to the
// engine's own files (engine.cc, the scheduler; engine_cache.cc, its cache
// glue); nothing else includes this header.
#pragma once

#include <chrono>
#include <optional>
#include <vector>

#include "engine/engine.h"

namespace kvtier {

struct Engine::Sequence {
  RequestId id = 0;
  GenerateRequest req;
  Callback done;
  std::vector<TokenId> tokens;  // prompt, then generated
  int computed = 0;             // leading tokens whose KV is in pages
  std::vector<PageId> pages;    // block table
  std::vector<BlockKey> keys;   // chained keys of the leading full blocks
  int published = 0;            // leading blocks known to be in the cache
  size_t tails_published = 0;   // breakpoints whose tail record is written (or needs none)
  bool admitted_before = false;
  std::optional<Sampler> sampler;
  GenerateResult result;
  std::chrono::steady_clock::time_point submitted;

  int pending() const { return static_cast<int>(tokens.size()) - computed; }
  int generated() const { return static_cast<int>(result.tokens.size()); }
};

}  // namespace kvtier
