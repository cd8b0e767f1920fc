#include "replay/trace_report.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace kvtier {
namespace {

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

// The ways of serving the trace a scenario's report compares, in order: an
// id (JSON, CSV) and a label (text, markdown).
struct CostRow {
  const char* id;
  const char* label;
  const CostSummary* costs;
};
std::vector<CostRow> CostRows(const TierReplayResult& r) {
  return {{"no_cache", "no cache", &r.no_cache},
          {"tiered", "tiered", &r.tiered},
          {"all_in_top_tier", "all in the top tier", &r.all_in_top},
          {"oracle", "oracle (lower bound)", &r.oracle}};
}

}  // namespace

// Renders a gnuplot script (its data written beside it).
Status RunGnuplot(const std::string& script) {
  const std::string cmd = "gnuplot '" + script + "' 2>&1";
  if (std::system(cmd.c_str()) != 0) {
    return Status::Unavailable("gnuplot failed or is not installed (tools/deps.sh --bench); " +
                               script + " and its data are written");
  }
  return Status::Ok();
}

double Share(double part, double whole) { return whole > 0 ? part / whole : 0; }

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

nlohmann::json ScenarioJson(const TierScenario& sc, const TierReplayResult& r) {
  nlohmann::json costs = nlohmann::json::object();
  for (const CostRow& row : CostRows(r)) costs[row.id] = CostJson(*row.costs);
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
          {"aged_out", r.aged_out},
          {"drops", r.drops},
          {"expired", r.expired},
          {"insert_failures", r.insert_failures},
          {"ttft_saved_s", r.ttft_saved_s},
          {"ttft_saved_ratio", Share(r.ttft_saved_s, r.no_cache.mean_ttft_s * r.requests)},
          {"costs", costs},
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
      "promotions %llu, demotions %llu, dropped for recompute %llu (aged out of these two %llu), "
      "dropped with no room below %llu, expired %llu\n",
      static_cast<unsigned long long>(r.promotions), static_cast<unsigned long long>(r.demotions),
      static_cast<unsigned long long>(r.remat_drops), static_cast<unsigned long long>(r.aged_out),
      static_cast<unsigned long long>(r.drops), static_cast<unsigned long long>(r.expired));
  std::printf("%-20s %9s %11s %8s %9s %9s %8s %9s %9s\n", "", "token_hit", "mean_ttft_s", "gpu_s",
              "gpu_usd", "tier_usd", "usd/Mtok", "tier_used", "used/Mtok");
  for (const CostRow& row : CostRows(r)) {
    const char* name = row.label;
    const CostSummary* c = row.costs;
    std::printf("%-20s %9.4f %11.3f %8.0f %9.2f %9.2f %8.4f %9.2f %9.4f\n", name,
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
      "%s. Promotions %llu, demotions %llu, dropped for recompute %llu (of these two, aged "
      "out %llu), dropped with no room below %llu, expired %llu.\n\n",
      any ? "" : " nothing", static_cast<unsigned long long>(r.promotions),
      static_cast<unsigned long long>(r.demotions), static_cast<unsigned long long>(r.remat_drops),
      static_cast<unsigned long long>(r.aged_out), static_cast<unsigned long long>(r.drops),
      static_cast<unsigned long long>(r.expired));
  md << line;
  md << "| | token hit ratio | mean TTFT | GPU time | GPU $ | tiers $, provisioned | $/M input "
        "tokens | tiers $, used | $/M input tokens, used |\n"
        "|---|---|---|---|---|---|---|---|---|\n";
  for (const CostRow& row : CostRows(r)) {
    const char* name = row.label;
    const CostSummary* c = row.costs;
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
  for (const CostRow& row : CostRows(r)) {
    const char* name = row.id;
    const CostSummary* c = row.costs;
    csv << "cost," << name << "," << Share(c->hit_tokens, c->input_tokens) << "," << c->mean_ttft_s
        << "," << c->gpu_s << "," << c->gpu_usd << "," << c->tier_usd << "," << c->usd_per_mtok()
        << "," << c->tier_usd_used << "," << c->usd_per_mtok_used() << "\n";
  }
}

namespace {

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

}  // namespace

nlohmann::json TierPoliciesJson(const TierPolicyRuns& runs) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& [p, r] : runs) {
    nlohmann::json row = TierPolicyRow(r);
    row["policy"] = p;
    out.push_back(row);
  }
  return out;
}

void PrintTierPolicies(const TierPolicyRuns& rows) {
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

void TierPoliciesMarkdown(std::ostream& md, const TierPolicyRuns& rows) {
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

// --- Cluster mode ------------------------------------------------------------------

namespace {

double TtftSavedRatio(const ClusterReplayResult& r) {
  return Share(r.ttft_saved_s, r.no_cache.mean_ttft_s * r.requests);
}

// "redis: 16.0 TiB, 10 GB/s, 0.2 ms a fetch, $3/GiB-month" or "no shared tier".
std::string SharedTierLine(const TierScenario& sc) {
  if (!sc.shared_tier) return "no shared tier";
  const ScenarioSharedTier& t = *sc.shared_tier;
  const std::string policy = t.admission == "none" ? t.policy : t.policy + "+" + t.admission;
  const std::string kept =
      t.max_ttl_ms > 0 ? "at most " + FormatSeconds(t.max_ttl_ms / 1000.0) : "without a cap";
  char line[256];
  std::snprintf(line, sizeof(line),
                "shared tier '%s': %s, %g GB/s, %g ms a fetch, $%g/GiB-month, %s, copies kept %s",
                t.name.c_str(), Bytes(t.capacity_bytes).c_str(), t.read_bytes_per_s / 1e9,
                t.latency_s * 1000, t.usd_per_gib_month, policy.c_str(), kept.c_str());
  return line;
}

}  // namespace

nlohmann::json ClusterJson(const ClusterRuns& runs) {
  nlohmann::json out = nlohmann::json::array();
  for (const ClusterReplayResult& r : runs) {
    nlohmann::json tier_hits = nlohmann::json::object();
    for (size_t i = 0; i < r.tier_names.size(); ++i)
      tier_hits[r.tier_names[i]] = r.tier_hit_blocks[i];
    out.push_back({{"nodes", r.nodes},
                   {"routing", r.routing},
                   {"shared_tier", r.shared_tier},
                   {"requests", r.requests},
                   {"block_refs", r.block_refs},
                   {"block_hits", r.block_hits},
                   {"hit_ratio", r.hit_ratio()},
                   {"tokens", r.tokens},
                   {"hit_tokens", r.hit_tokens},
                   {"token_hit_ratio", r.token_hit_ratio()},
                   {"tier_hit_blocks", tier_hits},
                   {"shared_hit_blocks", r.shared_hit_blocks},
                   {"shared_hit_tokens", r.shared_hit_tokens},
                   {"shared_adopted", r.shared_adopted},
                   {"shared_writes", r.shared_writes},
                   {"shared_write_failures", r.shared_write_failures},
                   {"shared_write_skips", r.shared_write_skips},
                   {"network_bytes", r.network_bytes()},
                   {"network_read_bytes", r.network_read_bytes()},
                   {"network_write_bytes", r.network_write_bytes},
                   {"network_fetch_bytes", r.network_fetch_bytes},
                   {"network_copy_bytes", r.network_copy_bytes},
                   {"shared_write_through_bytes", r.shared_write_through_bytes},
                   {"shared_peak_used_bytes", r.shared_peak_used_bytes},
                   {"shared_mean_used_bytes", r.shared_mean_used_bytes},
                   {"node_requests", r.node_requests},
                   {"node_tokens", r.node_tokens},
                   {"busiest_node_token_share", r.busiest_node_token_share},
                   {"promotions", r.promotions},
                   {"demotions", r.demotions},
                   {"remat_drops", r.remat_drops},
                   {"drops", r.drops},
                   {"expired", r.expired},
                   {"local_tier_usd", r.local_tier_usd},
                   {"local_tier_usd_used", r.local_tier_usd_used},
                   {"shared_tier_usd", r.shared_tier_usd},
                   {"shared_tier_usd_used", r.shared_tier_usd_used},
                   {"usd_per_mtok", r.tiered.usd_per_mtok()},
                   {"usd_per_mtok_used", r.tiered.usd_per_mtok_used()},
                   {"costs", {{"tiered", CostJson(r.tiered)}, {"no_cache", CostJson(r.no_cache)}}},
                   {"ttft_saved_s", r.ttft_saved_s},
                   {"mean_ttft_saved_s", r.mean_ttft_saved_s()},
                   {"ttft_saved_ratio", TtftSavedRatio(r)},
                   {"replay_seconds", r.seconds}});
  }
  return out;
}

void PrintCluster(const TierScenario& sc, const ClusterRuns& runs) {
  std::printf("\ncluster: scenario %s on every node, %s\n", sc.name.c_str(),
              SharedTierLine(sc).c_str());
  std::printf("%5s %-9s %9s %9s %11s %10s %10s %8s %9s %9s %13s %7s\n", "nodes", "routing",
              "block_hit", "token_hit", "shared_hits", "net_read", "net_write", "busiest",
              "usd/Mtok", "used/Mtok", "ttft_saved_ms", "replay");
  for (const ClusterReplayResult& r : runs) {
    std::printf("%5d %-9s %9.4f %9.4f %11.3f %10s %10s %8.3f %9.4f %9.4f %7.1f %4.1f%% %6.1fs\n",
                r.nodes, r.routing.c_str(), r.hit_ratio(), r.token_hit_ratio(),
                Share(r.shared_hit_blocks, r.block_hits), Bytes(r.network_read_bytes()).c_str(),
                Bytes(r.network_write_bytes).c_str(), r.busiest_node_token_share,
                r.tiered.usd_per_mtok(), r.tiered.usd_per_mtok_used(), r.mean_ttft_saved_s() * 1000,
                100 * TtftSavedRatio(r), r.seconds);
  }
  if (!runs.empty()) {
    std::printf(
        "no cache: %.4f $/M input tokens; busiest: the busiest node's share of the input "
        "tokens\n",
        runs.front().no_cache.usd_per_mtok());
  }
}

void ClusterMarkdown(std::ostream& md, const TierScenario& sc, const ClusterRuns& runs) {
  md << "\nScenario `" << sc.name << "` on every node, " << SharedTierLine(sc) << ".\n\n"
     << "| nodes | routing | block hit ratio | token hit ratio | hits from the shared tier | "
        "network read | network written | busiest node | $/M input tokens | $/M, used | "
        "mean TTFT saved |\n|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const ClusterReplayResult& r : runs) {
    char line[512];
    std::snprintf(line, sizeof(line),
                  "| %d | %s | %.4f | %.4f | %.3f | %s | %s | %.3f | %.4f | %.4f | %.1f ms "
                  "(%.1f%%) |\n",
                  r.nodes, r.routing.c_str(), r.hit_ratio(), r.token_hit_ratio(),
                  Share(r.shared_hit_blocks, r.block_hits), Bytes(r.network_read_bytes()).c_str(),
                  Bytes(r.network_write_bytes).c_str(), r.busiest_node_token_share,
                  r.tiered.usd_per_mtok(), r.tiered.usd_per_mtok_used(),
                  r.mean_ttft_saved_s() * 1000, 100 * TtftSavedRatio(r));
    md << line;
  }
}

}  // namespace kvtier
