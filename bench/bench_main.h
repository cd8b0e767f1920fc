// Shared main for kvtier's Google Benchmark binaries.
//
// Runs the registered benchmarks with the usual console table, keeps every
// run's figures, and hands them to `summarize`, which prints ratios measured
// side by side and returns the bench's JSON object. With --json that object is
// printed as the last line of stdout.
#pragma once

#include <benchmark/benchmark.h>

#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

namespace kvtier::bench {

struct RunFigures {
  double seconds_per_iter = 0;  // real time
  double bytes_per_second = 0;  // from SetBytesProcessed, 0 if unset
  double items_per_second = 0;  // from SetItemsProcessed, 0 if unset
};

// Keyed by the benchmark's full name ("BM_PrefixHash/64").
using Figures = std::map<std::string, RunFigures>;

int BenchMain(int argc, char** argv,
              const std::function<nlohmann::json(const Figures&)>& summarize);

}  // namespace kvtier::bench
