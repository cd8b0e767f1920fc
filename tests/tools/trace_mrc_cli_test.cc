// kvtier-trace --mrc: the miss-ratio curve estimator against exact LRU on a
// small trace whose per-reference stack distances are worked out below, and
// its refusals.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/server/daemon_process.h"
#include "tests/tools/run_cli.h"

namespace kvtier {
namespace {

using testing::RunCli;
using testing::TempDir;

// References x y z | x q z | x y | x y z w. First uses: x y z q w. The
// others are 3, 3, 3, 4, 2, 2 and 3 distinct blocks away (themselves
// included), so per reference LRU hits 2 of 12 at 2 blocks, 6 at 3 and 7 at
// 4 or more.
constexpr char kTrace[] = "time_ms,tenant,keys\n0,a,x;y;z\n5,a,x;q;z\n6,b,x;y\n7,b,x;y;z;w\n";

TEST(TraceMrcCliTest, EstimateEqualsExactLruWhileEveryBlockIsSampled) {
  const std::string dir = TempDir("trace_mrc_cli");
  const std::string trace = dir + "/trace.csv";
  std::ofstream(trace) << kTrace;
  std::string out;
  ASSERT_EQ(RunCli("kvtier-trace",
                   {"--trace", trace, "--format", "csv", "--block-tokens", "16", "--mrc", "--sizes",
                    "2,3,inf", "--json"},
                   &out),
            0)
      << out;
  EXPECT_NE(out.find("max |error| 0.0000"), std::string::npos) << out;
  const nlohmann::json j = nlohmann::json::parse(out.substr(out.rfind("\n{") + 1));
  EXPECT_TRUE(j["results"].empty()) << "with --mrc the sweep runs only with --policies";
  const nlohmann::json& m = j["mrc"];
  EXPECT_EQ(m["sampling_rate"], 1.0);
  EXPECT_EQ(m["sampled_blocks"], 5);
  ASSERT_EQ(m["sizes"].size(), 3u);
  const double expected[] = {2.0 / 12, 6.0 / 12, 7.0 / 12};
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_DOUBLE_EQ(m["sizes"][i]["exact_lru_hit_ratio"].get<double>(), expected[i]) << i;
    EXPECT_DOUBLE_EQ(m["sizes"][i]["estimated_hit_ratio"].get<double>(), expected[i]) << i;
  }
  EXPECT_EQ(m["sizes"][2]["size_blocks"], 5);  // inf: the footprint
  EXPECT_EQ(m["max_abs_error"], 0.0);
  // With --policies the sweep runs as well.
  ASSERT_EQ(RunCli("kvtier-trace",
                   {"--trace", trace, "--format", "csv", "--block-tokens", "16", "--mrc",
                    "--policies", "lru", "--sizes", "2", "--json"},
                   &out),
            0)
      << out;
  EXPECT_EQ(nlohmann::json::parse(out.substr(out.rfind("\n{") + 1))["results"].size(), 1u);
  // A size of 0 is refused before anything is replayed.
  EXPECT_EQ(
      RunCli("kvtier-trace", {"--trace", trace, "--format", "csv", "--mrc", "--sizes", "0"}, &out),
      2)
      << out;
  EXPECT_EQ(out.find("miss-ratio curve"), std::string::npos) << out;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kvtier
