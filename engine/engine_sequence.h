// Engine::Sequence: one request as the engine runs it. Private to the
// engine's own files (engine.cc, the scheduler; engine_cache.cc, its cache
// glue); nothing else includes this header.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "engine/engine.h"

namespace kvtier {

// A cached prefix on its way into a sequence's pages (DESIGN §8): issued at
// admission, read by the loader thread while the engine steps the others, and
// landed (checked, written to device pages, counted) on the stepping thread.
struct Engine::PrefixLoad {
  // Set at admission; the loader only reads these.
  std::vector<BlockKey> prompt_keys;  // the keys of the sequence's full blocks
  // Each breakpoint that ends inside a block: its end and its tail record's key.
  std::vector<std::pair<int, BlockKey>> tails;
  std::vector<std::span<std::byte>> pages;  // host pages of the blocks (empty: device pages)
  int tokens = 0;                           // the sequence's length
  int prompt_tokens = 0;
  bool first_admission = false;
  // With shared tiers (other nodes' blocks: I/O), the look-up itself runs on
  // the loader; else at admission, and the loader only reads.
  bool lookup_in_loader = false;
  // The plan (PlanPrefixLoad): what the look-up found and what is read.
  PrefixHit hit;  // its pins hold the blocks until the load lands
  uint32_t cache_hit_tokens = 0;
  std::vector<BlockKey> keys;               // the hit's blocks that are loaded, in order
  std::vector<std::span<std::byte>> dests;  // where each lands: its page, or `staging`
  std::vector<std::byte> staging;           // device pages: host memory the blocks pass through
  std::optional<BlockKey> tail_key;         // a breakpoint's tail record after the blocks...
  std::vector<std::byte> tail;              // ...and its bytes
  int tail_rows = 0;
  // Written by the loader before it marks the load done (Engine::load_mu_).
  std::vector<Result<uint64_t>> reads;
  Result<uint64_t> tail_read = Status::NotFound("the tail was not read");
  bool done = false;  // guarded by Engine::load_mu_
  // When the load was queued, and when the loader finished it.
  std::chrono::steady_clock::time_point issued, landed;
};

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
  // Its cached prefix while it is being read: the sequence holds its pages
  // but is not batched, preempted or freed until the load lands.
  std::unique_ptr<PrefixLoad> load;
  std::optional<Sampler> sampler;
  GenerateResult result;
  std::chrono::steady_clock::time_point submitted;

  int pending() const { return static_cast<int>(tokens.size()) - computed; }
  int generated() const { return static_cast<int>(result.tokens.size()); }
};

}  // namespace kvtier
