// kvtier-trace --mrc: the online miss-ratio curve estimator kvtierd runs
// (cache/mrc.h, fixed-size SHARDS) fed with every block reference of a trace,
// against exact LRU counting each reference on its own (the independent
// replay with policy "lru", replay/independent_replay.h), at each size.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <vector>

#include "common/status.h"
#include "replay/trace.h"

namespace kvtier {

struct MrcCheckRow {
  uint64_t size_blocks = 0;
  double exact = 0;     // exact LRU hit ratio, every reference on its own
  double estimate = 0;  // the estimator's
};

struct MrcCheck {
  double sampling_rate = 1;  // at the end of the trace
  size_t sampled_blocks = 0;
  size_t max_sampled_blocks = 0;
  double estimate_s = 0;  // wall time of feeding the estimator
  std::vector<MrcCheckRow> rows;
  double max_abs_error = 0;
};

// Sizes in blocks (kInfiniteBlocks: the footprint). Errors of the replay
// (a size of 0) are returned.
Result<MrcCheck> CheckMrc(const Trace& trace, const std::vector<uint64_t>& sizes);
void PrintMrcCheck(const MrcCheck& check);
nlohmann::json MrcCheckJson(const MrcCheck& check);

}  // namespace kvtier
