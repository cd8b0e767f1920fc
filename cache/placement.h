// Placement: the drain-time cost model of DESIGN §4, and the estimate of how
// long a block will wait for its next use.
//
// Per tier t: capacity C_t bytes, bandwidth B_t bytes/s (to bring a block back
// to the engine), cost rate P_t $/s for the whole tier. Holding s bytes for T
// seconds and then fetching them once costs
//
//     cost_t(T) = (s·P_t/B_t)·(T/D_t + 1),   D_t = C_t/B_t (the drain time),
//
// that is the block's share of the tier's capacity for T seconds plus its
// share of the tier's bandwidth-time for one read. Dropping the block and
// recomputing it by prefill when it is next needed costs
//
//     remat = flops/FLOPS · P_gpu,   flops = 2·N_active_params·tokens,
//
// and nothing while it waits.
//
// Two refinements make that an expected cost (issue 20). The engine waits
// for a fetch: reading s bytes back also costs s/B_t of the accelerator's
// time at P_gpu. And a block is not always used again: with probability p
// (learned per namespace and chain depth, ReuseEstimator) it is, so
//
//     E[cost_t] = s·P_t/C_t·T + p·s·(P_t + P_gpu)/B_t,   E[remat] = p·remat.
//
// Holding is paid whether or not the block comes back; the fetch and the
// prefill only when it does. With p = 1 (no history yet) the tiers compare
// as before plus the engine's wait. The cheapest home is the tier (or the
// drop) that minimises the expected cost, among the tiers that can take the
// block and can return it within the fetch budget.
//
// The cost model is immutable once built and safe to share. The reuse
// estimator is thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace kvtier {

inline constexpr double kInfiniteCost = std::numeric_limits<double>::infinity();

// The economics of one tier.
struct TierEconomics {
  std::string name;
  double capacity_bytes = 0;    // C_t
  double read_bytes_per_s = 0;  // B_t; 0 = unknown (the tier is never the cheapest)
  double cost_per_s = 0;        // P_t, $/s for the whole tier's hardware
};

// A cost rate of `usd_per_gib_month` per GiB held, for a tier of `capacity_bytes`:
// the P_t of a tier priced like storage (a 30-day month).
double CostPerSecond(double capacity_bytes, double usd_per_gib_month);

// What recomputing a block costs.
struct RematEconomics {
  double flops_per_s = 4e14;       // prefill FLOP/s of the engine (H100 bf16 at ~40% MFU)
  double cost_per_s = 2.5 / 3600;  // P_gpu: $/s of the accelerator doing prefill ($2.50/h)
  // $/s of the engine's time spent waiting for a fetch: the same accelerator
  // (kvtierd and the replay set it to P_gpu). 0 leaves the engine's wait out
  // and compares the tiers by the drain-time formula alone.
  double wait_cost_per_s = 2.5 / 3600;
};

struct PlacementOptions {
  RematEconomics remat;
  double fetch_budget_s = 1.0;    // a tier must return one block within this (the TTFT target)
  double default_idle_s = 600;    // expected idle time of a block with no TTL and no history
  double reuse_smoothing = 0.05;  // weight of each new reuse interval in its namespace's estimate
  size_t max_streams = 4096;      // namespaces whose reuse is tracked (the oldest is forgotten)
};

// The costs compared for one block at one decision.
struct PlacementCosts {
  std::vector<double> tier_costs;     // cost_t(T) per tier, $; kInfiniteCost where not allowed
  double remat_cost = kInfiniteCost;  // $; infinite when the block's flops are unknown
  double idle_s = 0;                  // the T used
  double reuse_probability = 1;       // the p used
};

class CostModel {
 public:
  CostModel() = default;
  CostModel(std::vector<TierEconomics> tiers, RematEconomics remat);

  size_t tier_count() const { return tiers_.size(); }
  const TierEconomics& tier(size_t t) const { return tiers_[t]; }
  const RematEconomics& remat() const { return remat_; }

  // D_t = C_t/B_t in seconds; infinite when B_t is unknown.
  double DrainTimeS(size_t t) const;
  // s/B_t: seconds to bring one block of `bytes` back from tier t.
  double FetchTimeS(size_t t, double bytes) const;
  // E[cost_t(T)] for a block of `bytes` idle for `idle_s` and used again with
  // probability `reuse_probability`; infinite when B_t is unknown.
  double HoldCost(size_t t, double bytes, double idle_s, double reuse_probability = 1) const;
  // The cost of recomputing `flops` of prefill; infinite when flops is 0 (unknown).
  double RematCost(double flops) const;

  // The expected costs of every tier for one block (allowed(t) false →
  // infinite), and of dropping it (p·remat).
  PlacementCosts Costs(double bytes, double idle_s, double remat_flops,
                       const std::function<bool(size_t)>& allowed,
                       double reuse_probability = 1) const;

 private:
  std::vector<TierEconomics> tiers_;
  RematEconomics remat_;
};

// The tiers in order of cost, cheapest first, among those with a finite cost
// (ties keep the faster tier first). Empty when none is allowed.
std::vector<size_t> TiersByCost(const PlacementCosts& costs);
// True when dropping is cheaper than every allowed tier.
bool DropIsCheapest(const PlacementCosts& costs);

// The expected idle time T of a block: the namespace's reuse estimate capped
// by the TTL; the TTL alone without an estimate (a TTL is an upper bound);
// `default_idle_s` with neither.
double ExpectedIdleS(int64_t ttl_ms, std::optional<double> reuse_estimate_s, double default_idle_s);

// The class whose reuse a block shares: its namespace (`stream`) and its
// depth in the prefix chain, in log2 buckets (0, 1, 2-3, 4-7, ... 64+). A
// chain's first blocks (a shared system prompt) come back within seconds and
// almost always; a deep block of a conversation comes back at the next turn,
// minutes later, about a third of the time; a one-shot prompt's leaf never.
uint64_t ReuseClassOf(uint64_t stream, uint32_t depth);

// An online estimate, per reuse class (ReuseClassOf; at most `max_streams`
// classes, the least recently updated forgotten), of
//  - the time between uses of a block: an exponentially weighted mean of log
//    intervals (reuse times are heavy-tailed; the geometric mean is the
//    robust centre). Only reuses are observed, so it is the idle time of
//    blocks that do come back;
//  - the probability that a block is used again at all, apart for a block
//    never used since its insert ("fresh") and one used at least once
//    ("reused": a conversation's blocks come back turn after turn): the
//    waiting periods that ended in a use over the periods begun (an insert
//    begins one, a use ends one and begins the next). Counts halve each
//    time a class has begun kReuseWindow periods, so the estimate follows
//    the recent traffic. A period still running counts as not reused yet,
//    which errs low by the share of blocks inserted within one reuse
//    interval. With fewer than kReuseMinPeriods periods the probability is
//    1: a block is assumed to come back until the class shows otherwise.
class ReuseEstimator {
 public:
  static constexpr double kReuseWindow = 4096;
  static constexpr double kReuseMinPeriods = 32;

  explicit ReuseEstimator(double smoothing = 0.05, size_t max_streams = 4096);
  // A block of `cls` was used `interval_s` after its previous use; `first`:
  // its first use since its insert.
  void Observe(uint64_t cls, double interval_s, int64_t now_ms, bool first = false);
  // A new block of `cls` was inserted.
  void ObserveInsert(uint64_t cls, int64_t now_ms);
  std::optional<double> EstimateS(uint64_t cls) const;
  // The probability that a block of `cls` is used again, `reused`: used since
  // its insert.
  double ReuseProbability(uint64_t cls, bool reused) const;
  // The same once the class has seen at least kReuseMinPeriods periods end
  // in a use, else nullopt. Early on every period is still running and the
  // plain estimate reads 0; a decision that removes blocks waits for this.
  std::optional<double> SettledReuseProbability(uint64_t cls, bool reused) const;
  size_t streams() const;

 private:
  struct Stream {
    double mean_log_s = 0;  // EWMA of ln(interval)
    uint64_t samples = 0;
    int64_t updated_ms = 0;
    // Waiting periods begun and ended by a use: [0] fresh, [1] reused.
    double periods[2] = {0, 0};
    double ended_in_use[2] = {0, 0};
  };
  Stream& StreamLocked(uint64_t cls, int64_t now_ms);  // creates it; mu_ held
  static void BeginPeriod(Stream& s, int kind);
  const double smoothing_;
  const size_t max_streams_;
  mutable std::mutex mu_;
  std::unordered_map<uint64_t, Stream> streams_;  // guarded by mu_
};

}  // namespace kvtier
