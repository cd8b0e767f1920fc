// kvtier-trace, the binary: its JSON, CSV, Markdown and plot outputs on a
// small trace, and its refusals (bad flags exit 2, a malformed trace exits 1
// naming the line).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/tools/daemon_process.h"

namespace kvtier {
namespace {

using testing::BinDir;
using testing::TempDir;

// Runs kvtier-trace with args (no shell metacharacters in them); returns its
// exit status, with stdout and stderr in *out.
int RunTool(const std::string&, const std::vector<std::string>& args, std::string* out) {
  std::string cmd = BinDir() + "/kvtier-trace";
  for (const std::string& a : args) cmd += " '" + a + "'";
  cmd += " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return -1;
  out->clear();
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out->append(buf, n);
  const int status = pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string WriteTrace(const std::string& dir, const std::string& text) {
  const std::string path = dir + "/trace.csv";
  std::ofstream(path) << text;
  return path;
}

TEST(TraceCliTest, ReplaysAndWritesEveryOutput) {
  const std::string dir = TempDir("trace_cli");
  const std::string trace =
      WriteTrace(dir, "time_ms,tenant,keys\n0,a,x;y;z\n5,a,x;q;z\n6,b,x;y\n7,b,x;y;z;w\n");
  std::string out;
  ASSERT_EQ(RunTool("kvtier-trace",
                    {"--trace", trace, "--format", "csv", "--block-tokens", "16", "--policies",
                     "lru,fifo,belady", "--sizes", "2,0.5,inf", "--json", "--csv", dir + "/r.csv",
                     "--markdown", dir + "/r.md"},
                    &out),
            0)
      << out;
  const nlohmann::json j = nlohmann::json::parse(out.substr(out.rfind("\n{") + 1));
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
  EXPECT_EQ(RunTool("kvtier-trace", {"--trace", trace}, &out), 2);  // no --format
  EXPECT_EQ(RunTool("kvtier-trace", {"--trace", trace, "--format", "parquet"}, &out), 2);
  EXPECT_EQ(RunTool("kvtier-trace", {"--trace", trace, "--format", "csv", "--sizes", "0"}, &out),
            1);  // the trace is read first: its error wins
  EXPECT_NE(out.find(":2: time_ms"), std::string::npos) << out;
  const std::string good = WriteTrace(dir, "0,a,x\n1,a,x\n");
  EXPECT_EQ(RunTool("kvtier-trace", {"--trace", good, "--format", "csv", "--sizes", "-1"}, &out),
            2);
  EXPECT_EQ(
      RunTool("kvtier-trace", {"--trace", good, "--format", "csv", "--policies", "mru"}, &out), 2);
  EXPECT_NE(out.find("unknown eviction policy 'mru'"), std::string::npos) << out;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kvtier
