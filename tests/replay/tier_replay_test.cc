// The multi-tier replay: replays on small hand traces whose hits, moves,
// drops, expiries, TTFT and costs can be worked out by hand. The scenario
// files themselves are tests/replay/tier_scenario_test.cc's.
#include "replay/tier_replay.h"

#include <gtest/gtest.h>

#include <iomanip>
#include <sstream>

#include "cache/placement.h"

namespace kvtier {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

// With 16-token blocks and 64 MiB of KV per token, a block is exactly 1 GiB:
// a tier of N GiB holds N blocks.
constexpr int kBlockTokens = 16;
constexpr double kBytesPerToken = 64.0 * 1024 * 1024;

Trace CsvTrace(const std::string& csv) {
  std::istringstream in(csv);
  TraceOptions o;
  o.format = TraceFormat::kCsv;
  o.block_tokens = kBlockTokens;
  return std::move(ParseTrace(in, "t", o).value());
}

// A scenario of tiers {name, GiB, GB/s, $/GiB-month}, the first on top.
struct T {
  std::string name;
  double gib, gbps, price;
};
std::string ScenarioJson(const std::vector<T>& tiers, double active_params = 1e9,
                         double ttl_s = 0) {
  std::ostringstream j;
  j << std::setprecision(17);
  j << R"({"name": "s", "model": {"kv_bytes_per_token": )" << kBytesPerToken
    << R"(, "active_params": )" << active_params
    << R"(}, "gpu": {"prefill_flops_per_s": 1e12, "usd_per_hour": 3.6}, "ttl_s": )" << ttl_s
    << R"(, "tiers": [)";
  for (size_t i = 0; i < tiers.size(); ++i) {
    j << (i ? "," : "") << R"({"name": ")" << tiers[i].name << R"(", "capacity_gib": )"
      << tiers[i].gib << R"(, "read_gb_per_s": )" << tiers[i].gbps << R"(, "usd_per_gib_month": )"
      << tiers[i].price << R"(, "policy": "lru"})";
  }
  j << "]}";
  return j.str();
}

TierScenario Scenario(const std::vector<T>& tiers, double active_params = 1e9, double ttl_s = 0) {
  Result<TierScenario> s = ParseTierScenario(ScenarioJson(tiers, active_params, ttl_s), "s.json");
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return std::move(s).value();
}

// Conversations of growing turns: a reuses x;y and grows, b shares x.
const char kConversations[] =
    "0,a,x;y\n"
    "1000,b,x;p\n"
    "2000,a,x;y;z\n"
    "3000,c,q;r;s;t\n"
    "4000,b,x;p;u\n"
    "5000,a,x;y;z;w\n"
    "6000,c,q;r;s;t;v\n"
    "7000,a,x;y;z;w;k\n";

uint64_t InfinitePrefixHits(const Trace& t) {
  std::vector<bool> seen(t.distinct_blocks, false);
  uint64_t hits = 0;
  for (const TraceRequest& r : t.requests) {
    bool run = true;
    for (uint32_t i = 0; i < r.num_blocks; ++i) {
      const uint32_t id = t.blocks[r.first_block + i];
      run = run && seen[id];
      hits += run;
      seen[id] = true;
    }
  }
  return hits;
}

// One tier that holds everything: every prefix reuse is a hit from it, as in
// the everything-in-the-top-tier reference, and nothing moves.
TEST(TierReplayTest, ATierThatHoldsEverythingHitsEveryPrefixReuse) {
  const Trace trace = CsvTrace(kConversations);
  Result<TierReplayResult> r = ReplayTiers(trace, Scenario({{"hbm", 100, 1000, 10}}));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->block_hits, InfinitePrefixHits(trace));
  EXPECT_EQ(r->block_hits, 16u);  // x; x y; x p; x y z; q r s t; x y z w
  EXPECT_EQ(r->tiers[0].hit_blocks, r->block_hits);
  EXPECT_EQ(r->tiered.hit_tokens, r->all_in_top.hit_tokens);
  EXPECT_EQ(r->tiers[0].placed_blocks, trace.distinct_blocks);
  EXPECT_EQ(r->demotions + r->promotions + r->remat_drops + r->drops, 0u);
  EXPECT_EQ(r->moved_bytes[0][0], 0);
  EXPECT_EQ(r->block_refs, trace.blocks.size());
}

// A small top tier over a large one, prices 0: the stack order decides, so
// blocks enter the top and its victims are demoted, and hits come from both
// (the second request finds x still in the top, where the first put it).
TEST(TierReplayTest, VictimsOfASmallTopTierAreDemotedAndStillHit) {
  const Trace trace = CsvTrace(kConversations);
  Result<TierReplayResult> r =
      ReplayTiers(trace, Scenario({{"hbm", 3, 1000, 0}, {"dram", 100, 100, 0}}));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->block_hits, InfinitePrefixHits(trace));  // the second tier keeps them all
  EXPECT_GT(r->tiers[0].hit_blocks, 0u);
  EXPECT_GT(r->tiers[1].hit_blocks, 0u);
  EXPECT_EQ(r->tiers[0].hit_blocks + r->tiers[1].hit_blocks, r->block_hits);
  EXPECT_GT(r->demotions, 0u);
  // Every block is 1 GiB, and every demotion went from hbm to dram.
  EXPECT_EQ(r->moved_bytes[0][1], static_cast<double>(r->demotions) * kGiB);
  EXPECT_EQ(r->moved_bytes[1][0], static_cast<double>(r->promotions) * kGiB);
  EXPECT_EQ(r->tiers[0].placed_blocks, trace.distinct_blocks);  // inserts go to the top
  EXPECT_EQ(r->tiers[1].placed_blocks, 0u);
  for (const OccupancySample& o : r->occupancy) {
    EXPECT_LE(o.used_bytes[0], 3 * kGiB);
    EXPECT_LE(o.used_bytes[1], 100 * kGiB);
  }
  EXPECT_EQ(r->occupancy.back().used_bytes[0] + r->occupancy.back().used_bytes[1],
            trace.distinct_blocks * kGiB);
}

// Recomputing is nearly free (a tiny model) and the tier below is dear: the
// top tier's victims are dropped for recompute, never demoted.
TEST(TierReplayTest, VictimsCheaperToRecomputeAreDropped) {
  const Trace trace = CsvTrace(kConversations);
  Result<TierReplayResult> r = ReplayTiers(
      trace, Scenario({{"hbm", 2, 1000, 0}, {"dram", 100, 100, 1e6}}, /*active_params=*/1));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_GT(r->remat_drops, 0u);
  EXPECT_EQ(r->demotions, 0u);
  EXPECT_EQ(r->tiers[1].hit_blocks, 0u);
  EXPECT_LT(r->block_hits, InfinitePrefixHits(trace));
}

// A block whose rent passes its prefill's cost while it waits is dropped by
// the age review (rent or buy), as the oracle recomputes it: a 1 GiB block
// at $30/GiB-month rents for 1.16e-5 $/s; the prefill of its 16 tokens of a
// 1e9-parameter model at 1e12 FLOP/s and $3.60/h costs 3.2e-5 $. So after
// about 2.7 s of waiting it would be dropped, but not before its expected
// idle time (with no reuse seen, the scenario's default: 600 s); a parent
// once its child is.
TEST(TierReplayTest, ABlockWaitingLongerThanItsPrefillIsWorthIsDropped) {
  const Trace trace = CsvTrace("0,a,x;y\n1000,b,z\n3000,c,w\n650000,d,v\n700000,a,x;y\n");
  Result<TierReplayResult> r = ReplayTiers(trace, Scenario({{"hbm", 8, 1000, 30}}));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_GE(r->aged_out, 2u);
  EXPECT_EQ(r->aged_out, r->remat_drops);
  EXPECT_EQ(r->hit_tokens, 0u) << "the late request recomputes";
  EXPECT_EQ(r->oracle.hit_tokens, 0u) << "so does the oracle";
  // At $0.03/GiB-month the crossing is 2700 s: kept.
  const Result<TierReplayResult> cheap = ReplayTiers(trace, Scenario({{"hbm", 8, 1000, 0.03}}));
  ASSERT_TRUE(cheap.ok());
  EXPECT_EQ(cheap->aged_out, 0u);
  EXPECT_EQ(cheap->hit_tokens, 32u);
}

// Two requests for the same two full blocks, a minute apart: the second
// hits both. TTFT, GPU time and costs by hand.
TEST(TierReplayTest, TtftAndCostsAddUpByHand) {
  const Trace trace = CsvTrace("0,a,x;y\n60000,a,x;y\n");
  // Holding a block a minute costs less than its prefill: it waits.
  const double gbps = 1000, price = 0.3;
  Result<TierReplayResult> r = ReplayTiers(trace, Scenario({{"hbm", 4, gbps, price}}));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const double s_per_token = 2 * 1e9 / 1e12;  // 2 · active_params / FLOP/s
  const double cold = 32 * s_per_token;
  const double fetch = 2 * kGiB / (gbps * 1e9);
  EXPECT_DOUBLE_EQ(r->duration_s, 60);
  EXPECT_EQ(r->hit_tokens, 32u);
  EXPECT_DOUBLE_EQ(r->no_cache.gpu_s, 2 * cold);
  EXPECT_DOUBLE_EQ(r->no_cache.mean_ttft_s, cold);
  EXPECT_DOUBLE_EQ(r->tiered.gpu_s, cold + fetch);
  EXPECT_DOUBLE_EQ(r->tiered.mean_ttft_s, (cold + fetch) / 2);
  EXPECT_DOUBLE_EQ(r->ttft_saved_s, cold - fetch);
  EXPECT_DOUBLE_EQ(r->tiered.gpu_usd, (cold + fetch) * 3.6 / 3600);
  EXPECT_DOUBLE_EQ(r->tiers[0].usd, CostPerSecond(4 * kGiB, price) * 60);
  EXPECT_DOUBLE_EQ(r->tiered.tier_usd, r->tiers[0].usd);
  EXPECT_GT(r->tiered.tier_usd_used, 0);
  EXPECT_LT(r->tiered.tier_usd_used, r->tiered.tier_usd / 2 + 1e-12);  // at most 2 of 4 blocks
  // Everything in the top tier: sized to the footprint (2 blocks).
  EXPECT_DOUBLE_EQ(r->all_in_top.tier_usd, CostPerSecond(2 * kGiB, price) * 60);
  EXPECT_EQ(r->all_in_top.hit_tokens, 32u);
  EXPECT_DOUBLE_EQ(r->all_in_top.gpu_s, cold + fetch);
  EXPECT_EQ(r->no_cache.tier_usd, 0);
  EXPECT_DOUBLE_EQ(r->tiered.usd_per_mtok(), (r->tiered.tier_usd + r->tiered.gpu_usd) / 64 * 1e6);
}

// The oracle by hand, on the same two requests a minute apart: each block's
// one reuse is held for 60 s or recomputed, whichever is cheaper. At $30 per
// GiB-month a 1 GiB page held a minute costs 6.9e-4 $, more than
// recomputing its 16 tokens (0.032 s of a $3.60/h GPU: 3.2e-5 $): the oracle
// recomputes, and the tiered stack, which held them, costs more. At $0.001
// it holds both (2.3e-8 $ each) and fetches them.
TEST(TierReplayTest, TheOracleHoldsOrRecomputesEachReuseWhicheverIsCheaper) {
  const Trace trace = CsvTrace("0,a,x;y\n60000,a,x;y\n");
  const double s_per_token = 2 * 1e9 / 1e12;
  const double cold = 32 * s_per_token, gbps = 1000;
  const double fetch = 2 * kGiB / (gbps * 1e9);
  Result<TierReplayResult> dear = ReplayTiers(trace, Scenario({{"hbm", 4, gbps, 30}}));
  ASSERT_TRUE(dear.ok()) << dear.status().ToString();
  EXPECT_EQ(dear->oracle.hit_tokens, 0u);
  EXPECT_DOUBLE_EQ(dear->oracle.gpu_s, 2 * cold);
  EXPECT_EQ(dear->oracle.tier_usd_used, 0);
  EXPECT_LT(dear->oracle.usd_per_mtok_used(), dear->tiered.usd_per_mtok_used());
  Result<TierReplayResult> cheap = ReplayTiers(trace, Scenario({{"hbm", 4, gbps, 0.001}}));
  ASSERT_TRUE(cheap.ok()) << cheap.status().ToString();
  EXPECT_EQ(cheap->oracle.hit_tokens, 32u);
  EXPECT_DOUBLE_EQ(cheap->oracle.gpu_s, cold + fetch);
  EXPECT_NEAR(cheap->oracle.tier_usd_used, 2 * CostPerSecond(kGiB, 0.001) * 60, 1e-15);
  EXPECT_EQ(cheap->oracle.tier_usd, cheap->oracle.tier_usd_used) << "it provisions what it holds";
  EXPECT_DOUBLE_EQ(cheap->oracle.mean_ttft_s, (cold + fetch) / 2);
  // The tiered stack held the same blocks as long; its held bytes are
  // sampled over time (occupancy samples), so they agree to the sampling.
  EXPECT_LE(cheap->oracle.usd_per_mtok_used(), cheap->tiered.usd_per_mtok_used() * (1 + 1e-4));
  // With a TTL shorter than the reuse interval nothing may be held.
  Result<TierReplayResult> ttl =
      ReplayTiers(trace, Scenario({{"hbm", 4, gbps, 0.001}}, 1e9, /*ttl_s=*/30));
  ASSERT_TRUE(ttl.ok());
  EXPECT_EQ(ttl->oracle.hit_tokens, 0u);
}

// A 1-second TTL and requests 10 s apart: every block has expired when it is
// asked for again.
TEST(TierReplayTest, BlocksPastTheirTtlAreNotHit) {
  const std::string csv = "0,a,x;y\n10000,a,x;y\n20000,a,x;y\n";
  Result<TierReplayResult> with_ttl =
      ReplayTiers(CsvTrace(csv), Scenario({{"hbm", 8, 1000, 1}}, 1e9, /*ttl_s=*/1));
  ASSERT_TRUE(with_ttl.ok()) << with_ttl.status().ToString();
  EXPECT_EQ(with_ttl->block_hits, 0u);
  EXPECT_GT(with_ttl->expired, 0u);
  Result<TierReplayResult> without =
      ReplayTiers(CsvTrace(csv), Scenario({{"hbm", 8, 1000, 1}}, 1e9, /*ttl_s=*/0));
  ASSERT_TRUE(without.ok());
  EXPECT_EQ(without->block_hits, 4u);
}

TEST(TierReplayTest, ReplaysAreDeterministicAndSampleOccupancyOverTheTrace) {
  const Trace trace = CsvTrace(kConversations);
  const TierScenario sc =
      Scenario({{"hbm", 2, 1000, 20}, {"dram", 3, 100, 3}, {"flash", 50, 10, 0.1}});
  Result<TierReplayResult> a = ReplayTiers(trace, sc);
  Result<TierReplayResult> b = ReplayTiers(trace, sc);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->block_hits, b->block_hits);
  EXPECT_EQ(a->moved_bytes, b->moved_bytes);
  for (size_t i = 0; i < sc.tiers.size(); ++i) {
    EXPECT_EQ(a->tiers[i].hit_blocks, b->tiers[i].hit_blocks);
    EXPECT_EQ(a->tiers[i].placed_blocks, b->tiers[i].placed_blocks);
  }
  ASSERT_GE(a->occupancy.size(), static_cast<size_t>(sc.occupancy_samples));
  double last = -1;
  for (const OccupancySample& o : a->occupancy) {
    EXPECT_GE(o.time_s, last);
    last = o.time_s;
    ASSERT_EQ(o.used_bytes.size(), 3u);
  }
  EXPECT_DOUBLE_EQ(a->occupancy.back().time_s, 7.0);
  EXPECT_EQ(a->occupancy.back().all_in_top_bytes, trace.distinct_blocks * kGiB);
}

TEST(TierReplayTest, AnEmptyTraceCostsNothingAndHasNoNaN) {
  Result<TierReplayResult> r = ReplayTiers(CsvTrace(""), Scenario({{"hbm", 4, 1000, 1}}));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->requests, 0u);
  EXPECT_EQ(r->duration_s, 0);
  EXPECT_EQ(r->tiered.tier_usd, 0);
  for (const CostSummary* c : {&r->no_cache, &r->tiered, &r->all_in_top}) {
    EXPECT_EQ(c->gpu_s, 0);
    EXPECT_EQ(c->usd_per_mtok(), 0);
    EXPECT_EQ(c->tier_usd_used, 0);
    EXPECT_EQ(c->mean_ttft_s, 0);
  }
}

TEST(TierReplayTest, RefusesATierSmallerThanOneBlock) {
  Result<TierReplayResult> r =
      ReplayTiers(CsvTrace(kConversations), Scenario({{"hbm", 0.5, 1000, 1}}));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("less than one block"), std::string::npos);
}

}  // namespace
}  // namespace kvtier
