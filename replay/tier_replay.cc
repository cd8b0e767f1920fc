#include "replay/tier_replay.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <utility>

#include "cache/cache_manager.h"
#include "cache/placement.h"
#include "common/clock.h"
#include "replay/replay_tier.h"

namespace kvtier {
namespace {

constexpr int64_t kEpochMs = 1'700'000'000'000;  // the replay clock's time of the first request

// --- The replay ----------------------------------------------------------------

// The stack a scenario describes, in tokens (see the header): replay tiers
// under the daemon's CacheManager, on the replay's clock. The tiers point at
// the clock and the ledger, which the CacheManager (declared after them)
// does not outlive.
struct ReplayStack {
  explicit ReplayStack(size_t tiers) : ledger(tiers) {}
  ManualClock clock{kEpochMs};
  MoveLedger ledger;
  std::vector<double> read_bytes_per_s;  // per tier, at full size
  std::vector<double> cost_per_s;        // per tier: P_t, the whole tier's $/s
  std::unique_ptr<CacheManager> cache;
};

// Builds the scenario's stack. kInvalidArgument for a tier that holds less
// than one of the trace's blocks.
Result<std::unique_ptr<ReplayStack>> OpenReplayStack(const Trace& trace, const TierScenario& sc) {
  auto stack = std::make_unique<ReplayStack>(sc.tiers.size());
  KVTIER_ASSIGN_OR_RETURN(std::vector<TierSlot> slots,
                          ReplayTierSlots(trace, sc, &stack->ledger, &stack->clock));
  for (size_t i = 0; i < sc.tiers.size(); ++i) {
    stack->read_bytes_per_s.push_back(sc.tiers[i].read_bytes_per_s);
    stack->cost_per_s.push_back(slots[i].cost_per_s);
  }
  KVTIER_ASSIGN_OR_RETURN(
      stack->cache, CacheManager::Open(std::move(slots), ReplayCacheOptions(sc, &stack->clock)));
  return stack;
}

// The result's tiers as the scenario gives them, before any request.
std::vector<TierReplayTier> DescribeTiers(const TierScenario& sc) {
  std::vector<TierReplayTier> tiers;
  for (const ScenarioTier& st : sc.tiers) {
    TierReplayTier t;
    t.name = st.name;
    t.policy = st.admission == "none" ? st.policy : st.policy + "+" + st.admission;
    t.capacity_bytes = st.capacity_bytes;
    t.drain_time_s = st.capacity_bytes / st.read_bytes_per_s;
    tiers.push_back(t);
  }
  return tiers;
}

// One replay of a trace through a stack (see the header for what is run and
// what is estimated). Per request, Run moves the clock (sampling occupancy
// and sweeping expired blocks on the way), serves the request from the
// tiered stack, then from the everything-in-the-top-tier reference, and
// tallies both against no cache; Finish turns the tallies into the result.
class TierReplay {
 public:
  TierReplay(const Trace& trace, const TierScenario& sc, ReplayStack& stack);

  Status Run(const std::function<void(double)>& progress);
  TierReplayResult Finish();

 private:
  // What the tiered stack's leading cached run saved one request.
  struct TieredHit {
    size_t blocks = 0;
    uint64_t tokens = 0;
    double fetch_s = 0;  // its blocks brought back one after another
  };

  void MoveClockTo(const TraceRequest& req);
  void SampleOccupancy(double time_ms);
  TieredHit ServeFromTiers(const TraceRequest& req);
  Status InsertAfter(const TraceRequest& req, size_t hit_blocks);
  uint64_t TopTierHitTokens(const TraceRequest& req);
  void Tally(const TraceRequest& req, const TieredHit& hit, uint64_t top_tokens);
  void CollectTiers();
  void CollectCacheStats();
  void CollectCosts();
  CostSummary OracleCosts() const;
  CostSummary Summarize(double tier_usd, double tier_usd_used, uint64_t hit_tokens, double fetch_s,
                        double ttft_sum) const;

  const Trace& trace_;
  const TierScenario& sc_;
  ReplayStack& stack_;
  const double bpt_;                  // KV bytes per token
  const double prefill_s_per_token_;  // 2 · active_params / FLOP/s
  const int64_t end_ms_;              // the last request's time
  const double sample_step_ms_;
  const std::vector<std::byte> payload_;  // a block's worth of units (tokens)
  TierReplayResult r_;

  double next_sample_ms_ = 0;
  int64_t next_sweep_ms_ = 0;
  std::vector<BlockKey> keys_;  // the current request's
  // The everything-in-the-top-tier reference: every block seen before is there.
  std::vector<uint8_t> seen_;
  uint64_t seen_blocks_ = 0;
  uint64_t top_hit_tokens_ = 0;
  // TTFTs summed over requests, and the fetches' share of them.
  double ttft_cold_ = 0, ttft_tiered_ = 0, ttft_top_ = 0;
  double fetch_tiered_s_ = 0, fetch_top_s_ = 0;
};

TierReplay::TierReplay(const Trace& trace, const TierScenario& sc, ReplayStack& stack)
    : trace_(trace),
      sc_(sc),
      stack_(stack),
      bpt_(sc.kv_bytes_per_token),
      prefill_s_per_token_(2 * sc.active_params / sc.prefill_flops_per_s),
      end_ms_(trace.requests.empty() ? 0 : trace.requests.back().time_ms),
      sample_step_ms_(std::max(1.0, static_cast<double>(end_ms_) / sc.occupancy_samples)),
      payload_(static_cast<size_t>(trace.block_tokens)),
      seen_(trace.distinct_blocks, 0) {
  r_.scenario = sc.name;
  r_.tiers = DescribeTiers(sc);
  r_.duration_s = static_cast<double>(end_ms_) / 1000;
}

Status TierReplay::Run(const std::function<void(double)>& progress) {
  for (const TraceRequest& req : trace_.requests) {
    MoveClockTo(req);
    keys_.clear();
    for (uint32_t i = 0; i < req.num_blocks; ++i) {
      keys_.push_back(BlockKey{0, trace_.blocks[req.first_block + i]});
    }
    const TieredHit hit = ServeFromTiers(req);
    KVTIER_RETURN_IF_ERROR(InsertAfter(req, hit.blocks));
    Tally(req, hit, TopTierHitTokens(req));
    if (progress && r_.requests % 1024 == 0) {
      progress(static_cast<double>(r_.requests) / static_cast<double>(trace_.requests.size()));
    }
  }
  SampleOccupancy(static_cast<double>(end_ms_));
  return Status::Ok();
}

void TierReplay::MoveClockTo(const TraceRequest& req) {
  stack_.clock.SetMs(kEpochMs + req.time_ms);
  while (req.time_ms >= next_sample_ms_) {
    SampleOccupancy(next_sample_ms_);
    next_sample_ms_ += sample_step_ms_;
  }
  if (req.time_ms >= next_sweep_ms_) {
    // As kvtierd's sweeper does, every second: expiry, then aged blocks.
    if (sc_.ttl_ms > 0) {
      while (stack_.cache->SweepExpired(4096) == 4096) {
      }
    }
    stack_.cache->ReviewIdle(SIZE_MAX);
    next_sweep_ms_ = req.time_ms + 1000;
  }
}

void TierReplay::SampleOccupancy(double time_ms) {
  OccupancySample o;
  o.time_s = time_ms / 1000;
  const CacheStats stats = stack_.cache->Stats();
  for (size_t i = 0; i < sc_.tiers.size(); ++i) {
    o.used_bytes.push_back(stats.tiers[i].used_bytes * bpt_);
  }
  o.all_in_top_bytes = static_cast<double>(seen_blocks_) * trace_.block_tokens * bpt_;
  // The state after the last request replaces a sample taken at the
  // same time before it, so no instant weighs twice.
  if (!r_.occupancy.empty() && r_.occupancy.back().time_s == o.time_s) r_.occupancy.pop_back();
  r_.occupancy.push_back(std::move(o));
}

// Looks the request up, counts its hit per tier, then runs the promotions
// the lookup queued.
TierReplay::TieredHit TierReplay::ServeFromTiers(const TraceRequest& req) {
  const PrefixHit prefix = stack_.cache->Lookup(keys_);
  TieredHit hit;
  hit.blocks = prefix.blocks;
  for (size_t i = 0; i < prefix.blocks; ++i) {
    const uint32_t tokens = trace_.BlockTokens(req, static_cast<uint32_t>(i));
    TierReplayTier& t = r_.tiers[prefix.entries[i].tier];
    ++t.hit_blocks;
    t.hit_tokens += tokens;
    t.hit_bytes += tokens * bpt_;
    hit.fetch_s += tokens * bpt_ / stack_.read_bytes_per_s[prefix.entries[i].tier];
    hit.tokens += tokens;
  }
  stack_.cache->RunPromotions();
  return hit;
}

// Inserts every block after the leading cached run (a cached one is
// refreshed, as a writer's insert would be). A full stack refusing a block
// is part of the replay, not an error.
Status TierReplay::InsertAfter(const TraceRequest& req, size_t hit_blocks) {
  return InsertAfterHit(*stack_.cache, stack_.ledger, trace_, sc_, req, keys_, hit_blocks,
                        payload_);
}

// The tokens of the request's leading run of blocks seen before; marks its
// blocks seen.
uint64_t TierReplay::TopTierHitTokens(const TraceRequest& req) {
  uint64_t top_tokens = 0;
  bool run = true;
  for (uint32_t i = 0; i < req.num_blocks; ++i) {
    const uint32_t id = trace_.blocks[req.first_block + i];
    const uint32_t tokens = trace_.BlockTokens(req, i);
    run = run && seen_[id];
    if (run) top_tokens += tokens;
    seen_blocks_ += seen_[id] == 0;
    seen_[id] = 1;
  }
  return top_tokens;
}

void TierReplay::Tally(const TraceRequest& req, const TieredHit& hit, uint64_t top_tokens) {
  const double cold = req.input_tokens * prefill_s_per_token_;
  ttft_cold_ += cold;
  ttft_tiered_ += (req.input_tokens - hit.tokens) * prefill_s_per_token_ + hit.fetch_s;
  const double top_fetch = top_tokens * bpt_ / stack_.read_bytes_per_s[0];
  ttft_top_ += (req.input_tokens - top_tokens) * prefill_s_per_token_ + top_fetch;
  fetch_tiered_s_ += hit.fetch_s;
  fetch_top_s_ += top_fetch;
  ++r_.requests;
  r_.block_refs += req.num_blocks;
  r_.block_hits += hit.blocks;
  r_.tokens += req.input_tokens;
  r_.hit_tokens += hit.tokens;
  top_hit_tokens_ += top_tokens;
}

TierReplayResult TierReplay::Finish() {
  CollectTiers();
  CollectCacheStats();
  CollectCosts();
  return std::move(r_);
}

// Per tier: placements, occupancy and what it cost; and the bytes moved
// between tiers.
void TierReplay::CollectTiers() {
  const MoveLedger& ledger = stack_.ledger;
  for (size_t i = 0; i < r_.tiers.size(); ++i) {
    TierReplayTier& t = r_.tiers[i];
    t.placed_blocks = ledger.placed_blocks[i];
    t.placed_bytes = ledger.placed_units[i] * bpt_;
    double sum = 0;
    for (const OccupancySample& o : r_.occupancy) {
      t.peak_used_bytes = std::max(t.peak_used_bytes, o.used_bytes[i]);
      sum += o.used_bytes[i];
    }
    t.mean_used_bytes = sum / static_cast<double>(r_.occupancy.size());
    t.usd = stack_.cost_per_s[i] * r_.duration_s;
    t.usd_used = t.usd * t.mean_used_bytes / t.capacity_bytes;
  }
  r_.moved_bytes = ledger.moved;
  for (auto& row : r_.moved_bytes) {
    for (double& b : row) b *= bpt_;
  }
}

void TierReplay::CollectCacheStats() {
  const CacheStats stats = stack_.cache->Stats();
  r_.promotions = stats.promotions;
  r_.demotions = stats.demotions;
  r_.remat_drops = stats.remat_drops;
  r_.aged_out = stats.aged_out;
  r_.drops = stats.drops;
  r_.expired = stats.expired;
  r_.insert_failures = stats.insert_failures;
}

// The three ways of serving the trace: tiered, everything in the top tier,
// no cache.
void TierReplay::CollectCosts() {
  double tier_usd = 0, tier_usd_used = 0;
  for (const TierReplayTier& t : r_.tiers) {
    tier_usd += t.usd;
    tier_usd_used += t.usd_used;
  }
  r_.tiered = Summarize(tier_usd, tier_usd_used, r_.hit_tokens, fetch_tiered_s_, ttft_tiered_);
  // Everything in the top tier: sized to the whole footprint; used, what
  // has been seen so far.
  const double footprint_bytes =
      static_cast<double>(trace_.distinct_blocks) * trace_.block_tokens * bpt_;
  const double top_usd =
      CostPerSecond(footprint_bytes, sc_.tiers[0].usd_per_gib_month) * r_.duration_s;
  double top_held = 0;
  for (const OccupancySample& o : r_.occupancy) top_held += o.all_in_top_bytes;
  top_held /= static_cast<double>(r_.occupancy.size());
  r_.all_in_top = Summarize(top_usd, footprint_bytes > 0 ? top_usd * top_held / footprint_bytes : 0,
                            top_hit_tokens_, fetch_top_s_, ttft_top_);
  r_.no_cache = Summarize(0, 0, 0, 0, ttft_cold_);
  r_.ttft_saved_s = ttft_cold_ - ttft_tiered_;
  r_.oracle = OracleCosts();
}

// The offline bound of the header: per interval between two uses of a
// block, the cheapest of holding it in one tier or recomputing it.
CostSummary TierReplay::OracleCosts() const {
  const double gpu_usd_per_s = sc_.gpu_usd_per_hour / 3600;
  const double page_bytes = trace_.block_tokens * bpt_;
  struct Hold {
    double usd_per_s;  // the page held in the tier
    double fetch_s_per_token;
  };
  std::vector<Hold> holds;
  for (const ScenarioTier& t : sc_.tiers) {
    if (page_bytes / t.read_bytes_per_s > sc_.fetch_budget_s) continue;
    holds.push_back(
        {page_bytes * CostPerSecond(t.capacity_bytes, t.usd_per_gib_month) / t.capacity_bytes,
         bpt_ / t.read_bytes_per_s});
  }
  constexpr int64_t kNeverMs = -1;
  std::vector<int64_t> last_use_ms(trace_.distinct_blocks, kNeverMs);
  double hold_usd = 0, fetch_s = 0, ttft_sum = 0;
  uint64_t hit_tokens = 0;
  for (const TraceRequest& req : trace_.requests) {
    uint64_t request_hit_tokens = 0;
    double request_fetch_s = 0;
    for (uint32_t i = 0; i < req.num_blocks; ++i) {
      const uint32_t id = trace_.blocks[req.first_block + i];
      const int64_t last = std::exchange(last_use_ms[id], req.time_ms);
      if (last == kNeverMs) continue;  // a first use is prefilled
      const double interval_s = static_cast<double>(req.time_ms - last) / 1000;
      if (sc_.ttl_ms > 0 && req.time_ms - last > sc_.ttl_ms) continue;
      const uint32_t tokens = trace_.BlockTokens(req, i);
      double best = tokens * prefill_s_per_token_ * gpu_usd_per_s;  // drop and recompute
      const Hold* chosen = nullptr;
      for (const Hold& h : holds) {
        const double cost = h.usd_per_s * interval_s + tokens * h.fetch_s_per_token * gpu_usd_per_s;
        if (cost < best) best = cost, chosen = &h;
      }
      if (chosen == nullptr) continue;
      hold_usd += chosen->usd_per_s * interval_s;
      request_fetch_s += tokens * chosen->fetch_s_per_token;
      request_hit_tokens += tokens;
    }
    request_hit_tokens = std::min<uint64_t>(request_hit_tokens, req.input_tokens);
    hit_tokens += request_hit_tokens;
    fetch_s += request_fetch_s;
    ttft_sum += (req.input_tokens - request_hit_tokens) * prefill_s_per_token_ + request_fetch_s;
  }
  return Summarize(hold_usd, hold_usd, hit_tokens, fetch_s, ttft_sum);
}

CostSummary TierReplay::Summarize(double tier_usd, double tier_usd_used, uint64_t hit_tokens,
                                  double fetch_s, double ttft_sum) const {
  const double requests = std::max<double>(1, r_.requests);
  const double gpu_usd_per_s = sc_.gpu_usd_per_hour / 3600;
  CostSummary c;
  c.tier_usd = tier_usd;
  c.tier_usd_used = tier_usd_used;
  c.input_tokens = static_cast<double>(r_.tokens);
  c.hit_tokens = hit_tokens;
  c.gpu_s = static_cast<double>(r_.tokens - hit_tokens) * prefill_s_per_token_ + fetch_s;
  c.gpu_usd = c.gpu_s * gpu_usd_per_s;
  c.mean_ttft_s = ttft_sum / requests;
  return c;
}

}  // namespace

Result<TierReplayResult> ReplayTiers(const Trace& trace, const TierScenario& sc,
                                     const std::function<void(double)>& progress) {
  KVTIER_RETURN_IF_ERROR(ValidateTierScenario(sc));
  const auto wall0 = std::chrono::steady_clock::now();
  KVTIER_ASSIGN_OR_RETURN(std::unique_ptr<ReplayStack> stack, OpenReplayStack(trace, sc));
  TierReplay replay(trace, sc, *stack);
  KVTIER_RETURN_IF_ERROR(replay.Run(progress));
  TierReplayResult r = replay.Finish();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  return r;
}

}  // namespace kvtier
