#include "common/flags.h"

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

TEST(FlagsTest, ParseNonNegativeTakesDecimalsAndExponents) {
  EXPECT_DOUBLE_EQ(ParseNonNegative("2.5").value(), 2.5);
  EXPECT_DOUBLE_EQ(ParseNonNegative("4e14").value(), 4e14);
  EXPECT_DOUBLE_EQ(ParseNonNegative("0").value(), 0);
  for (const char* bad : {"", "-1", "1x", "nan", "inf", "1e999"}) {
    EXPECT_FALSE(ParseNonNegative(bad).ok()) << bad;
  }
}

}  // namespace
}  // namespace kvtier
