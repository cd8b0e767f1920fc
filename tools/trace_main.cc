// kvtier-trace: replays a serving trace through the eviction policies at a
// sweep of tier sizes, with prefix semantics and Belady's bound (DESIGN §5,
// §11; cache/trace_replay.h says what is counted).
#include <unistd.h>

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

#include "cache/eviction_policy.h"
#include "cache/tier_replay.h"
#include "cache/trace.h"
#include "cache/trace_replay.h"
#include "tools/flags.h"

namespace kvtier {
namespace {

const char kUsage[] =
    R"(usage: kvtier-trace --trace FILE --format mooncake|azure|csv [--policies LIST|all]
                    [--sizes LIST] [--scenario FILE] [--block-tokens N]
                    [--azure-shared-prefix-tokens N] [--json] [--csv FILE] [--markdown FILE]
                    [--plot DIR]

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
  --tier-policies LIST|all
                    with --scenario: replay the stack again once per policy, every
                    tier running it, and compare hits, bytes moved, TTFT and cost
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

// Renders a gnuplot script (its data written beside it).
Status RunGnuplot(const std::string& script) {
  const std::string cmd = "gnuplot '" + script + "' 2>&1";
  if (std::system(cmd.c_str()) != 0) {
    return Status::Unavailable("gnuplot failed or is not installed (tools/deps.sh --bench); " +
                               script + " and its data are written");
  }
  return Status::Ok();
}

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

// "12.3 GiB": binary units for capacities and bytes moved.
std::string Bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  while (b >= 1024 && u < 6) {
    b /= 1024;
    ++u;
  }
  char out[32];
  std::snprintf(out, sizeof(out), u == 0 ? "%.0f %s" : "%.1f %s", b, units[u]);
  return out;
}

double Share(double part, double whole) { return whole > 0 ? part / whole : 0; }

std::string FormatSeconds(double s) {
  char out[32];
  std::snprintf(out, sizeof(out), "%g s", s);
  return out;
}

double MovedTotal(const TierReplayResult& r) {
  double total = 0;
  for (const auto& row : r.moved_bytes) {
    for (double b : row) total += b;
  }
  return total;
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

nlohmann::json CostJson(const CostSummary& c) {
  return {{"tier_usd", c.tier_usd},
          {"tier_usd_used", c.tier_usd_used},
          {"gpu_s", c.gpu_s},
          {"gpu_usd", c.gpu_usd},
          {"total_usd", c.total_usd()},
          {"usd_per_mtok", c.usd_per_mtok()},
          {"usd_per_mtok_used", c.usd_per_mtok_used()},
          {"hit_tokens", c.hit_tokens},
          {"token_hit_ratio", Share(c.hit_tokens, c.input_tokens)},
          {"mean_ttft_s", c.mean_ttft_s}};
}

nlohmann::json ScenarioJson(const TierScenario& sc, const TierReplayResult& r) {
  nlohmann::json tiers = nlohmann::json::array();
  for (const TierReplayTier& t : r.tiers) {
    tiers.push_back({{"name", t.name},
                     {"policy", t.policy},
                     {"capacity_bytes", t.capacity_bytes},
                     {"drain_time_s", t.drain_time_s},
                     {"hit_blocks", t.hit_blocks},
                     {"hit_share", Share(t.hit_blocks, r.block_hits)},
                     {"hit_tokens", t.hit_tokens},
                     {"hit_bytes", t.hit_bytes},
                     {"placed_blocks", t.placed_blocks},
                     {"placed_bytes", t.placed_bytes},
                     {"peak_used_bytes", t.peak_used_bytes},
                     {"mean_used_bytes", t.mean_used_bytes},
                     {"usd", t.usd},
                     {"usd_used", t.usd_used}});
  }
  nlohmann::json moved = nlohmann::json::array();
  for (size_t i = 0; i < r.moved_bytes.size(); ++i) {
    for (size_t j = 0; j < r.moved_bytes[i].size(); ++j) {
      if (r.moved_bytes[i][j] > 0) {
        moved.push_back(
            {{"from", r.tiers[i].name}, {"to", r.tiers[j].name}, {"bytes", r.moved_bytes[i][j]}});
      }
    }
  }
  nlohmann::json occupancy = nlohmann::json::array();
  for (const OccupancySample& o : r.occupancy) {
    occupancy.push_back({{"time_s", o.time_s}, {"used_bytes", o.used_bytes}});
  }
  return {{"name", sc.name},
          {"model", sc.model},
          {"kv_bytes_per_token", sc.kv_bytes_per_token},
          {"ttl_s", sc.ttl_ms / 1000.0},
          {"duration_s", r.duration_s},
          {"requests", r.requests},
          {"block_refs", r.block_refs},
          {"block_hits", r.block_hits},
          {"hit_ratio", Share(r.block_hits, r.block_refs)},
          {"token_hit_ratio", Share(r.hit_tokens, r.tokens)},
          {"tiers", tiers},
          {"moved", moved},
          {"promotions", r.promotions},
          {"demotions", r.demotions},
          {"remat_drops", r.remat_drops},
          {"drops", r.drops},
          {"expired", r.expired},
          {"insert_failures", r.insert_failures},
          {"ttft_saved_s", r.ttft_saved_s},
          {"ttft_saved_ratio", Share(r.ttft_saved_s, r.no_cache.mean_ttft_s * r.requests)},
          {"costs",
           {{"no_cache", CostJson(r.no_cache)},
            {"tiered", CostJson(r.tiered)},
            {"all_in_top_tier", CostJson(r.all_in_top)}}},
          {"occupancy", occupancy},
          {"replay_seconds", r.seconds}};
}

void PrintScenario(const TierScenario& sc, const TierReplayResult& r) {
  std::printf(
      "\nscenario %s: %s, %s of KV per token, %llu requests over %.1f min, replayed in "
      "%.1f s\n",
      sc.name.c_str(), sc.model.c_str(), Bytes(sc.kv_bytes_per_token).c_str(),
      static_cast<unsigned long long>(r.requests), r.duration_s / 60, r.seconds);
  std::printf("%-8s %-9s %10s %9s %10s %9s %10s %10s %10s %9s\n", "tier", "policy", "capacity",
              "drain_s", "hit_blocks", "hit_share", "placed", "peak_used", "mean_used", "usd");
  for (const TierReplayTier& t : r.tiers) {
    std::printf("%-8s %-9s %10s %9.3g %10llu %9.3f %10llu %10s %10s %9.2f\n", t.name.c_str(),
                t.policy.c_str(), Bytes(t.capacity_bytes).c_str(), t.drain_time_s,
                static_cast<unsigned long long>(t.hit_blocks), Share(t.hit_blocks, r.block_hits),
                static_cast<unsigned long long>(t.placed_blocks), Bytes(t.peak_used_bytes).c_str(),
                Bytes(t.mean_used_bytes).c_str(), t.usd);
  }
  std::printf("moved:");
  bool any = false;
  for (size_t i = 0; i < r.moved_bytes.size(); ++i) {
    for (size_t j = 0; j < r.moved_bytes[i].size(); ++j) {
      if (r.moved_bytes[i][j] <= 0) continue;
      std::printf(" %s->%s %s", r.tiers[i].name.c_str(), r.tiers[j].name.c_str(),
                  Bytes(r.moved_bytes[i][j]).c_str());
      any = true;
    }
  }
  std::printf("%s\n", any ? "" : " nothing");
  std::printf(
      "promotions %llu, demotions %llu, dropped for recompute %llu, dropped with no "
      "room below %llu, expired %llu\n",
      static_cast<unsigned long long>(r.promotions), static_cast<unsigned long long>(r.demotions),
      static_cast<unsigned long long>(r.remat_drops), static_cast<unsigned long long>(r.drops),
      static_cast<unsigned long long>(r.expired));
  std::printf("%-16s %9s %11s %8s %9s %9s %8s %9s %9s\n", "", "token_hit", "mean_ttft_s", "gpu_s",
              "gpu_usd", "tier_usd", "usd/Mtok", "tier_used", "used/Mtok");
  const std::pair<const char*, const CostSummary*> rows[] = {
      {"no cache", &r.no_cache}, {"tiered", &r.tiered}, {"all in top tier", &r.all_in_top}};
  for (const auto& [name, c] : rows) {
    std::printf("%-16s %9.4f %11.3f %8.0f %9.2f %9.2f %8.4f %9.2f %9.4f\n", name,
                Share(c->hit_tokens, c->input_tokens), c->mean_ttft_s, c->gpu_s, c->gpu_usd,
                c->tier_usd, c->usd_per_mtok(), c->tier_usd_used, c->usd_per_mtok_used());
  }
  std::printf("TTFT saved against no cache: %.0f s over the trace (%.1f%%)\n", r.ttft_saved_s,
              100 * Share(r.ttft_saved_s, r.no_cache.mean_ttft_s * r.requests));
}

void ScenarioMarkdown(std::ostream& md, const TierScenario& sc, const TierReplayResult& r) {
  char line[512];
  std::snprintf(line, sizeof(line),
                "\nScenario `%s`: %s, %s of KV per token, TTL %s; %llu requests over %.1f min.\n\n",
                sc.name.c_str(), sc.model.c_str(), Bytes(sc.kv_bytes_per_token).c_str(),
                sc.ttl_ms > 0 ? (FormatSeconds(sc.ttl_ms / 1000.0)).c_str() : "none",
                static_cast<unsigned long long>(r.requests), r.duration_s / 60);
  md << line;
  md << "| tier | policy | capacity | drain time | hit share | placed | peak used | mean used | "
        "$ over the trace |\n|---|---|---|---|---|---|---|---|---|\n";
  for (const TierReplayTier& t : r.tiers) {
    std::snprintf(line, sizeof(line), "| %s | %s | %s | %.3g s | %.3f | %llu | %s | %s | %.2f |\n",
                  t.name.c_str(), t.policy.c_str(), Bytes(t.capacity_bytes).c_str(), t.drain_time_s,
                  Share(t.hit_blocks, r.block_hits),
                  static_cast<unsigned long long>(t.placed_blocks),
                  Bytes(t.peak_used_bytes).c_str(), Bytes(t.mean_used_bytes).c_str(), t.usd);
    md << line;
  }
  md << "\nMoved between tiers:";
  bool any = false;
  for (size_t i = 0; i < r.moved_bytes.size(); ++i) {
    for (size_t j = 0; j < r.moved_bytes[i].size(); ++j) {
      if (r.moved_bytes[i][j] <= 0) continue;
      md << (any ? ", " : " ") << r.tiers[i].name << " → " << r.tiers[j].name << " "
         << Bytes(r.moved_bytes[i][j]);
      any = true;
    }
  }
  std::snprintf(
      line, sizeof(line),
      "%s. Promotions %llu, demotions %llu, dropped for recompute %llu, dropped with "
      "no room below %llu, expired %llu.\n\n",
      any ? "" : " nothing", static_cast<unsigned long long>(r.promotions),
      static_cast<unsigned long long>(r.demotions), static_cast<unsigned long long>(r.remat_drops),
      static_cast<unsigned long long>(r.drops), static_cast<unsigned long long>(r.expired));
  md << line;
  md << "| | token hit ratio | mean TTFT | GPU time | GPU $ | tiers $, provisioned | $/M input "
        "tokens | tiers $, used | $/M input tokens, used |\n"
        "|---|---|---|---|---|---|---|---|---|\n";
  const std::pair<const char*, const CostSummary*> rows[] = {
      {"no cache", &r.no_cache}, {"tiered", &r.tiered}, {"all in the top tier", &r.all_in_top}};
  for (const auto& [name, c] : rows) {
    std::snprintf(line, sizeof(line),
                  "| %s | %.4f | %.3f s | %.0f s | %.2f | %.2f | %.4f | %.2f | %.4f |\n", name,
                  Share(c->hit_tokens, c->input_tokens), c->mean_ttft_s, c->gpu_s, c->gpu_usd,
                  c->tier_usd, c->usd_per_mtok(), c->tier_usd_used, c->usd_per_mtok_used());
    md << line;
  }
  std::snprintf(line, sizeof(line), "\nTTFT saved against no cache: %.1f%%.\n",
                100 * Share(r.ttft_saved_s, r.no_cache.mean_ttft_s * r.requests));
  md << line;
}

// Tier occupancy over time: each tier's used fraction of its capacity.
Status PlotOccupancy(const std::string& dir, const std::string& trace, const TierScenario& sc,
                     const TierReplayResult& r) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::IOError("cannot create " + dir + ": " + ec.message());
  const std::string dat = dir + "/occupancy.dat", script = dir + "/occupancy.gp";
  {
    std::ofstream out(dat);
    out << "# minutes";
    for (const TierReplayTier& t : r.tiers) out << " " << t.name;
    out << "\n";
    for (const OccupancySample& o : r.occupancy) {
      out << o.time_s / 60;
      for (size_t i = 0; i < r.tiers.size(); ++i) {
        out << " " << Share(o.used_bytes[i], r.tiers[i].capacity_bytes);
      }
      out << "\n";
    }
    if (!out) return Status::IOError("cannot write " + dat);
  }
  {
    std::ofstream gp(script);
    gp << "set terminal svg size 900,560 dynamic noenhanced background rgb 'white'\n"
       << "set output '" << dir << "/occupancy.svg'\n"
       << "set title \"" << std::filesystem::path(trace).filename().string() << ", scenario "
       << sc.name << ": tier occupancy\"\n"
       << "set xlabel 'trace time, minutes'\nset ylabel 'used fraction of capacity'\n"
       << "set yrange [0:1.05]\nset key outside right\nset grid\nplot ";
    for (size_t i = 0; i < r.tiers.size(); ++i) {
      gp << (i ? ", " : "") << "'" << dat << "' using 1:" << i + 2 << " with lines lw 2 title '"
         << r.tiers[i].name << " (" << Bytes(r.tiers[i].capacity_bytes) << ")'";
    }
    gp << "\n";
    if (!gp) return Status::IOError("cannot write " + script);
  }
  return RunGnuplot(script);
}

// --tier-csv: a row per tier, then a row per way of serving the trace.
void WriteTierCsv(std::ostream& csv, const TierReplayResult& r) {
  csv << "row,name,policy,capacity_bytes,drain_time_s,hit_blocks,hit_share,hit_bytes,"
         "placed_blocks,peak_used_bytes,mean_used_bytes,usd,usd_used\n";
  for (const TierReplayTier& t : r.tiers) {
    csv << "tier," << t.name << "," << t.policy << "," << t.capacity_bytes << "," << t.drain_time_s
        << "," << t.hit_blocks << "," << Share(t.hit_blocks, r.block_hits) << "," << t.hit_bytes
        << "," << t.placed_blocks << "," << t.peak_used_bytes << "," << t.mean_used_bytes << ","
        << t.usd << "," << t.usd_used << "\n";
  }
  csv << "row,name,token_hit_ratio,mean_ttft_s,gpu_s,gpu_usd,tier_usd,usd_per_mtok,"
         "tier_usd_used,usd_per_mtok_used\n";
  const std::pair<const char*, const CostSummary*> ways[] = {
      {"no_cache", &r.no_cache}, {"tiered", &r.tiered}, {"all_in_top_tier", &r.all_in_top}};
  for (const auto& [name, c] : ways) {
    csv << "cost," << name << "," << Share(c->hit_tokens, c->input_tokens) << "," << c->mean_ttft_s
        << "," << c->gpu_s << "," << c->gpu_usd << "," << c->tier_usd << "," << c->usd_per_mtok()
        << "," << c->tier_usd_used << "," << c->usd_per_mtok_used() << "\n";
  }
}

// One row of the --tier-policies comparison.
nlohmann::json TierPolicyRow(const TierReplayResult& r) {
  nlohmann::json shares = nlohmann::json::object();
  for (const TierReplayTier& t : r.tiers) shares[t.name] = Share(t.hit_blocks, r.block_hits);
  return {{"hit_ratio", Share(r.block_hits, r.block_refs)},
          {"token_hit_ratio", Share(r.hit_tokens, r.tokens)},
          {"hit_shares", shares},
          {"moved_bytes", MovedTotal(r)},
          {"remat_drops", r.remat_drops},
          {"mean_ttft_s", r.tiered.mean_ttft_s},
          {"ttft_saved_ratio", Share(r.ttft_saved_s, r.no_cache.mean_ttft_s * r.requests)},
          {"usd_per_mtok", r.tiered.usd_per_mtok()},
          {"usd_per_mtok_used", r.tiered.usd_per_mtok_used()}};
}

void PrintTierPolicies(const std::vector<std::pair<std::string, TierReplayResult>>& rows) {
  std::printf("\nthe same stack, every tier running one policy:\n");
  std::printf("%-10s %9s %10s %11s %11s %9s %9s\n", "policy", "token_hit", "moved", "mean_ttft_s",
              "ttft_saved", "usd/Mtok", "used/Mtok");
  for (const auto& [p, r] : rows) {
    std::printf("%-10s %9.4f %10s %11.3f %10.1f%% %9.4f %9.4f\n", p.c_str(),
                Share(r.hit_tokens, r.tokens), Bytes(MovedTotal(r)).c_str(), r.tiered.mean_ttft_s,
                100 * Share(r.ttft_saved_s, r.no_cache.mean_ttft_s * r.requests),
                r.tiered.usd_per_mtok(), r.tiered.usd_per_mtok_used());
  }
}

void TierPoliciesMarkdown(std::ostream& md,
                          const std::vector<std::pair<std::string, TierReplayResult>>& rows) {
  md << "\nThe same stack with every tier running one policy:\n\n"
        "| policy | token hit ratio | bytes moved between tiers | mean TTFT | TTFT saved | "
        "$/M input tokens | $/M, used |\n|---|---|---|---|---|---|---|\n";
  for (const auto& [p, r] : rows) {
    char line[256];
    std::snprintf(line, sizeof(line), "| %s | %.4f | %s | %.3f s | %.1f%% | %.4f | %.4f |\n",
                  p.c_str(), Share(r.hit_tokens, r.tokens), Bytes(MovedTotal(r)).c_str(),
                  r.tiered.mean_ttft_s,
                  100 * Share(r.ttft_saved_s, r.no_cache.mean_ttft_s * r.requests),
                  r.tiered.usd_per_mtok(), r.tiered.usd_per_mtok_used());
    md << line;
  }
}

int Fail(const std::string& msg, int code) {
  std::cerr << "kvtier-trace: " << msg << "\n";
  if (code == 2) std::cerr << "run kvtier-trace --help for usage\n";
  return code;
}

int Main(int argc, char** argv) {
  FlagSet flags;
  for (const char* f :
       {"trace", "format", "policies", "sizes", "block-tokens", "azure-shared-prefix-tokens", "csv",
        "markdown", "plot", "scenario", "tier-policies", "tier-csv"}) {
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
  Result<std::vector<uint64_t>> sizes =
      ParseTraceSizes(flags.Get("sizes", "0.01,0.05,0.1,0.25,0.5,inf"), trace->distinct_blocks);
  if (!sizes.ok()) return Fail(sizes.status().message(), 2);

  // With a scenario the sweep runs only when asked for.
  const bool sweep = !flags.Has("scenario") || flags.Has("policies") || flags.Has("sizes");
  std::optional<TierScenario> scenario;
  if (flags.Has("scenario")) {
    Result<TierScenario> sc = ReadTierScenario(flags.Get("scenario"));
    if (!sc.ok()) return Fail(sc.status().message(), 2);
    scenario = std::move(*sc);
  }

  Result<ReplayResult> inf = ReplayTrace(*trace, "lru", kInfiniteBlocks);
  if (!inf.ok()) return Fail(inf.status().message(), 1);
  std::printf("%s: %zu requests, %llu block references, footprint %u blocks of %d tokens\n",
              flags.Get("trace").c_str(), trace->requests.size(),
              static_cast<unsigned long long>(inf->block_refs), trace->distinct_blocks,
              trace->block_tokens);
  std::printf("infinite cache: block hit ratio %.4f, token hit ratio %.4f\n\n", inf->hit_ratio(),
              inf->token_hit_ratio());
  if (sweep) {
    std::printf("%-10s %12s %10s %10s %12s\n", "policy", "size_blocks", "hit_ratio", "token_hit",
                "Mrefs/s");
  } else {
    policies.clear();
  }
  nlohmann::json results = nlohmann::json::array();
  Progress progress(policies.size() * sizes->size() + (scenario ? 1 : 0) + tier_policies.size());
  for (const std::string& p : policies) {
    for (uint64_t size : *sizes) {
      Result<ReplayResult> r = ReplayTrace(*trace, p, size);
      progress.Step();
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
  std::optional<TierReplayResult> tiered;
  if (scenario) {
    Result<TierReplayResult> r =
        ReplayTiers(*trace, *scenario, [&](double f) { progress.Within(f); });
    progress.Step();
    if (!r.ok()) return Fail(r.status().message(), 1);
    tiered = std::move(*r);
    PrintScenario(*scenario, *tiered);
  }
  std::vector<std::pair<std::string, TierReplayResult>> by_policy;
  for (const std::string& p : tier_policies) {
    TierScenario sc = *scenario;
    for (ScenarioTier& t : sc.tiers) t.policy = p;
    Result<TierReplayResult> r = ReplayTiers(*trace, sc, [&](double f) { progress.Within(f); });
    progress.Step();
    if (!r.ok()) return Fail(r.status().message(), 1);
    by_policy.emplace_back(p, std::move(*r));
  }
  if (!by_policy.empty()) PrintTierPolicies(by_policy);
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
      for (const std::string& p : policies) {
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
    if (!md) return Fail("cannot write " + flags.Get("markdown"), 1);
  }
  // A plot that fails (no gnuplot) fails the run, after the JSON is out.
  Status plotted;
  if (flags.Has("plot")) {
    if (sweep) plotted = Plot(flags.Get("plot"), flags.Get("trace"), policies, results);
    if (tiered && plotted.ok()) {
      plotted = PlotOccupancy(flags.Get("plot"), flags.Get("trace"), *scenario, *tiered);
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
    if (tiered) out["scenario"] = ScenarioJson(*scenario, *tiered);
    if (!by_policy.empty()) {
      out["tier_policies"] = nlohmann::json::array();
      for (const auto& [p, r] : by_policy) {
        nlohmann::json row = TierPolicyRow(r);
        row["policy"] = p;
        out["tier_policies"].push_back(row);
      }
    }
    std::printf("%s\n", out.dump().c_str());
  }
  if (!plotted.ok()) return Fail(plotted.message(), 1);
  return 0;
}

}  // namespace
}  // namespace kvtier

int main(int argc, char** argv) { return kvtier::Main(argc, argv); }
