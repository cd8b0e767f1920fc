// The miss-ratio curve of a real kvtierd (cache/mrc.h; docs/operations.md):
// block uses made through the API show in the Stats RPC's curve, in the
// kvtier_mrc_* metrics, and in `kvtier stats --mrc`, which refuses bad
// --mrc-add sizes. The daemon samples every block while it has seen fewer
// than 16K, so the figures here are exact stack distances.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "server/mrc_metrics.h"
#include "tests/server/daemon_client.h"
#include "tests/server/daemon_process.h"

namespace kvtier {
namespace {

using testing::AsBytes;
using testing::ClientFor;
using testing::DaemonProcess;
using testing::RunTool;
using testing::TempDir;

constexpr size_t kBlocks = 8;
constexpr size_t kBlockBytes = 10000;

// The curve's hit ratio at `bytes`: linear between its points.
double HitRatioAt(const v1::MrcStats& m, uint64_t bytes) {
  const auto& c = m.curve();
  for (int i = 1; i < c.size(); ++i) {
    if (bytes < c[i].size_bytes()) {
      const double f = static_cast<double>(bytes - c[i - 1].size_bytes()) /
                       static_cast<double>(c[i].size_bytes() - c[i - 1].size_bytes());
      return c[i - 1].hit_ratio() + f * (c[i].hit_ratio() - c[i - 1].hit_ratio());
    }
  }
  return c.empty() ? 0 : c.rbegin()->hit_ratio();
}

class MrcDaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TempDir("mrc");
    ASSERT_TRUE(daemon_.Start(
        dir_, {"--dram-bytes", "64M", "--flash-bytes", "64M", "--metrics-listen", "127.0.0.1:0"}))
        << "kvtierd exited with " << daemon_.exit_code();
    client_ = ClientFor(daemon_);
  }
  void TearDown() override {
    EXPECT_EQ(daemon_.Stop(SIGTERM), 0);
    std::filesystem::remove_all(dir_);
  }

  // Stores a chain of kBlocks blocks (one put per prefix), then looks the
  // whole prompt up once: kBlocks inserts, then kBlocks hits. The hits are
  // used deepest first, so they are 1, 2, ... kBlocks blocks away.
  void UseAChain() {
    const int bt = static_cast<int>(Stats().default_block_tokens());
    ASSERT_GT(bt, 0);
    for (size_t b = 1; b <= kBlocks; ++b) {
      v1::PutHeader h;
      for (int t = 1; t <= static_cast<int>(b) * bt; ++t) h.add_token_ids(t);
      ASSERT_TRUE(client_->Put(h, AsBytes(std::string(kBlockBytes, 'a' + b))).ok());
    }
    v1::LookupRequest q;
    for (int t = 1; t <= static_cast<int>(kBlocks) * bt; ++t) q.add_token_ids(t);
    auto hit = client_->Lookup(q);
    ASSERT_TRUE(hit.ok()) << hit.status();
    ASSERT_EQ(hit->hit_blocks(), kBlocks);
  }

  v1::StatsResponse Stats() {
    auto s = client_->Stats();
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *s : v1::StatsResponse();
  }

  std::string Scrape() {
    auto health = client_->Health();
    EXPECT_TRUE(health.ok());
    const std::string m = health.ok() ? health->metrics_listen() : "";
    if (m.empty()) return "";
    httplib::Client http(m.substr(0, m.rfind(':')), std::stoi(m.substr(m.rfind(':') + 1)));
    auto res = http.Get("/metrics");
    return res && res->status == 200 ? res->body : "";
  }

  std::string dir_;
  DaemonProcess daemon_;
  std::unique_ptr<Client> client_;
};

TEST_F(MrcDaemonTest, StatsCarryTheCurveOfTheBlockUses) {
  // Before any use the curve is empty and every size hits nothing.
  v1::StatsResponse before = Stats();
  EXPECT_EQ(before.mrc().uses(), 0u);
  EXPECT_EQ(before.mrc().curve_size(), 0);
  EXPECT_EQ(before.mrc().max_sampled_blocks(), 16384u);

  UseAChain();
  const v1::MrcStats m = Stats().mrc();
  EXPECT_EQ(m.uses(), 2 * kBlocks);
  EXPECT_EQ(m.sampled_uses(), 2 * kBlocks);
  EXPECT_EQ(m.sampling_rate(), 1.0);
  EXPECT_EQ(m.sampled_blocks(), kBlocks);
  // Hits at 1..8 blocks away: a cache of 4.5 blocks hits 4 of 16 uses.
  EXPECT_DOUBLE_EQ(HitRatioAt(m, kBlockBytes / 2), 0);
  EXPECT_DOUBLE_EQ(HitRatioAt(m, kBlockBytes * 9 / 2), 4.0 / 16);
  EXPECT_DOUBLE_EQ(HitRatioAt(m, 1 << 20), 0.5);
  for (int i = 1; i < m.curve_size(); ++i) {
    EXPECT_GT(m.curve(i).size_bytes(), m.curve(i - 1).size_bytes());
    EXPECT_GE(m.curve(i).hit_ratio(), m.curve(i - 1).hit_ratio());
  }
}

TEST_F(MrcDaemonTest, MetricsCarryTheCurveAtFixedSizesAndPerTier) {
  UseAChain();
  const std::string body = Scrape();
  ASSERT_FALSE(body.empty());
  for (const std::string sample :
       {"kvtier_mrc_uses_total 16", "kvtier_mrc_sampled_uses_total 16",
        "kvtier_mrc_sampling_rate 1", "kvtier_mrc_sampled_blocks 8",
        // The grid runs from an eighth of the smallest tier (64 MiB).
        "kvtier_mrc_hit_ratio{size_bytes=\"8388608\"} 0.5",
        "kvtier_mrc_tier_hit_ratio{tier=\"dram\",added_bytes=\"0\"} 0.5",
        "kvtier_mrc_tier_hit_ratio{tier=\"dram\",added_bytes=\"1073741824\"} 0.5",
        "kvtier_mrc_tier_hit_ratio{tier=\"flash\",added_bytes=\"67108864\"} 0.5",
        "# TYPE kvtier_mrc_hit_ratio gauge"}) {
    EXPECT_NE(body.find(sample + "\n"), std::string::npos) << sample << " not in\n" << body;
  }
  EXPECT_EQ(body.find("kvtier_mrc_hit_ratio{size_bytes=\"4194304\"}"), std::string::npos);
}

TEST_F(MrcDaemonTest, KvtierStatsMrcPrintsTheCurveAndEachTiersWhatIf) {
  UseAChain();
  const std::string addr = daemon_.address();
  std::string out;
  ASSERT_EQ(RunTool("kvtier", {"--addr", addr, "--json", "stats", "--mrc", "--mrc-add", "20000,1M"},
                    &out),
            0)
      << out;
  const nlohmann::json j = nlohmann::json::parse(out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << out;
  const nlohmann::json& m = j["mrc"];
  EXPECT_EQ(m["uses"], 2 * kBlocks);
  EXPECT_EQ(m["max_hit_ratio"], 0.5);
  ASSERT_GE(m["tiers"].size(), 2u);
  const nlohmann::json& dram = m["tiers"][0];
  EXPECT_EQ(dram["name"], "dram");
  EXPECT_EQ(dram["through_bytes"], 64u << 20);
  EXPECT_EQ(dram["hit_ratio"], 0.5);
  // The sizes asked for, then the tier doubled.
  ASSERT_EQ(dram["added"].size(), 3u);
  EXPECT_EQ(dram["added"][0]["added_bytes"], 20000);
  EXPECT_EQ(dram["added"][1]["added_bytes"], 1 << 20);
  EXPECT_EQ(dram["added"][2]["added_bytes"], 64u << 20);
  EXPECT_EQ(m["tiers"][1]["through_bytes"], 128u << 20);

  ASSERT_EQ(RunTool("kvtier", {"--addr", addr, "stats", "--mrc"}, &out), 0) << out;
  EXPECT_NE(out.find("16 uses, 16 of them sampled (rate 1.0000, 8 of at most 16384"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("unbounded   0.5000"), std::string::npos) << out;
  EXPECT_NE(out.find("+1 GiB: 0.5000   +64 MiB (2x): 0.5000"), std::string::npos) << out;
  // Without --mrc, stats prints what it always did.
  ASSERT_EQ(RunTool("kvtier", {"--addr", addr, "stats"}, &out), 0) << out;
  EXPECT_EQ(out.find("miss-ratio"), std::string::npos) << out;
}

TEST_F(MrcDaemonTest, KvtierStatsMrcRefusesBadSizesAndExtraWords) {
  const std::string addr = daemon_.address();
  struct Case {
    std::vector<std::string> args;
    std::string error;
  };
  const std::vector<Case> cases = {
      {{"stats", "--mrc", "--mrc-add", "0"}, "--mrc-add: a size must be more than 0"},
      {{"stats", "--mrc", "--mrc-add", "lots"}, "--mrc-add: 'lots' is not a size"},
      {{"stats", "--mrc", "--mrc-add", "1G,,2G"}, "--mrc-add: '' is not a size"},
      {{"stats", "--mrc", "--mrc-add", "-1G"}, "--mrc-add: '-1G' is not a size"},
      {{"stats", "--mrc-add", "1G"}, "--mrc-add needs --mrc"},
      {{"stats", "--mrc", "curve"}, "give exactly one command"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = {"--addr", addr, "--json"};
    args.insert(args.end(), c.args.begin(), c.args.end());
    std::string out;
    EXPECT_EQ(RunTool("kvtier", args, &out), 2) << out;
    const nlohmann::json j = nlohmann::json::parse(out, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << out;
    EXPECT_EQ(j["ok"], false);
    EXPECT_NE(j["error"].get<std::string>().find(c.error), std::string::npos) << j;
  }
  // Nothing above reached the daemon's curve.
  EXPECT_EQ(Stats().mrc().uses(), 0u);
}

TEST(MrcMetricsTest, TheGridSpansAnEighthOfTheSmallestTierToFourTimesTheStack) {
  EXPECT_EQ(MrcGridSizes({64 << 20, 64 << 20}),
            (std::vector<uint64_t>{8 << 20, 16 << 20, 32 << 20, 64 << 20, 128 << 20, 256 << 20,
                                   512 << 20}));
  // A wide stack keeps to kMaxGridPoints, taking every other power of two.
  const std::vector<uint64_t> wide = MrcGridSizes({1 << 20, uint64_t{1} << 50});
  EXPECT_LE(wide.size(), kMaxGridPoints);
  EXPECT_EQ(wide.front(), uint64_t{1} << 17);
  EXPECT_GE(wide.back(), uint64_t{1} << 51);
  EXPECT_TRUE(MrcGridSizes({}).empty());
  EXPECT_TRUE(MrcGridSizes({0}).empty());
}

}  // namespace
}  // namespace kvtier
