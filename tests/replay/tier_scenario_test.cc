// The scenario files of the multi-tier replay: fields, defaults and a KV
// geometry read, and every malformed file refused naming the field.
#include "replay/tier_scenario.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

namespace kvtier {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

TEST(TierScenarioTest, ParsesAScenarioWithAGeometryAndDefaults) {
  Result<TierScenario> s = ParseTierScenario(R"({
      "model": {"name": "llama", "layers": 32, "kv_heads": 8, "head_dim": 128, "dtype": "bf16",
                "active_params": 8e9},
      "tiers": [{"name": "hbm", "capacity_gib": 40, "read_gb_per_s": 2000, "usd_per_gib_month": 22.8},
                {"name": "dram", "capacity_gib": 512, "read_gb_per_s": 50, "usd_per_gib_month": 3,
                 "policy": "s3fifo"}]})",
                                             "dir/my-scenario.json");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->name, "my-scenario");                         // the file's stem
  EXPECT_EQ(s->kv_bytes_per_token, 32.0 * 8 * 128 * 2 * 2);  // K and V, 2 bytes each
  EXPECT_EQ(s->active_params, 8e9);
  EXPECT_EQ(s->prefill_flops_per_s, 4e14);  // defaults
  EXPECT_EQ(s->gpu_usd_per_hour, 2.5);
  EXPECT_EQ(s->fetch_budget_s, 1.0);
  EXPECT_EQ(s->ttl_ms, 0);
  ASSERT_EQ(s->tiers.size(), 2u);
  EXPECT_EQ(s->tiers[0].capacity_bytes, 40 * kGiB);
  EXPECT_EQ(s->tiers[0].read_bytes_per_s, 2000e9);
  EXPECT_EQ(s->tiers[0].policy, "lru") << "kvtierd's default";
  EXPECT_EQ(s->tiers[1].policy, "s3fifo");
}

TEST(TierScenarioTest, RefusesMalformedScenariosNamingTheField) {
  const std::string model = R"("model": {"kv_bytes_per_token": 1024, "active_params": 1e9})";
  const std::string tier =
      R"({"name": "hbm", "capacity_gib": 1, "read_gb_per_s": 1, "usd_per_gib_month": 1})";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{not json", "not valid JSON"},
      {"[]", "must be an object"},
      {R"({"tiers": [)" + tier + "]}", "model is required"},
      {"{" + model + R"(, "tiers": [)" + tier + R"(], "tier": 1})", "tier is not a field"},
      {"{" + model + R"(, "tiers": []})", "tiers must be a list of 1 to 8"},
      {"{" + model + "}", "tiers must be a list"},
      {"{" + model + R"(, "tiers": [)" + tier + "," + tier + "]}", "'hbm' is used twice"},
      {"{" + model +
           R"(, "tiers": [{"name": "x", "capacity_gib": -1, "read_gb_per_s": 1, "usd_per_gib_month": 1}]})",
       "tiers[0].capacity_gib must be a finite number > 0"},
      {"{" + model +
           R"(, "tiers": [{"name": "x", "capacity_gib": 1, "read_gb_per_s": "fast", "usd_per_gib_month": 1}]})",
       "tiers[0].read_gb_per_s must be a number"},
      {"{" + model +
           R"(, "tiers": [{"name": "x", "capacity_gib": 1, "read_gb_per_s": 1, "usd_per_gib_month": 1, "policy": "mru"}]})",
       "tiers[0].policy 'mru' is not an eviction policy"},
      {"{" + model +
           R"(, "tiers": [{"name": "x", "capacity_gib": 1, "read_gb_per_s": 1, "usd_per_gib_month": 1, "admission": "bloom"}]})",
       "tiers[0].admission 'bloom' is not an admission filter"},
      {"{" + model +
           R"(, "tiers": [{"name": "x", "capacity_gib": 1, "read_gb_per_s": 1, "usd_per_gib_month": 1, "admission": 3}]})",
       "tiers[0].admission must be a non-empty string"},
      {"{" + model + R"(, "tiers": [{"name": "x", "capacity_gib": 1, "read_gb_per_s": 1}]})",
       "tiers[0].usd_per_gib_month is required"},
      {R"({"model": {"kv_bytes_per_token": 1024, "layers": 2, "active_params": 1}, "tiers": [)" +
           tier + "]}",
       "layers and kv_bytes_per_token exclude each other"},
      {R"({"model": {"layers": 2, "kv_heads": 1, "head_dim": 8, "dtype": "f8", "active_params": 1}, "tiers": [)" +
           tier + "]}",
       "model.dtype must be f32, f16 or bf16"},
      {R"({"model": {"layers": 2.5, "kv_heads": 1, "head_dim": 8, "active_params": 1}, "tiers": [)" +
           tier + "]}",
       "whole numbers"},
      {R"({"model": {"kv_bytes_per_token": 1024}, "tiers": [)" + tier + "]}",
       "model.active_params is required"},
      {"{" + model + R"(, "ttl_s": -5, "tiers": [)" + tier + "]}",
       "ttl_s must be a finite number >= 0"},
      {"{" + model + R"(, "gpu": {"usd_per_hour": 1, "flops": 2}, "tiers": [)" + tier + "]}",
       "gpu.flops is not a field"},
      {"{" + model + R"(, "tiers": [)" + tier + "," + tier + "," + tier + "," + tier + "," + tier +
           "," + tier + "," + tier + "," + tier + "," + tier + "]}",
       "1 to 8"},
  };
  for (const auto& [json, want] : cases) {
    Result<TierScenario> s = ParseTierScenario(json, "bad.json");
    ASSERT_FALSE(s.ok()) << json;
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument) << json;
    EXPECT_NE(s.status().message().find(want), std::string::npos)
        << json << "\n  -> " << s.status().message();
    EXPECT_NE(s.status().message().find("bad.json"), std::string::npos) << s.status().message();
  }
  EXPECT_TRUE(ReadTierScenario("/nonexistent/scenario.json").status().IsNotFound());
}

// A scenario built in code, as ReplayTiers takes it, is checked as a file's.
TEST(TierScenarioTest, ValidatesAScenarioBuiltInCode) {
  TierScenario s;
  s.kv_bytes_per_token = 1024;
  s.active_params = 1e9;
  EXPECT_EQ(ValidateTierScenario(s).code(), StatusCode::kInvalidArgument);  // no tiers
  s.tiers.push_back({"hbm", 1 * kGiB, 1e9, 1, "lru"});
  EXPECT_TRUE(ValidateTierScenario(s).ok()) << ValidateTierScenario(s).ToString();
  s.tiers[0].policy = "mru";
  EXPECT_NE(ValidateTierScenario(s).message().find("unknown eviction policy 'mru'"),
            std::string::npos);
  s.tiers[0].policy = "lru";
  s.tiers[0].read_bytes_per_s = 0;
  EXPECT_EQ(ValidateTierScenario(s).code(), StatusCode::kInvalidArgument);
  s.tiers[0].read_bytes_per_s = 1e9;
  s.ttl_ms = -1;
  EXPECT_EQ(ValidateTierScenario(s).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvtier
