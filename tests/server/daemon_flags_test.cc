#include "server/daemon.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace kvtier {
namespace {

TEST(DaemonFlagsTest, PlacementFlags) {
  auto parse = [](std::vector<std::string> args) {
    args.insert(args.begin(), "kvtierd");
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    bool help = false;
    return ParseDaemonFlags(static_cast<int>(argv.size()), argv.data(), &help);
  };
  Result<DaemonOptions> o = parse({"--dram-policy", "s3fifo", "--rocks-policy", "arc",
                                   "--flash-price", "0.2", "--gpu-price", "3.6", "--remat-flops",
                                   "1e15", "--fetch-budget-ms", "250", "--default-idle", "30"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->dram_policy, "s3fifo");
  EXPECT_EQ(o->flash_policy, "ttl-cost");
  EXPECT_EQ(o->rocks_policy, "arc");
  EXPECT_DOUBLE_EQ(o->flash_usd_per_gib_month, 0.2);
  EXPECT_DOUBLE_EQ(o->dram_usd_per_gib_month, 3.0);
  EXPECT_DOUBLE_EQ(o->placement.remat.cost_per_s, 0.001);
  EXPECT_DOUBLE_EQ(o->placement.remat.flops_per_s, 1e15);
  EXPECT_DOUBLE_EQ(o->placement.fetch_budget_s, 0.25);
  EXPECT_DOUBLE_EQ(o->placement.default_idle_s, 30);
  Result<DaemonOptions> bad = parse({"--flash-policy", "mru"});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("--flash-policy: unknown policy 'mru'"), std::string::npos)
      << bad.status();
  EXPECT_NE(bad.status().message().find("s3fifo"), std::string::npos) << "names the choices";
  for (std::vector<std::string> args : {std::vector<std::string>{"--dram-price", "-1"},
                                        {"--remat-flops", "0"},
                                        {"--fetch-budget-ms", "abc"},
                                        {"--sweep-interval-ms", "0"}}) {
    Result<DaemonOptions> r = parse(args);
    ASSERT_FALSE(r.ok()) << args[0];
    EXPECT_NE(r.status().message().find(args[0]), std::string::npos) << r.status();
  }
}

}  // namespace
}  // namespace kvtier
