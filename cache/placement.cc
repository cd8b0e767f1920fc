#include "cache/placement.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace kvtier {

double CostPerSecond(double capacity_bytes, double usd_per_gib_month) {
  constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
  constexpr double kMonthS = 30.0 * 86400.0;
  return capacity_bytes / kGiB * usd_per_gib_month / kMonthS;
}

CostModel::CostModel(std::vector<TierEconomics> tiers, RematEconomics remat)
    : tiers_(std::move(tiers)), remat_(remat) {}

double CostModel::DrainTimeS(size_t t) const {
  const TierEconomics& e = tiers_[t];
  return e.read_bytes_per_s > 0 ? e.capacity_bytes / e.read_bytes_per_s : kInfiniteCost;
}

double CostModel::FetchTimeS(size_t t, double bytes) const {
  const TierEconomics& e = tiers_[t];
  return e.read_bytes_per_s > 0 ? bytes / e.read_bytes_per_s : kInfiniteCost;
}

double CostModel::HoldCost(size_t t, double bytes, double idle_s, double reuse_probability) const {
  const TierEconomics& e = tiers_[t];
  if (e.read_bytes_per_s <= 0 || e.capacity_bytes <= 0) return kInfiniteCost;
  // s·P/C·T + p·s·(P + P_gpu)/B (see the header), written so that a free
  // tier (P = 0) costs exactly its fetch rather than 0·inf.
  return bytes * e.cost_per_s / e.capacity_bytes * idle_s +
         reuse_probability * bytes * (e.cost_per_s + remat_.wait_cost_per_s) / e.read_bytes_per_s;
}

double CostModel::RematCost(double flops) const {
  if (flops <= 0 || remat_.flops_per_s <= 0) return kInfiniteCost;
  return flops / remat_.flops_per_s * remat_.cost_per_s;
}

PlacementCosts CostModel::Costs(double bytes, double idle_s, double remat_flops,
                                const std::function<bool(size_t)>& allowed,
                                double reuse_probability) const {
  PlacementCosts c;
  c.idle_s = idle_s;
  c.reuse_probability = reuse_probability;
  c.remat_cost = reuse_probability * RematCost(remat_flops);
  c.tier_costs.resize(tiers_.size(), kInfiniteCost);
  for (size_t t = 0; t < tiers_.size(); ++t) {
    if (!allowed || allowed(t)) c.tier_costs[t] = HoldCost(t, bytes, idle_s, reuse_probability);
  }
  return c;
}

std::vector<size_t> TiersByCost(const PlacementCosts& costs) {
  std::vector<size_t> order;
  for (size_t t = 0; t < costs.tier_costs.size(); ++t) {
    if (std::isfinite(costs.tier_costs[t])) order.push_back(t);
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return costs.tier_costs[a] < costs.tier_costs[b]; });
  return order;
}

bool DropIsCheapest(const PlacementCosts& costs) {
  if (!std::isfinite(costs.remat_cost)) return false;
  for (double c : costs.tier_costs) {
    if (c <= costs.remat_cost) return false;
  }
  return true;
}

double ExpectedIdleS(int64_t ttl_ms, std::optional<double> reuse_estimate_s,
                     double default_idle_s) {
  const double ttl_s = ttl_ms > 0 ? static_cast<double>(ttl_ms) / 1000.0 : 0;
  if (reuse_estimate_s) return ttl_s > 0 ? std::min(*reuse_estimate_s, ttl_s) : *reuse_estimate_s;
  return ttl_s > 0 ? ttl_s : default_idle_s;
}

ReuseEstimator::ReuseEstimator(double smoothing, size_t max_streams)
    : smoothing_(std::clamp(smoothing, 1e-6, 1.0)),
      max_streams_(std::max<size_t>(1, max_streams)) {}

uint64_t ReuseClassOf(uint64_t stream, uint32_t depth) {
  const uint64_t bucket = std::bit_width(std::min<uint32_t>(depth, 64));  // 0..7
  // Any fixed odd multiplier spreads the bucket over the key; the stream is
  // already a hash.
  return stream ^ (bucket * 0x9e3779b97f4a7c15ull);
}

ReuseEstimator::Stream& ReuseEstimator::StreamLocked(uint64_t cls, int64_t now_ms) {
  auto it = streams_.find(cls);
  if (it == streams_.end()) {
    if (streams_.size() >= max_streams_) {
      auto oldest = std::min_element(
          streams_.begin(), streams_.end(),
          [](const auto& a, const auto& b) { return a.second.updated_ms < b.second.updated_ms; });
      streams_.erase(oldest);
    }
    it = streams_.emplace(cls, Stream{}).first;
  }
  it->second.updated_ms = now_ms;
  return it->second;
}

void ReuseEstimator::BeginPeriod(Stream& s, int kind) {
  s.periods[kind] += 1;
  if (s.periods[kind] >= kReuseWindow) {
    s.periods[kind] /= 2;
    s.ended_in_use[kind] /= 2;
  }
}

void ReuseEstimator::ObserveInsert(uint64_t cls, int64_t now_ms) {
  std::lock_guard<std::mutex> lock(mu_);
  BeginPeriod(StreamLocked(cls, now_ms), 0);
}

void ReuseEstimator::Observe(uint64_t cls, double interval_s, int64_t now_ms, bool first) {
  // A millisecond is the clock's resolution: shorter intervals are that.
  const double x = std::log(std::max(interval_s, 1e-3));
  std::lock_guard<std::mutex> lock(mu_);
  Stream& s = StreamLocked(cls, now_ms);
  // The first samples weigh 1, 1/2, 1/3 ... until that falls below the
  // smoothing weight: a plain mean while there is little history.
  const double w = std::max(smoothing_, 1.0 / static_cast<double>(s.samples + 1));
  s.mean_log_s += w * (x - s.mean_log_s);
  ++s.samples;
  // The use ends a waiting period (fresh if it is the block's first use)
  // and begins a reused one.
  const int ended = first ? 0 : 1;
  s.ended_in_use[ended] = std::min(s.ended_in_use[ended] + 1, s.periods[ended]);
  BeginPeriod(s, 1);
}

double ReuseEstimator::ReuseProbability(uint64_t cls, bool reused) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = streams_.find(cls);
  if (it == streams_.end()) return 1;
  const int kind = reused ? 1 : 0;
  const Stream& s = it->second;
  if (s.periods[kind] < kReuseMinPeriods) return 1;
  return std::clamp(s.ended_in_use[kind] / s.periods[kind], 0.0, 1.0);
}

std::optional<double> ReuseEstimator::SettledReuseProbability(uint64_t cls, bool reused) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = streams_.find(cls);
  if (it == streams_.end()) return std::nullopt;
  const int kind = reused ? 1 : 0;
  const Stream& s = it->second;
  if (s.ended_in_use[kind] < kReuseMinPeriods) return std::nullopt;
  return std::clamp(s.ended_in_use[kind] / s.periods[kind], 0.0, 1.0);
}

std::optional<double> ReuseEstimator::EstimateS(uint64_t stream) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = streams_.find(stream);
  if (it == streams_.end() || it->second.samples == 0) return std::nullopt;
  return std::exp(it->second.mean_log_s);
}

size_t ReuseEstimator::streams() const {
  std::lock_guard<std::mutex> lock(mu_);
  return streams_.size();
}

}  // namespace kvtier
