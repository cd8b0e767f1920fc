// kvtier-trace: replays a serving trace through the eviction policies at a
// sweep of tier sizes, with prefix semantics and Belady's bound (DESIGN §5,
// §11; cache/trace_replay.h says what is counted).
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cache/eviction_policy.h"
#include "cache/trace.h"
#include "cache/trace_replay.h"
#include "tools/flags.h"

namespace kvtier {
namespace {

const char kUsage[] =
    R"(usage: kvtier-trace --trace FILE --format mooncake|azure|csv [--policies LIST|all]
                    [--sizes LIST] [--block-tokens N] [--azure-shared-prefix-tokens N] [--json]

Replays FILE through each policy at each size and prints the block and token
(prefill saved) hit ratios, prefix semantics: a request hits only the leading
run of its blocks that are cached.

  --policies LIST   comma-separated: lru fifo lfu arc s3fifo sieve gdsf ttl-cost belady
                    (default all: every online policy and belady, the offline bound)
  --sizes LIST      tier sizes: blocks (4096), fractions of the footprint (0.1) or inf
                    (default 0.01,0.05,0.1,0.25,0.5,inf)
  --block-tokens N  tokens per block for azure and csv traces (default 512)
  --azure-shared-prefix-tokens N
                    azure traces have no prefix hashes: give every request the same
                    first N tokens (a synthetic shared system prompt; default 0, none)
  --json            print one JSON object as the last line
)";

int Fail(const std::string& msg, int code) {
  std::cerr << "kvtier-trace: " << msg << "\n";
  if (code == 2) std::cerr << "run kvtier-trace --help for usage\n";
  return code;
}

int Main(int argc, char** argv) {
  FlagSet flags;
  for (const char* f :
       {"trace", "format", "policies", "sizes", "block-tokens", "azure-shared-prefix-tokens"}) {
    flags.Value(f);
  }
  flags.Bool("json");
  flags.Bool("help");
  if (Status s = flags.Parse(std::vector<std::string>(argv + 1, argv + argc)); !s.ok()) {
    return Fail(s.message(), 2);
  }
  if (flags.Has("help")) {
    std::cout << kUsage;
    return 0;
  }
  if (!flags.Has("trace") || !flags.Has("format"))
    return Fail("--trace and --format are needed", 2);
  TraceOptions o;
  Result<TraceFormat> format = ParseTraceFormat(flags.Get("format"));
  if (!format.ok()) return Fail(format.status().message(), 2);
  o.format = *format;
  try {
    o.block_tokens = std::stoi(flags.Get("block-tokens", "512"));
    o.azure_shared_prefix_tokens = std::stoll(flags.Get("azure-shared-prefix-tokens", "0"));
  } catch (const std::exception&) {
    return Fail("--block-tokens and --azure-shared-prefix-tokens take integers", 2);
  }
  Result<Trace> trace = ReadTrace(flags.Get("trace"), o);
  if (!trace.ok()) return Fail(trace.status().message(), 1);

  std::vector<std::string> policies;
  const std::string list = flags.Get("policies", "all");
  if (list == "all") {
    policies = EvictionPolicyNames();
    policies.push_back("belady");
  } else {
    size_t start = 0;
    while (start <= list.size()) {
      const size_t end = std::min(list.find(',', start), list.size());
      policies.push_back(list.substr(start, end - start));
      start = end + 1;
    }
  }
  Result<std::vector<uint64_t>> sizes =
      ParseTraceSizes(flags.Get("sizes", "0.01,0.05,0.1,0.25,0.5,inf"), trace->distinct_blocks);
  if (!sizes.ok()) return Fail(sizes.status().message(), 2);

  Result<ReplayResult> inf = ReplayTrace(*trace, "lru", kInfiniteBlocks);
  if (!inf.ok()) return Fail(inf.status().message(), 1);
  std::printf("%s: %zu requests, %llu block references, footprint %u blocks of %d tokens\n",
              flags.Get("trace").c_str(), trace->requests.size(),
              static_cast<unsigned long long>(inf->block_refs), trace->distinct_blocks,
              trace->block_tokens);
  std::printf("infinite cache: block hit ratio %.4f, token hit ratio %.4f\n\n", inf->hit_ratio(),
              inf->token_hit_ratio());
  std::printf("%-10s %12s %10s %10s %12s\n", "policy", "size_blocks", "hit_ratio", "token_hit",
              "Mrefs/s");
  nlohmann::json results = nlohmann::json::array();
  for (const std::string& p : policies) {
    for (uint64_t size : *sizes) {
      Result<ReplayResult> r = ReplayTrace(*trace, p, size);
      if (!r.ok()) return Fail(r.status().message(), 2);
      const uint64_t shown = size == kInfiniteBlocks ? trace->distinct_blocks : size;
      const double rate = r->seconds > 0 ? r->block_refs / r->seconds : 0;
      std::printf("%-10s %12llu %10.4f %10.4f %12.2f\n", p.c_str(),
                  static_cast<unsigned long long>(shown), r->hit_ratio(), r->token_hit_ratio(),
                  rate / 1e6);
      results.push_back({{"policy", p},
                         {"size_blocks", shown},
                         {"infinite", size == kInfiniteBlocks},
                         {"hit_ratio", r->hit_ratio()},
                         {"token_hit_ratio", r->token_hit_ratio()},
                         {"block_hits", r->block_hits},
                         {"refs_per_s", rate}});
    }
  }
  if (flags.Has("json")) {
    nlohmann::json out = {{"trace", flags.Get("trace")},
                          {"format", flags.Get("format")},
                          {"requests", trace->requests.size()},
                          {"block_tokens", trace->block_tokens},
                          {"footprint_blocks", trace->distinct_blocks},
                          {"block_refs", inf->block_refs},
                          {"infinite_hit_ratio", inf->hit_ratio()},
                          {"infinite_token_hit_ratio", inf->token_hit_ratio()},
                          {"results", results}};
    std::printf("%s\n", out.dump().c_str());
  }
  return 0;
}

}  // namespace
}  // namespace kvtier

int main(int argc, char** argv) { return kvtier::Main(argc, argv); }
