#include "bench/bench_main.h"

#include <cstring>
#include <iostream>
#include <vector>

namespace kvtier::bench {
namespace {

class CapturingReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& r : runs) {
      if (r.error_occurred || r.run_type != Run::RT_Iteration) continue;
      RunFigures f;
      f.seconds_per_iter = r.GetAdjustedRealTime() * benchmark::GetTimeUnitMultiplier(r.time_unit);
      if (auto it = r.counters.find("bytes_per_second"); it != r.counters.end()) {
        f.bytes_per_second = it->second.value;
      }
      if (auto it = r.counters.find("items_per_second"); it != r.counters.end()) {
        f.items_per_second = it->second.value;
      }
      figures[r.benchmark_name()] = f;
    }
  }
  Figures figures;
};

}  // namespace

int BenchMain(int argc, char** argv,
              const std::function<nlohmann::json(const Figures&)>& summarize) {
  bool json = false;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], "--json") == 0) {
      json = true;
    } else {
      args.push_back(argv[i]);
    }
  }
  int n = static_cast<int>(args.size());
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 2;
  CapturingReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  nlohmann::json result = summarize(reporter.figures);
  if (json) std::cout << result.dump() << std::endl;
  return 0;
}

}  // namespace kvtier::bench
