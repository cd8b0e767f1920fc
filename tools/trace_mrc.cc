#include "tools/trace_mrc.h"

#include <chrono>
#include <cmath>
#include <cstdio>

#include "cache/mrc.h"
#include "replay/independent_replay.h"
#include "replay/policy_replay.h"

namespace kvtier {

Result<MrcCheck> CheckMrc(const Trace& trace, const std::vector<uint64_t>& sizes) {
  MrcCheck check;
  MrcEstimator estimator;  // kvtierd's default sample size
  const auto start = std::chrono::steady_clock::now();
  // The trace's references in replay order; every block weighs one unit, so
  // sizes are in blocks.
  for (uint32_t block : trace.blocks) estimator.Use(block, 1);
  check.estimate_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const MrcSnapshot s = estimator.Snapshot();
  check.sampling_rate = s.sampling_rate;
  check.sampled_blocks = s.sampled_keys;
  check.max_sampled_blocks = s.max_sampled_keys;
  for (uint64_t size : sizes) {
    const uint64_t blocks = size == kInfiniteBlocks ? trace.distinct_blocks : size;
    KVTIER_ASSIGN_OR_RETURN(const ReplayResult exact,
                            ReplayTraceIndependent(trace, "lru", std::max<uint64_t>(blocks, 1)));
    MrcCheckRow row{blocks, exact.hit_ratio(), s.HitRatioAt(blocks)};
    check.max_abs_error = std::max(check.max_abs_error, std::fabs(row.estimate - row.exact));
    check.rows.push_back(row);
  }
  return check;
}

void PrintMrcCheck(const MrcCheck& check) {
  std::printf(
      "\nmiss-ratio curve: SHARDS estimate (rate %.4f, %zu of at most %zu blocks tracked, "
      "%.3f s) against exact LRU, each reference on its own\n",
      check.sampling_rate, check.sampled_blocks, check.max_sampled_blocks, check.estimate_s);
  std::printf("%12s %10s %10s %10s\n", "size_blocks", "exact_lru", "estimate", "error");
  for (const MrcCheckRow& r : check.rows) {
    std::printf("%12llu %10.4f %10.4f %+10.4f\n", static_cast<unsigned long long>(r.size_blocks),
                r.exact, r.estimate, r.estimate - r.exact);
  }
  std::printf("max |error| %.4f\n", check.max_abs_error);
}

nlohmann::json MrcCheckJson(const MrcCheck& check) {
  nlohmann::json rows = nlohmann::json::array();
  for (const MrcCheckRow& r : check.rows) {
    rows.push_back({{"size_blocks", r.size_blocks},
                    {"exact_lru_hit_ratio", r.exact},
                    {"estimated_hit_ratio", r.estimate}});
  }
  return {
      {"sampling_rate", check.sampling_rate},           {"sampled_blocks", check.sampled_blocks},
      {"max_sampled_blocks", check.max_sampled_blocks}, {"estimate_s", check.estimate_s},
      {"max_abs_error", check.max_abs_error},           {"sizes", rows}};
}

}  // namespace kvtier
