// kvtier-trace, the binary: its JSON, CSV, Markdown and plot outputs on a
// small trace, and its refusals (bad flags exit 2, a malformed trace exits 1
// naming the line).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/server/daemon_process.h"
#include "tests/tools/run_cli.h"

namespace kvtier {
namespace {

using testing::RunCli;
using testing::TempDir;

// The JSON object kvtier-trace prints as its last line of stdout (an error
// on stderr may follow it).
nlohmann::json LastJson(const std::string& out) {
  const size_t start = out.rfind("\n{") + 1;
  return nlohmann::json::parse(out.substr(start, out.find('\n', start) - start));
}

std::string WriteTrace(const std::string& dir, const std::string& text) {
  std::string path = dir + "/trace.csv";
  std::ofstream(path) << text;
  return path;
}

TEST(TraceCliTest, ReplaysAndWritesEveryOutput) {
  const std::string dir = TempDir("trace_cli");
  const std::string trace =
      WriteTrace(dir, "time_ms,tenant,keys\n0,a,x;y;z\n5,a,x;q;z\n6,b,x;y\n7,b,x;y;z;w\n");
  std::string out;
  ASSERT_EQ(RunCli("kvtier-trace",
                   {"--trace", trace, "--format", "csv", "--block-tokens", "16", "--policies",
                    "lru,fifo,belady", "--sizes", "2,0.5,inf", "--json", "--csv", dir + "/r.csv",
                    "--markdown", dir + "/r.md"},
                   &out),
            0)
      << out;
  const nlohmann::json j = LastJson(out);
  EXPECT_EQ(j["footprint_blocks"], 5);
  EXPECT_EQ(j["block_refs"], 12);
  // Infinite cache: request 2 hits x, request 3 x y, request 4 x y z.
  EXPECT_DOUBLE_EQ(j["infinite_hit_ratio"].get<double>(), 6.0 / 12);
  ASSERT_EQ(j["results"].size(), 9u);
  for (const auto& r : j["results"]) {
    EXPECT_LE(r["hit_ratio"].get<double>(), j["infinite_hit_ratio"].get<double>());
  }
  std::ifstream csv(dir + "/r.csv");
  std::string header;
  std::getline(csv, header);
  EXPECT_EQ(header, "policy,size_blocks,infinite,hit_ratio,token_hit_ratio,block_hits,refs_per_s");
  std::ifstream md(dir + "/r.md");
  std::string first;
  std::getline(md, first);
  EXPECT_EQ(first, "| policy | 2 | 3 | inf | slowest replay |");
  std::filesystem::remove_all(dir);
}

TEST(TraceCliTest, RefusesBadFlagsAndMalformedTraces) {
  const std::string dir = TempDir("trace_cli_bad");
  const std::string trace = WriteTrace(dir, "0,a,x\nnot-a-time,a,y\n");
  std::string out;
  EXPECT_EQ(RunCli("kvtier-trace", {"--trace", trace}, &out), 2);  // no --format
  EXPECT_EQ(RunCli("kvtier-trace", {"--trace", trace, "--format", "parquet"}, &out), 2);
  EXPECT_EQ(RunCli("kvtier-trace", {"--trace", trace, "--format", "csv", "--sizes", "0"}, &out),
            1);  // the trace is read first: its error wins
  EXPECT_NE(out.find(":2: time_ms"), std::string::npos) << out;
  const std::string good = WriteTrace(dir, "0,a,x\n1,a,x\n");
  EXPECT_EQ(RunCli("kvtier-trace", {"--trace", good, "--format", "csv", "--sizes", "-1"}, &out), 2);
  EXPECT_EQ(RunCli("kvtier-trace", {"--trace", good, "--format", "csv", "--policies", "mru"}, &out),
            2);
  EXPECT_NE(out.find("unknown eviction policy 'mru'"), std::string::npos) << out;
  std::filesystem::remove_all(dir);
}

const char kScenario[] = R"({"name": "two", "model": {"kv_bytes_per_token": 1048576,
    "active_params": 1e9}, "tiers": [
    {"name": "hbm", "capacity_gib": 0.05, "read_gb_per_s": 1000, "usd_per_gib_month": 20},
    {"name": "dram", "capacity_gib": 1, "read_gb_per_s": 50, "usd_per_gib_month": 3}]})";

TEST(TraceCliTest, ReplaysAScenarioAndWritesItsTablesAndPlotData) {
  const std::string dir = TempDir("trace_cli_scenario");
  const std::string trace =
      WriteTrace(dir, "time_ms,tenant,keys\n0,a,x;y;z\n5,a,x;q;z\n6,b,x;y\n7,b,x;y;z;w\n");
  std::ofstream(dir + "/s.json") << kScenario;
  std::string out;
  ASSERT_EQ(RunCli("kvtier-trace",
                   {"--trace", trace, "--format", "csv", "--block-tokens", "16", "--scenario",
                    dir + "/s.json", "--json", "--markdown", dir + "/r.md", "--plot",
                    dir + "/plots", "--tier-csv", dir + "/t.csv"},
                   &out),
            // 1 only when gnuplot is missing, after everything else was written
            std::system("command -v gnuplot >/dev/null 2>&1") == 0 ? 0 : 1)
      << out;
  const nlohmann::json j = LastJson(out);
  EXPECT_TRUE(j["results"].empty());  // a scenario alone skips the sweep
  const nlohmann::json& s = j["scenario"];
  EXPECT_EQ(s["name"], "two");
  ASSERT_EQ(s["tiers"].size(), 2u);
  EXPECT_EQ(s["tiers"][0]["name"], "hbm");
  EXPECT_EQ(s["block_refs"], 12);
  EXPECT_LE(s["token_hit_ratio"].get<double>(), j["infinite_token_hit_ratio"].get<double>());
  for (const char* way : {"no_cache", "tiered", "all_in_top_tier", "oracle"}) {
    for (const char* k : {"usd_per_mtok", "usd_per_mtok_used", "mean_ttft_s", "gpu_s"}) {
      EXPECT_TRUE(s["costs"][way].contains(k)) << way << " " << k;
    }
  }
  EXPECT_LE(s["costs"]["oracle"]["usd_per_mtok_used"].get<double>(),
            s["costs"]["tiered"]["usd_per_mtok_used"].get<double>())
      << "the oracle is a lower bound";
  EXPECT_FALSE(s["occupancy"].empty());
  std::ifstream md(dir + "/r.md");
  std::string text((std::istreambuf_iterator<char>(md)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("Scenario `two`"), std::string::npos) << text;
  EXPECT_NE(text.find("| hbm | lru |"), std::string::npos) << text;
  std::ifstream tcsv(dir + "/t.csv");
  std::vector<std::string> lines;
  for (std::string l; std::getline(tcsv, l);) lines.push_back(l);
  ASSERT_EQ(lines.size(), 8u);  // header, 2 tiers, header, 4 ways
  EXPECT_EQ(lines[7].rfind("cost,oracle,", 0), 0u) << lines[7];
  EXPECT_EQ(lines[1].rfind("tier,hbm,lru,", 0), 0u) << lines[1];
  EXPECT_EQ(lines[5].rfind("cost,tiered,", 0), 0u) << lines[5];
  EXPECT_TRUE(std::filesystem::exists(dir + "/plots/occupancy.dat"));
  EXPECT_TRUE(std::filesystem::exists(dir + "/plots/occupancy.gp"));
  // With --policies the sweep runs too.
  ASSERT_EQ(RunCli("kvtier-trace",
                   {"--trace", trace, "--format", "csv", "--block-tokens", "16", "--scenario",
                    dir + "/s.json", "--policies", "lru", "--sizes", "2", "--json"},
                   &out),
            0)
      << out;
  EXPECT_EQ(LastJson(out)["results"].size(), 1u);
  // --tier-policies: the stack again per policy.
  ASSERT_EQ(RunCli("kvtier-trace",
                   {"--trace", trace, "--format", "csv", "--block-tokens", "16", "--scenario",
                    dir + "/s.json", "--tier-policies", "lru,fifo", "--json"},
                   &out),
            0)
      << out;
  const nlohmann::json tp = LastJson(out);
  ASSERT_EQ(tp["tier_policies"].size(), 2u);
  EXPECT_EQ(tp["tier_policies"][1]["policy"], "fifo");
  EXPECT_TRUE(tp["tier_policies"][0]["hit_shares"].contains("dram"));
  EXPECT_EQ(RunCli("kvtier-trace",
                   {"--trace", trace, "--format", "csv", "--scenario", dir + "/s.json",
                    "--tier-policies", "mru"},
                   &out),
            2);
  EXPECT_NE(out.find("unknown eviction policy 'mru'"), std::string::npos) << out;
  EXPECT_EQ(
      RunCli("kvtier-trace", {"--trace", trace, "--format", "csv", "--tier-policies", "lru"}, &out),
      2);
  EXPECT_NE(out.find("--tier-policies needs --scenario"), std::string::npos) << out;
  // Each tier policy with each admission filter; an unknown filter refused.
  ASSERT_EQ(
      RunCli("kvtier-trace",
             {"--trace", trace, "--format", "csv", "--block-tokens", "16", "--scenario",
              dir + "/s.json", "--tier-policies", "lru", "--admission", "ghost,none", "--json"},
             &out),
      0)
      << out;
  const nlohmann::json filtered = LastJson(out);
  ASSERT_EQ(filtered["tier_policies"].size(), 2u);
  EXPECT_EQ(filtered["tier_policies"][0]["policy"], "lru+ghost");
  EXPECT_EQ(filtered["tier_policies"][1]["policy"], "lru");
  EXPECT_EQ(RunCli("kvtier-trace",
                   {"--trace", trace, "--format", "csv", "--scenario", dir + "/s.json",
                    "--tier-policies", "lru", "--admission", "bloom"},
                   &out),
            2);
  EXPECT_NE(out.find("unknown admission filter 'bloom'"), std::string::npos) << out;
  // The offline oracle is a bound for the one-tier sweep only.
  EXPECT_EQ(RunCli("kvtier-trace",
                   {"--trace", trace, "--format", "csv", "--scenario", dir + "/s.json",
                    "--tier-policies", "lru", "--admission", "oracle"},
                   &out),
            2);
  EXPECT_NE(out.find("--admission oracle is a bound for the one-tier sweep"), std::string::npos)
      << out;
  ASSERT_EQ(RunCli("kvtier-trace",
                   {"--trace", trace, "--format", "csv", "--block-tokens", "16", "--policies",
                    "lru", "--sizes", "4", "--admission", "none,oracle", "--json"},
                   &out),
            0)
      << out;
  const nlohmann::json bound = LastJson(out);
  ASSERT_EQ(bound["results"].size(), 2u) << out;
  EXPECT_EQ(bound["results"][1]["policy"], "lru+oracle");
  EXPECT_GE(bound["results"][1]["block_hits"], bound["results"][0]["block_hits"]);
  // A tier's admission filter in the scenario file is checked like its policy.
  std::string with_filter = kScenario;
  with_filter.replace(with_filter.find(R"("usd_per_gib_month": 20})"), 24,
                      R"("usd_per_gib_month": 20, "admission": "bloom"})");
  std::ofstream(dir + "/filter.json") << with_filter;
  EXPECT_EQ(RunCli("kvtier-trace",
                   {"--trace", trace, "--format", "csv", "--scenario", dir + "/filter.json"}, &out),
            2);
  EXPECT_NE(out.find("tiers[0].admission 'bloom' is not an admission filter"), std::string::npos)
      << out;
  EXPECT_EQ(out.find("scenario two"), std::string::npos) << "nothing replayed: " << out;
  // A malformed scenario is refused before anything runs, naming the file.
  std::ofstream(dir + "/bad.json") << R"({"model": {}})";
  EXPECT_EQ(RunCli("kvtier-trace",
                   {"--trace", trace, "--format", "csv", "--scenario", dir + "/bad.json"}, &out),
            2);
  EXPECT_NE(out.find("bad.json"), std::string::npos) << out;
  EXPECT_EQ(out.find("scenario two"), std::string::npos) << out;
  std::filesystem::remove_all(dir);
}

// The scenarios bench/RESULTS.md is made with run on the Mooncake trace:
// hits stay within the infinite cache's, the per-tier shares add up, and
// the cache saves TTFT.
TEST(TraceCliTest, ShippedScenariosReplayTheMooncakeTrace) {
  const char* env = std::getenv("KVTIER_SHARED_DATA");
  const std::string trace = std::string(env != nullptr ? env : "../shared/data") +
                            "/traces/mooncake_fast25/conversation_trace.jsonl";
  if (!std::filesystem::exists(trace)) GTEST_SKIP() << "no shared trace at " << trace;
  int seen = 0;
  for (const auto& f :
       std::filesystem::directory_iterator(std::string(KVTIER_SOURCE_DIR) + "/bench/scenarios")) {
    if (f.path().extension() != ".json") continue;
    SCOPED_TRACE(f.path().string());
    ++seen;
    std::string out;
    ASSERT_EQ(RunCli("kvtier-trace",
                     {"--trace", trace, "--format", "mooncake", "--scenario", f.path().string(),
                      "--json"},
                     &out),
              0)
        << out;
    const nlohmann::json j = LastJson(out);
    const nlohmann::json& s = j["scenario"];
    EXPECT_GT(s["hit_ratio"].get<double>(), 0);
    EXPECT_LE(s["hit_ratio"].get<double>(), j["infinite_hit_ratio"].get<double>());
    double shares = 0;
    for (const auto& t : s["tiers"]) shares += t["hit_share"].get<double>();
    EXPECT_NEAR(shares, 1.0, 1e-9);
    EXPECT_GT(s["ttft_saved_s"].get<double>(), 0);
    EXPECT_EQ(s["insert_failures"], 0);
    EXPECT_LT(s["costs"]["tiered"]["mean_ttft_s"].get<double>(),
              s["costs"]["no_cache"]["mean_ttft_s"].get<double>());
  }
  EXPECT_GE(seen, 2);
}

}  // namespace
}  // namespace kvtier
