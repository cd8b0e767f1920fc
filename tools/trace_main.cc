// kvtier-trace: replays a serving trace through the eviction policies at a
// sweep of tier sizes, with prefix semantics and Belady's bound (DESIGN §5,
// §11; replay/policy_replay.h says what is counted), and through a scenario's
// whole tier stack (replay/tier_replay.h; its reports: replay/trace_report.h),
// on one node or on N with a shared tier (replay/cluster_replay.h).
#include <unistd.h>
#include <algorithm>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cache/admission.h"
#include "cache/eviction_policy.h"
#include "common/flags.h"
#include "replay/cluster_replay.h"
#include "replay/independent_replay.h"
#include "replay/policy_replay.h"
#include "replay/tier_replay.h"
#include "replay/trace.h"
#include "replay/trace_report.h"
#include "tools/trace_mrc.h"

namespace kvtier {
namespace {

const char kUsage[] =
    R"(usage: kvtier-trace --trace FILE --format mooncake|azure|csv [--policies LIST|all]
                    [--sizes LIST] [--scenario FILE] [--block-tokens N]
                    [--azure-shared-prefix-tokens N] [--json] [--csv FILE] [--markdown FILE]
                    [--plot DIR] [--semantics prefix|independent] [--admission LIST|all]
                    [--cluster-nodes LIST [--cluster-routing prefix|prefix:K|random]]

Replays FILE through each policy at each size and prints the block and token
(prefill saved) hit ratios, prefix semantics: a request hits only the leading
run of its blocks that are cached.

  --policies LIST   comma-separated: lru fifo lfu arc s3fifo sieve gdsf ttl-cost belady
                    (default all: every online policy and belady, the offline bound)
  --sizes LIST      tier sizes: blocks (4096), fractions of the footprint (0.1) or inf
                    (default 0.01,0.05,0.1,0.25,0.5,inf)
  --scenario FILE   also replay FILE's tier stack (JSON: capacities, bandwidths, prices,
                    model KV geometry; docs/traces.md) through the daemon's CacheManager
                    and report per-tier hits, bytes moved, TTFT saved and $ per million
                    tokens against no cache and everything in the top tier. With a
                    scenario the single-tier sweep runs only if --policies or --sizes
                    is given
  --tier-csv FILE   with --scenario: the tiers and the three ways' costs as CSV
  --cluster-nodes LIST
                    with --scenario: also replay N nodes for each N of LIST (e.g.
                    1,2,4,8,16), each node with its own copy of the scenario's stack and
                    CacheManager, over the scenario's shared tier if it has one
                    ("cluster": {"shared_tier": ...}); print per N the block and token
                    hit ratios, the bytes read from and written to the shared tier, the
                    busiest node's share of the load, $ per million input tokens and
                    the mean TTFT saved (replay/cluster_replay.h)
  --cluster-routing R
                    with --cluster-nodes: prefix (default: rendezvous hashing of the
                    first block's key), prefix:K (of the first K blocks' key) or random
  --tier-policies LIST|all
                    with --scenario: replay the stack again once per policy, every
                    tier running it, and compare hits, bytes moved, TTFT and cost
  --semantics S     how the sweep counts hits: prefix (default: a request hits only
                    the leading run of its cached blocks) or independent (every
                    cached block reference is a hit, as block caches and libCacheSim
                    count; replay/independent_replay.h)
  --write-refs FILE also write the block references in replay order, one per line:
                    the block's dense id + 1 (a plain-text trace for other
                    simulators, as bench/peer/libcachesim_check.py feeds libCacheSim)
  --admission LIST  admission filters each policy runs with, comma-separated: none
                    tinylfu ghost prefix, or all (default none). Each policy is
                    replayed with each filter, named policy+filter (lru+tinylfu);
                    belady, the bound, once (it decides admission itself). With
                    --tier-policies, each tier of the scenario runs the policy with
                    each filter too. "oracle" (not in all; not with --tier-policies)
                    is an offline bound for admission alone: it admits a block
                    exactly when the trace uses it again (whether, not when)
  --mrc             also feed every block reference to kvtierd's miss-ratio curve
                    estimator (SHARDS, cache/mrc.h) and print its hit ratio at each
                    size against exact LRU counting each reference on its own; with
                    --mrc the policy sweep runs only if --policies is given
  --block-tokens N  tokens per block for azure and csv traces (default 512)
  --azure-shared-prefix-tokens N
                    azure traces have no prefix hashes: give every request the same
                    first N tokens (a synthetic shared system prompt; default 0, none)
  --json            print one JSON object as the last line
  --csv FILE        also write the results as CSV
  --markdown FILE   also write Markdown tables: a row per policy, a column per size,
                    block / token hit ratio, and the slowest replay's speed; and the
                    scenario's tiers and costs
  --plot DIR        write DIR/miss_ratio_POLICY.dat and DIR/miss_ratio.gp and render
                    DIR/miss_ratio.svg with gnuplot: miss ratio over tier size, one line
                    per policy; with a scenario also DIR/occupancy.svg: each tier's used
                    fraction over the trace's time
)";

// A progress bar on stderr for sweeps that run longer than a second, when
// stderr is a terminal.
class Progress {
 public:
  explicit Progress(size_t total) : total_(total), tty_(isatty(2) != 0) {}
  ~Progress() {
    if (shown_) std::fprintf(stderr, "\n");
  }
  // One replay finished.
  void Step() {
    ++done_;
    Show(0);
  }
  // The running replay is `fraction` done (long replays report as they go).
  void Within(double fraction) { Show(fraction); }

 private:
  void Show(double within) {
    if (!tty_) return;
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    if (s < 1.0 && !shown_) return;
    shown_ = true;
    const double done = (static_cast<double>(done_) + within) / std::max<size_t>(total_, 1);
    const int width = 30, filled = std::min(width, static_cast<int>(width * done));
    std::fprintf(stderr, "\r[%s%s] %zu/%zu replays, %.0f s", std::string(filled, '#').c_str(),
                 std::string(width - filled, ' ').c_str(), done_, total_, s);
    std::fflush(stderr);
  }

  size_t total_, done_ = 0;
  bool tty_, shown_ = false;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

// Miss-ratio curves: one data block per policy (size, miss ratio), a gnuplot
// script, and the SVG it renders.
Status Plot(const std::string& dir, const std::string& trace,
            const std::vector<std::string>& policies, const nlohmann::json& results) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::IOError("cannot create " + dir + ": " + ec.message());
  {
    // One data file per policy (size, miss ratio), and the script.
    std::ofstream gp(dir + "/miss_ratio.gp");
    gp << "set terminal svg size 900,560 dynamic noenhanced background rgb 'white'\n"
       << "set output '" << dir << "/miss_ratio.svg'\n"
       << "set title \"" << std::filesystem::path(trace).filename().string()
       << ": block miss ratio by tier size (prefix semantics)\"\n"
       << "set xlabel 'tier size, blocks'\nset ylabel 'miss ratio'\nset logscale x\n"
       << "set key outside right\nset grid\nplot ";
    for (size_t i = 0; i < policies.size(); ++i) {
      const std::string file = dir + "/miss_ratio_" + policies[i] + ".dat";
      std::ofstream dat(file);
      for (const auto& r : results) {
        if (r["policy"] != policies[i]) continue;
        dat << r["size_blocks"] << " " << 1.0 - r["hit_ratio"].get<double>() << "\n";
      }
      if (!dat) return Status::IOError("cannot write " + file);
      gp << (i ? ", " : "") << "'" << file << "' using 1:2 with linespoints title '" << policies[i]
         << "'";
    }
    gp << "\n";
    if (!gp) return Status::IOError("cannot write " + dir + "/miss_ratio.gp");
  }
  return RunGnuplot(dir + "/miss_ratio.gp");
}

// "a,b,c" → {a, b, c}; "" → {}.
std::vector<std::string> SplitList(const std::string& list) {
  std::vector<std::string> out;
  for (size_t start = 0; start < list.size();) {
    const size_t end = std::min(list.find(',', start), list.size());
    out.push_back(list.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

int Fail(const std::string& msg, int code) { return ToolFail("kvtier-trace", msg, code); }

// --cluster-nodes and --cluster-routing: the node counts to replay and how
// requests are routed. kInvalidArgument naming the flag.
Status ParseClusterFlags(const FlagSet& flags, std::vector<int>* nodes,
                         ClusterReplayOptions* options) {
  if (flags.Has("cluster-routing") && !flags.Has("cluster-nodes")) {
    return Status::InvalidArgument("--cluster-routing needs --cluster-nodes");
  }
  if (!flags.Has("cluster-nodes")) return Status::Ok();
  if (!flags.Has("scenario")) return Status::InvalidArgument("--cluster-nodes needs --scenario");
  for (const std::string& item : SplitList(flags.Get("cluster-nodes"))) {
    Result<int64_t> n = ParseInt(item);
    if (!n.ok() || *n < 1 || *n > kMaxClusterNodes) {
      return Status::InvalidArgument("--cluster-nodes: '" + item +
                                     "' is not a node count from 1 to " +
                                     std::to_string(kMaxClusterNodes));
    }
    nodes->push_back(static_cast<int>(*n));
  }
  if (nodes->empty()) return Status::InvalidArgument("--cluster-nodes needs at least one count");
  if (Status s = ParseClusterRouting(flags.Get("cluster-routing", "prefix"), options); !s.ok()) {
    return Status::InvalidArgument("--cluster-routing: " + s.message());
  }
  return Status::Ok();
}

int Main(int argc, char** argv) {
  FlagSet flags;
  for (const char* f :
       {"trace", "format", "policies", "sizes", "block-tokens", "azure-shared-prefix-tokens", "csv",
        "markdown", "plot", "scenario", "tier-policies", "tier-csv", "semantics", "write-refs",
        "admission", "cluster-nodes", "cluster-routing"}) {
    flags.Value(f);
  }
  flags.Bool("json");
  flags.Bool("mrc");
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
  std::vector<std::string> admissions = SplitList(flags.Get("admission", "none"));
  if (admissions == std::vector<std::string>{"all"}) admissions = AdmissionFilterNames();
  if (admissions.empty()) return Fail("--admission needs at least one filter", 2);
  for (const std::string& a : admissions) {
    if (a != kOracleAdmission &&
        NewAdmissionFilter(a, AdmissionOptions{.capacity_blocks = 1}) == nullptr) {
      std::string known;
      for (const std::string& n : AdmissionFilterNames()) known += (known.empty() ? "" : ", ") + n;
      return Fail("unknown admission filter '" + a + "' (known: " + known + ", and " +
                      kOracleAdmission + ", the offline bound)",
                  2);
    }
  }
  std::vector<int> cluster_nodes;
  ClusterReplayOptions cluster_options;
  if (Status s = ParseClusterFlags(flags, &cluster_nodes, &cluster_options); !s.ok()) {
    return Fail(s.message(), 2);
  }
  Result<Trace> trace = ReadTrace(flags.Get("trace"), o);
  if (!trace.ok()) return Fail(trace.status().message(), 1);
  if (flags.Has("write-refs")) {
    // Ids from 1: some simulators treat object id 0 as "none".
    std::ofstream refs(flags.Get("write-refs"));
    for (const TraceRequest& req : trace->requests) {
      for (uint32_t i = 0; i < req.num_blocks; ++i)
        refs << trace->blocks[req.first_block + i] + 1 << '\n';
    }
    if (!refs) return Fail("cannot write " + flags.Get("write-refs"), 1);
  }

  std::vector<std::string> policies = SplitList(flags.Get("policies", "all"));
  if (policies == std::vector<std::string>{"all"}) {
    policies = EvictionPolicyNames();
    policies.push_back("belady");
  }
  // The scenario's stack again with every tier running one policy.
  std::vector<std::string> tier_policies = SplitList(flags.Get("tier-policies", ""));
  if (tier_policies == std::vector<std::string>{"all"}) tier_policies = EvictionPolicyNames();
  if (!tier_policies.empty() && !flags.Has("scenario")) {
    return Fail("--tier-policies needs --scenario", 2);
  }
  if (flags.Has("tier-csv") && !flags.Has("scenario")) {
    return Fail("--tier-csv needs --scenario", 2);
  }
  if (policies.empty() || (flags.Has("tier-policies") && tier_policies.empty())) {
    return Fail("--policies and --tier-policies need at least one policy", 2);
  }
  for (const std::string& p : tier_policies) {
    if (NewEvictionPolicy(p) == nullptr) return Fail("unknown eviction policy '" + p + "'", 2);
  }
  if (!tier_policies.empty() &&
      std::find(admissions.begin(), admissions.end(), kOracleAdmission) != admissions.end()) {
    return Fail(std::string("--admission ") + kOracleAdmission +
                    " is a bound for the one-tier sweep; the tier replay runs the daemon's filters",
                2);
  }
  Result<std::vector<uint64_t>> sizes =
      ParseTraceSizes(flags.Get("sizes", "0.01,0.05,0.1,0.25,0.5,inf"), trace->distinct_blocks);
  if (!sizes.ok()) return Fail(sizes.status().message(), 2);

  // With a scenario the sweep runs only when asked for.
  // So with --mrc, which takes --sizes for itself.
  const bool sweep = flags.Has("policies") ||
                     (!flags.Has("mrc") && (!flags.Has("scenario") || flags.Has("sizes")));
  const std::string semantics = flags.Get("semantics", "prefix");
  if (semantics != "prefix" && semantics != "independent") {
    return Fail("--semantics: '" + semantics + "' is neither prefix nor independent", 2);
  }
  if (semantics != "prefix" && admissions != std::vector<std::string>{"none"}) {
    return Fail("--admission runs with --semantics prefix only", 2);
  }
  auto replay = [&](const Trace& t, const std::string& policy, uint64_t size,
                    const std::string& admission) {
    return semantics == "prefix" ? ReplayTrace(t, policy, size, admission)
                                 : ReplayTraceIndependent(t, policy, size);
  };
  std::optional<TierScenario> scenario;
  if (flags.Has("scenario")) {
    Result<TierScenario> sc = ReadTierScenario(flags.Get("scenario"));
    if (!sc.ok()) return Fail(sc.status().message(), 2);
    scenario = std::move(*sc);
  }
  // Every cluster size is checked against the scenario and the trace before
  // anything is replayed (a shared tier's share per node must hold a block).
  for (int n : cluster_nodes) {
    ClusterReplayOptions c = cluster_options;
    c.nodes = n;
    if (Status s = CheckClusterReplay(*trace, *scenario, c); !s.ok()) {
      return Fail("--cluster-nodes " + std::to_string(n) + ": " + s.message(), 2);
    }
  }

  Result<ReplayResult> inf = ReplayTrace(*trace, "lru", kInfiniteBlocks);
  if (!inf.ok()) return Fail(inf.status().message(), 1);
  std::printf("%s: %zu requests, %llu block references, footprint %u blocks of %d tokens\n",
              flags.Get("trace").c_str(), trace->requests.size(),
              static_cast<unsigned long long>(inf->block_refs), trace->distinct_blocks,
              trace->block_tokens);
  std::printf("infinite cache: block hit ratio %.4f, token hit ratio %.4f\n\n", inf->hit_ratio(),
              inf->token_hit_ratio());
  // The name column fits the longest policy+filter name.
  int name_width = 10;
  for (const std::string& p : policies) {
    for (const std::string& a : admissions) {
      const size_t len = p.size() + (a == "none" || p == "belady" ? 0 : a.size() + 1);
      name_width = std::max(name_width, static_cast<int>(len));
    }
  }
  if (sweep) {
    std::printf("%-*s %12s %10s %10s %12s\n", name_width, "policy", "size_blocks", "hit_ratio",
                "token_hit", "Mrefs/s");
  } else {
    policies.clear();
  }
  // Each policy with each admission filter; belady, the bound, once.
  struct Run {
    std::string policy, admission, name;
  };
  std::vector<Run> runs;
  std::vector<std::string> names;  // the table's rows: policy or policy+filter
  for (const std::string& p : policies) {
    for (const std::string& a : admissions) {
      if (p == "belady" && a != admissions.front()) continue;
      const std::string filter = p == "belady" ? "none" : a;
      runs.push_back({p, filter, filter == "none" ? p : p + "+" + filter});
      names.push_back(runs.back().name);
    }
  }
  nlohmann::json results = nlohmann::json::array();
  Progress progress(runs.size() * sizes->size() + (scenario ? 1 : 0) +
                    tier_policies.size() * admissions.size() + cluster_nodes.size());
  for (const Run& run : runs) {
    const std::string& p = run.name;
    for (uint64_t size : *sizes) {
      Result<ReplayResult> r = replay(*trace, run.policy, size, run.admission);
      progress.Step();
      if (!r.ok()) return Fail(r.status().message(), 2);
      const uint64_t shown = size == kInfiniteBlocks ? trace->distinct_blocks : size;
      const double rate = r->seconds > 0 ? r->block_refs / r->seconds : 0;
      std::printf("%-*s %12llu %10.4f %10.4f %12.2f\n", name_width, p.c_str(),
                  static_cast<unsigned long long>(shown), r->hit_ratio(), r->token_hit_ratio(),
                  rate / 1e6);
      results.push_back({{"policy", p},
                         {"eviction", run.policy},
                         {"admission", run.admission},
                         {"size_blocks", shown},
                         {"infinite", size == kInfiniteBlocks},
                         {"hit_ratio", r->hit_ratio()},
                         {"token_hit_ratio", r->token_hit_ratio()},
                         {"block_hits", r->block_hits},
                         {"refs_per_s", rate}});
    }
  }
  std::optional<TierReplayResult> tiered;
  if (scenario) {
    Result<TierReplayResult> r =
        ReplayTiers(*trace, *scenario, [&](double f) { progress.Within(f); });
    progress.Step();
    if (!r.ok()) return Fail(r.status().message(), 1);
    tiered = std::move(*r);
    PrintScenario(*scenario, *tiered);
  }
  TierPolicyRuns by_policy;
  for (const std::string& p : tier_policies) {
    for (const std::string& a : admissions) {
      TierScenario sc = *scenario;
      for (ScenarioTier& t : sc.tiers) {
        t.policy = p;
        t.admission = a;
      }
      Result<TierReplayResult> r = ReplayTiers(*trace, sc, [&](double f) { progress.Within(f); });
      progress.Step();
      if (!r.ok()) return Fail(r.status().message(), 1);
      by_policy.emplace_back(a == "none" ? p : p + "+" + a, std::move(*r));
    }
  }
  if (!by_policy.empty()) PrintTierPolicies(by_policy);
  ClusterRuns cluster_runs;
  for (int n : cluster_nodes) {
    ClusterReplayOptions c = cluster_options;
    c.nodes = n;
    Result<ClusterReplayResult> r =
        ReplayCluster(*trace, *scenario, c, [&](double f) { progress.Within(f); });
    progress.Step();
    if (!r.ok()) return Fail(r.status().message(), 1);
    cluster_runs.push_back(std::move(*r));
  }
  if (!cluster_runs.empty()) PrintCluster(*scenario, cluster_runs);
  if (flags.Has("csv")) {
    std::ofstream csv(flags.Get("csv"));
    csv << "policy,size_blocks,infinite,hit_ratio,token_hit_ratio,block_hits,refs_per_s\n";
    for (const auto& r : results) {
      csv << r["policy"].get<std::string>() << "," << r["size_blocks"] << ","
          << (r["infinite"].get<bool>() ? 1 : 0) << "," << r["hit_ratio"] << ","
          << r["token_hit_ratio"] << "," << r["block_hits"] << "," << r["refs_per_s"] << "\n";
    }
    if (!csv) return Fail("cannot write " + flags.Get("csv"), 1);
  }
  if (tiered && flags.Has("tier-csv")) {
    std::ofstream csv(flags.Get("tier-csv"));
    WriteTierCsv(csv, *tiered);
    if (!csv) return Fail("cannot write " + flags.Get("tier-csv"), 1);
  }
  if (flags.Has("markdown")) {
    std::ofstream md(flags.Get("markdown"));
    if (sweep) {
      md << "| policy |";
      for (uint64_t size : *sizes) {
        md << " " << (size == kInfiniteBlocks ? std::string("inf") : std::to_string(size)) << " |";
      }
      md << " slowest replay |\n|---|";
      for (size_t i = 0; i <= sizes->size(); ++i) md << "---|";
      md << "\n";
      for (const std::string& p : names) {
        md << "| " << p << " |";
        double slowest = 0;
        for (const auto& r : results) {
          if (r["policy"] != p) continue;
          char cell[64];
          std::snprintf(cell, sizeof(cell), " %.4f / %.4f |", r["hit_ratio"].get<double>(),
                        r["token_hit_ratio"].get<double>());
          md << cell;
          const double rate = r["refs_per_s"].get<double>();
          slowest = slowest == 0 ? rate : std::min(slowest, rate);
        }
        char cell[64];
        std::snprintf(cell, sizeof(cell), " %.1f M refs/s |\n", slowest / 1e6);
        md << cell;
      }
    }
    if (tiered) ScenarioMarkdown(md, *scenario, *tiered);
    if (!by_policy.empty()) TierPoliciesMarkdown(md, by_policy);
    if (!cluster_runs.empty()) ClusterMarkdown(md, *scenario, cluster_runs);
    if (!md) return Fail("cannot write " + flags.Get("markdown"), 1);
  }
  // A plot that fails (no gnuplot) fails the run, after the JSON is out.
  Status plotted;
  if (flags.Has("plot")) {
    if (sweep) plotted = Plot(flags.Get("plot"), flags.Get("trace"), names, results);
    if (tiered && plotted.ok()) {
      plotted = PlotOccupancy(flags.Get("plot"), flags.Get("trace"), *scenario, *tiered);
    }
  }
  std::optional<MrcCheck> mrc;
  if (flags.Has("mrc")) {
    Result<MrcCheck> m = CheckMrc(*trace, *sizes);
    if (!m.ok()) return Fail(m.status().message(), 2);
    mrc = std::move(*m);
    PrintMrcCheck(*mrc);
  }
  if (flags.Has("json")) {
    nlohmann::json out = {{"trace", flags.Get("trace")},
                          {"format", flags.Get("format")},
                          {"semantics", semantics},
                          {"requests", trace->requests.size()},
                          {"block_tokens", trace->block_tokens},
                          {"footprint_blocks", trace->distinct_blocks},
                          {"block_refs", inf->block_refs},
                          {"infinite_hit_ratio", inf->hit_ratio()},
                          {"infinite_token_hit_ratio", inf->token_hit_ratio()},
                          {"results", results}};
    if (tiered) out["scenario"] = ScenarioJson(*scenario, *tiered);
    if (mrc) out["mrc"] = MrcCheckJson(*mrc);
    if (!by_policy.empty()) out["tier_policies"] = TierPoliciesJson(by_policy);
    if (!cluster_runs.empty()) out["cluster"] = ClusterJson(cluster_runs);
    std::printf("%s\n", out.dump().c_str());
  }
  if (!plotted.ok()) return Fail(plotted.message(), 1);
  return 0;
}

}  // namespace
}  // namespace kvtier

int main(int argc, char** argv) { return kvtier::Main(argc, argv); }
