#include "tools/flags.h"

#include "tools/daemon.h"

#include <gtest/gtest.h>

namespace kvtier {
namespace {

TEST(FlagsTest, ParsesValuesBoolsAndPositionals) {
  FlagSet f;
  f.Value("addr");
  f.Value("ttl");
  f.Bool("json");
  ASSERT_TRUE(f.Parse({"--addr", "h:1", "stats", "--json", "--ttl=30"}).ok());
  EXPECT_EQ(f.Get("addr"), "h:1");
  EXPECT_EQ(f.Get("ttl"), "30");
  EXPECT_TRUE(f.Has("json"));
  EXPECT_EQ(f.positional(), std::vector<std::string>{"stats"});
}

TEST(FlagsTest, ErrorsNameTheFlag) {
  FlagSet f;
  f.Value("addr");
  f.Bool("json");
  Status s = f.Parse({"--nope"});
  EXPECT_NE(s.message().find("--nope"), std::string::npos);
  FlagSet g;
  g.Value("addr");
  EXPECT_NE(g.Parse({"--addr"}).message().find("needs a value"), std::string::npos);
  FlagSet h;
  h.Bool("json");
  EXPECT_FALSE(h.Parse({"--json=1"}).ok());
}

TEST(FlagsTest, ParseBytesTakesBinaryUnits) {
  EXPECT_EQ(*ParseBytes("4096"), 4096u);
  EXPECT_EQ(*ParseBytes("64K"), 64u << 10);
  EXPECT_EQ(*ParseBytes("512M"), 512u << 20);
  EXPECT_EQ(*ParseBytes("2GiB"), 2ull << 30);
  EXPECT_EQ(*ParseBytes("1tb"), 1ull << 40);
  for (const char* bad : {"", "M", "12X", "-1", "1.5G", "99999999999999999999", "20000000T"}) {
    EXPECT_FALSE(ParseBytes(bad).ok()) << bad;
  }
}

TEST(FlagsTest, ParseTokenListTakesIdsAndRanges) {
  EXPECT_EQ(*ParseTokenList("1..4,9,2..2", 100), (std::vector<int32_t>{1, 2, 3, 4, 9, 2}));
  for (const char* bad : {"", "1,,2", "a", "5..3", "1..", "-1", "3000000000"}) {
    EXPECT_FALSE(ParseTokenList(bad, 100).ok()) << bad;
  }
  EXPECT_EQ(ParseTokenList("0..100", 100).status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(ParseTokenList("0..2147483647", 1 << 20).status().code(),
            StatusCode::kResourceExhausted);
}

}  // namespace
TEST(FlagsTest, ParseNonNegativeTakesDecimalsAndExponents) {
  EXPECT_DOUBLE_EQ(ParseNonNegative("2.5").value(), 2.5);
  EXPECT_DOUBLE_EQ(ParseNonNegative("4e14").value(), 4e14);
  EXPECT_DOUBLE_EQ(ParseNonNegative("0").value(), 0);
  for (const char* bad : {"", "-1", "1x", "nan", "inf", "1e999"}) {
    EXPECT_FALSE(ParseNonNegative(bad).ok()) << bad;
  }
}

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

}  // namespace kvtier
