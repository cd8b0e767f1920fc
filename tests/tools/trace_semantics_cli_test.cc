// kvtier-trace --semantics and --write-refs, the binary: counting each block
// reference on its own, and the reference sequence other simulators are fed
// (bench/peer/libcachesim_check.py).
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/server/daemon_process.h"
#include "tests/tools/run_cli.h"

namespace kvtier {
namespace {

using testing::RunCli;
using testing::TempDir;

// x y z | x q z | x y | x y z w: ids by first appearance x=0 y=1 z=2 q=3 w=4.
std::string WriteTrace(const std::string& dir) {
  std::string path = dir + "/trace.csv";
  std::ofstream(path) << "time_ms,tenant,keys\n0,a,x;y;z\n5,a,x;q;z\n6,b,x;y\n7,b,x;y;z;w\n";
  return path;
}

nlohmann::json LastJson(const std::string& out) {
  const size_t start = out.rfind("\n{") + 1;
  return nlohmann::json::parse(out.substr(start, out.find('\n', start) - start));
}

// Prefix semantics: request 2 hits x only (z follows the miss q): 1 + 2 + 3.
// Independent: z counts too: 2 + 2 + 3.
TEST(TraceSemanticsCliTest, IndependentCountsEveryCachedReference) {
  const std::string dir = TempDir("trace_semantics");
  const std::string trace = WriteTrace(dir);
  for (const auto& [semantics, hits] : {std::pair{"prefix", 6}, std::pair{"independent", 7}}) {
    std::string out;
    ASSERT_EQ(RunCli("kvtier-trace",
                     {"--trace", trace, "--format", "csv", "--policies", "lru,prefix-reuse,belady",
                      "--sizes", "inf", "--semantics", semantics, "--json"},
                     &out),
              0)
        << out;
    const nlohmann::json j = LastJson(out);
    EXPECT_EQ(j["semantics"], semantics);
    ASSERT_EQ(j["results"].size(), 3u);
    for (const auto& r : j["results"]) EXPECT_EQ(r["block_hits"], hits) << semantics << " " << r;
  }
}

TEST(TraceSemanticsCliTest, WritesTheReferencesInReplayOrder) {
  const std::string dir = TempDir("trace_refs");
  std::string out;
  ASSERT_EQ(RunCli("kvtier-trace",
                   {"--trace", WriteTrace(dir), "--format", "csv", "--policies", "lru", "--sizes",
                    "2", "--write-refs", dir + "/refs.txt"},
                   &out),
            0)
      << out;
  std::ifstream refs(dir + "/refs.txt");
  std::vector<int> ids;
  for (int id; refs >> id;) ids.push_back(id);
  EXPECT_EQ(ids, (std::vector<int>{1, 2, 3, 1, 4, 3, 1, 2, 1, 2, 3, 5}));
}

TEST(TraceSemanticsCliTest, UnknownSemanticsIsRefused) {
  const std::string dir = TempDir("trace_semantics_bad");
  std::string out;
  EXPECT_EQ(
      RunCli("kvtier-trace",
             {"--trace", WriteTrace(dir), "--format", "csv", "--semantics", "exclusive"}, &out),
      2);
  EXPECT_NE(out.find("'exclusive' is neither prefix nor independent"), std::string::npos) << out;
  EXPECT_EQ(out.find("infinite cache"), std::string::npos) << "nothing is replayed: " << out;
}

}  // namespace
}  // namespace kvtier
