#include "cache/placement.h"

#include <gtest/gtest.h>

#include <cmath>

namespace kvtier {
namespace {

// Four tiers whose drain times are 20 ms, 10 s, 5 min and 1 h, priced so
// that the hold price per byte-second (pi = P/C) falls by tier:
//
//   tier   C (bytes)  B (bytes/s)  D = C/B   pi ($/byte/s)
//   hbm    8e10       4e12         0.02 s    2700e-15
//   dram   1e12       1e11         10 s        32e-15
//   flash  3e13       1e11         300 s     3.75e-15
//   cold   3.6e14     1e11         3600 s       1e-15
//
// cost_t(T) = (s P/B)(T/D + 1) = s pi (T + D), so per byte and in units of
// 1e-15 $ the four costs at T are 2700(T+0.02), 32(T+10), 3.75(T+300) and
// 1(T+3600). Crossovers: hbm/dram at T = (320-54)/2668 = 0.0997 s,
// dram/flash at (1125-320)/28.25 = 28.5 s, flash/cold at (3600-1125)/2.75
// = 900 s.
constexpr double kUnit = 1e-15;

CostModel FourTiers(RematEconomics remat = {}) {
  auto tier = [](const char* name, double c, double b, double pi) {
    return TierEconomics{name, c, b, pi * kUnit * c};
  };
  return CostModel({tier("hbm", 8e10, 4e12, 2700), tier("dram", 1e12, 1e11, 32),
                    tier("flash", 3e13, 1e11, 3.75), tier("cold", 3.6e14, 1e11, 1)},
                   remat);
}

size_t Cheapest(const CostModel& m, double bytes, double idle_s) {
  const std::vector<size_t> order = TiersByCost(m.Costs(bytes, idle_s, 0, nullptr));
  return order.empty() ? SIZE_MAX : order[0];
}

TEST(CostModelTest, DrainTimesAreCapacityOverBandwidth) {
  const CostModel m = FourTiers();
  EXPECT_DOUBLE_EQ(m.DrainTimeS(0), 0.02);
  EXPECT_DOUBLE_EQ(m.DrainTimeS(1), 10);
  EXPECT_DOUBLE_EQ(m.DrainTimeS(2), 300);
  EXPECT_DOUBLE_EQ(m.DrainTimeS(3), 3600);
}

TEST(CostModelTest, HoldCostIsTheDesignFormula) {
  const CostModel m = FourTiers(RematEconomics{4e14, 2.5 / 3600, /*wait_cost_per_s=*/0});
  const double s = 1 << 20;
  // dram at T = 2 min: (s P/B)(T/D + 1) with P = 32e-15 * 1e12 = 0.032 $/s.
  const double p = 32 * kUnit * 1e12;
  EXPECT_NEAR(m.HoldCost(1, s, 120), s * p / 1e11 * (120 / 10.0 + 1), 1e-18);
  // By hand: 1048576 * 32e-15 * 130 = 4.362076e-6 $.
  EXPECT_NEAR(m.HoldCost(1, s, 120), 4.362076e-6, 1e-12);
  // A tier with no measured bandwidth is never a home.
  CostModel unknown({TierEconomics{"x", 1e9, 0, 1}}, {});
  EXPECT_TRUE(std::isinf(unknown.HoldCost(0, s, 1)));
  // A free tier costs nothing to hold in (not 0 * inf): only the engine's
  // wait for its fetch, s/B at P_wait.
  CostModel free_tier({TierEconomics{"x", 1e9, 1e9, 0}}, {});
  EXPECT_DOUBLE_EQ(free_tier.HoldCost(0, s, 1e6), s / 1e9 * RematEconomics{}.wait_cost_per_s);
  CostModel free_wait({TierEconomics{"x", 1e9, 1e9, 0}}, RematEconomics{4e14, 1, 0});
  EXPECT_EQ(free_wait.HoldCost(0, s, 1e6), 0.0);
}

// The expected cost: holding is paid either way, the fetch (the tier's
// bandwidth share and the engine's wait at P_wait) only when the block comes
// back, with probability p; so is the recompute of a dropped block.
TEST(CostModelTest, TheFetchAndTheRecomputeArePaidOnlyWhenTheBlockComesBack) {
  const double wait = 2.5 / 3600;
  const CostModel m = FourTiers(RematEconomics{4e14, 2.5 / 3600, wait});
  const double s = 1 << 20, pi = 32 * kUnit, big = 1e11;
  for (double p : {1.0, 0.5, 0.0}) {
    EXPECT_NEAR(m.HoldCost(1, s, 120, p), s * pi * 120 + p * s * (pi * 1e12 + wait) / big, 1e-15)
        << p;
  }
  const double flops = 2 * 7e10 * 64;
  EXPECT_NEAR(m.Costs(s, 120, flops, nullptr, 0.25).remat_cost, 0.25 * m.RematCost(flops), 1e-15);
  EXPECT_EQ(m.Costs(s, 120, flops, nullptr, 0.25).reuse_probability, 0.25);
}

// kvtierd's defaults (DRAM $3/GiB-month, 16 GiB at 7 GB/s; RocksDB
// $0.03/GiB-month, 100 GiB at 0.8 GB/s; a $2.50/h engine) for a vLLM block
// of 2.5 MiB with a 5-minute TTL and no history: holding it in DRAM costs
// 2.44e-3 GiB * 1.157e-6 $/GiB/s * 300 s = 8.5e-7 $ and its fetch 0.37 ms of
// the engine (2.6e-7 $); RocksDB holds it for 8.5e-9 $ but its 3.3 ms fetch
// costs the engine 2.3e-6 $. Without the engine's wait, RocksDB would win.
TEST(CostModelTest, TheEnginesWaitKeepsAHotBlockInDramRatherThanRocksDb) {
  constexpr double kGiB = 1024.0 * 1024 * 1024;
  auto stack = [&](double wait) {
    return CostModel({TierEconomics{"dram", 16 * kGiB, 7e9, CostPerSecond(16 * kGiB, 3.0)},
                      TierEconomics{"rocks", 100 * kGiB, 8e8, CostPerSecond(100 * kGiB, 0.03)}},
                     RematEconomics{4e14, 2.5 / 3600, wait});
  };
  const double s = 2.5 * 1024 * 1024;
  EXPECT_EQ(TiersByCost(stack(2.5 / 3600).Costs(s, 300, 0, nullptr)), (std::vector<size_t>{0, 1}));
  EXPECT_EQ(TiersByCost(stack(0).Costs(s, 300, 0, nullptr)), (std::vector<size_t>{1, 0}));
  // A block that is rarely used again is not worth DRAM's rent: at p = 0.1
  // the expected fetch from RocksDB is 2.3e-7 $, less than DRAM's 8.5e-7 $.
  EXPECT_EQ(TiersByCost(stack(2.5 / 3600).Costs(s, 300, 0, nullptr, 0.1)),
            (std::vector<size_t>{1, 0}));
}

TEST(ReuseEstimatorTest, ReuseProbabilityIsUsesOverWaitingPeriods) {
  ReuseEstimator r;
  const uint64_t cls = ReuseClassOf(42, 3);
  EXPECT_EQ(r.ReuseProbability(cls, false), 1.0) << "no history: assumed to come back";
  // 100 blocks inserted; 30 used again; 15 of those a second time.
  for (int i = 0; i < 100; ++i) r.ObserveInsert(cls, 0);
  for (int i = 0; i < 30; ++i) r.Observe(cls, 60, 0, /*first=*/true);
  EXPECT_EQ(r.ReuseProbability(cls, true), 1.0) << "30 reused periods: fewer than the minimum";
  for (int i = 0; i < 15; ++i) r.Observe(cls, 60, 0, /*first=*/false);
  EXPECT_DOUBLE_EQ(r.ReuseProbability(cls, false), 0.3);
  EXPECT_DOUBLE_EQ(r.ReuseProbability(cls, true), 15.0 / 45.0);
  // Past the window, counts halve: the ratio stays, recent traffic weighs more.
  for (int i = 0; i < 8000; ++i) r.ObserveInsert(cls, 0);
  EXPECT_LT(r.ReuseProbability(cls, false), 0.01);
  for (int i = 0; i < 8000; ++i) {
    r.ObserveInsert(cls, 0);
    r.Observe(cls, 60, 0, /*first=*/true);
  }
  EXPECT_GT(r.ReuseProbability(cls, false), 0.9) << "it follows the recent traffic";
}

TEST(ReuseEstimatorTest, TheSettledProbabilityWaitsForEnoughReuses) {
  ReuseEstimator r;
  const uint64_t cls = ReuseClassOf(3, 0);
  for (int i = 0; i < 100; ++i) r.ObserveInsert(cls, 0);
  EXPECT_EQ(r.ReuseProbability(cls, false), 0.0) << "every period still running";
  EXPECT_FALSE(r.SettledReuseProbability(cls, false)) << "no reuse seen yet: not settled";
  for (int i = 0; i < 31; ++i) r.Observe(cls, 60, 0, /*first=*/true);
  EXPECT_FALSE(r.SettledReuseProbability(cls, false));
  r.Observe(cls, 60, 0, /*first=*/true);
  ASSERT_TRUE(r.SettledReuseProbability(cls, false));
  EXPECT_DOUBLE_EQ(*r.SettledReuseProbability(cls, false), 0.32);
  EXPECT_FALSE(r.SettledReuseProbability(ReuseClassOf(4, 0), false)) << "an unknown class";
}

TEST(ReuseEstimatorTest, ClassesSplitNamespacesAndChainDepthsInLogBuckets) {
  EXPECT_NE(ReuseClassOf(1, 0), ReuseClassOf(2, 0));
  EXPECT_NE(ReuseClassOf(1, 0), ReuseClassOf(1, 1));
  EXPECT_NE(ReuseClassOf(1, 1), ReuseClassOf(1, 2));
  EXPECT_EQ(ReuseClassOf(1, 2), ReuseClassOf(1, 3));
  EXPECT_EQ(ReuseClassOf(1, 4), ReuseClassOf(1, 7));
  EXPECT_NE(ReuseClassOf(1, 7), ReuseClassOf(1, 8));
  EXPECT_EQ(ReuseClassOf(1, 64), ReuseClassOf(1, 100000));
  ReuseEstimator r;
  r.Observe(ReuseClassOf(1, 0), 1, 0);
  r.Observe(ReuseClassOf(1, 9), 100, 0);
  EXPECT_NEAR(*r.EstimateS(ReuseClassOf(1, 0)), 1, 1e-9);
  EXPECT_NEAR(*r.EstimateS(ReuseClassOf(1, 9)), 100, 1e-9);
}

TEST(CostModelTest, EachIdleTimeLandsWhereTheFormulaSays) {
  const CostModel m = FourTiers();
  const double s = 1 << 20;
  // T = 1 s: 2754, 352, 1128.75, 3601 -> dram.
  EXPECT_EQ(Cheapest(m, s, 1), 1u);
  // T = 2 min: 324054, 4160, 1575, 3720 -> flash.
  EXPECT_EQ(Cheapest(m, s, 120), 2u);
  // T = 30 min: 4.86e6, 57920, 7875, 5400 -> cold.
  EXPECT_EQ(Cheapest(m, s, 1800), 3u);
  // T = 3 h: 2.9e7, 345920, 41625, 14400 -> cold.
  EXPECT_EQ(Cheapest(m, s, 10800), 3u);
  // T = 10 ms, below the hbm/dram crossover: 81, 320.3, ... -> hbm.
  EXPECT_EQ(Cheapest(m, s, 0.01), 0u);
  // Either side of the crossovers computed above.
  EXPECT_EQ(Cheapest(m, s, 28.0), 1u);
  EXPECT_EQ(Cheapest(m, s, 29.0), 2u);
  EXPECT_EQ(Cheapest(m, s, 899.0), 2u);
  EXPECT_EQ(Cheapest(m, s, 901.0), 3u);
  // The full order at T = 2 min: flash, cold, dram, hbm.
  EXPECT_EQ(TiersByCost(m.Costs(s, 120, 0, nullptr)), (std::vector<size_t>{2, 3, 1, 0}));
}

TEST(CostModelTest, AllowedTiersOnly) {
  const CostModel m = FourTiers();
  // At T = 2 min with flash refused (full, or too slow), cold is next.
  PlacementCosts c = m.Costs(1 << 20, 120, 0, [](size_t t) { return t != 2; });
  EXPECT_TRUE(std::isinf(c.tier_costs[2]));
  EXPECT_EQ(TiersByCost(c), (std::vector<size_t>{3, 1, 0}));
}

TEST(CostModelTest, ATinyModelIsDroppedRatherThanDemoted) {
  // Recompute: $2.50/h of GPU at 4e14 FLOP/s. A 64-token block of a 260K
  // parameter model is 2 * 2.6e5 * 64 = 3.33e7 FLOPs: 8.32e-8 s of GPU,
  // 5.78e-11 $. Its KV (5 layers, K and V, 4 heads of 8, fp32) is 81920
  // bytes. Even fetched at once (T = 0), the cheapest tier below hbm costs
  // min(32 * 10, 3.75 * 300, 1 * 3600) * 81920e-15 = 2.62e-8 $: recomputing
  // is cheaper than any fetch, so it is dropped, whatever its idle time.
  const CostModel m = FourTiers();
  const double tiny_flops = 2 * 2.6e5 * 64;
  EXPECT_NEAR(m.RematCost(tiny_flops), 5.78e-11, 1e-13);
  for (double idle_s : {0.0, 1.0, 120.0, 10800.0}) {
    EXPECT_TRUE(DropIsCheapest(m.Costs(81920, idle_s, tiny_flops, [](size_t t) { return t > 0; })))
        << idle_s;
  }
  // A 70B model's 64-token block (2 * 7e10 * 64 FLOPs: 0.0224 s of GPU,
  // 1.56e-5 $) of 20 MiB at T = 2 min: flash 20971520 * 3.75e-15 * 420 =
  // 3.30e-5 $, cold 20971520 * 1e-15 * 3720 = 7.80e-5 $, dram 20971520 *
  // 32e-15 * 130 = 8.72e-5 $: all dearer than recompute, dropped. At T = 1 s
  // dram costs 20971520 * 32e-15 * 11 = 7.38e-6 $: kept. With a GPU ten
  // times dearer (1.56e-4 $) it is kept at 2 min too, in flash.
  const double big_flops = 2 * 7e10 * 64;
  const auto below_hbm = [](size_t t) { return t > 0; };
  EXPECT_TRUE(DropIsCheapest(m.Costs(20971520, 120, big_flops, below_hbm)));
  EXPECT_FALSE(DropIsCheapest(m.Costs(20971520, 1, big_flops, below_hbm)));
  const CostModel pricey_gpu = FourTiers(RematEconomics{4e14, 25.0 / 3600});
  const PlacementCosts kept = pricey_gpu.Costs(20971520, 120, big_flops, below_hbm);
  EXPECT_FALSE(DropIsCheapest(kept));
  EXPECT_EQ(TiersByCost(kept)[0], 2u);
  // Unknown FLOPs: never dropped.
  EXPECT_FALSE(DropIsCheapest(m.Costs(81920, 1e9, 0, below_hbm)));
}

TEST(ExpectedIdleTest, TtlCapsTheEstimate) {
  EXPECT_DOUBLE_EQ(ExpectedIdleS(300'000, std::nullopt, 600), 300);  // the TTL alone
  EXPECT_DOUBLE_EQ(ExpectedIdleS(300'000, 20.0, 600), 20);           // the estimate
  EXPECT_DOUBLE_EQ(ExpectedIdleS(300'000, 9000.0, 600), 300);        // capped
  EXPECT_DOUBLE_EQ(ExpectedIdleS(0, std::nullopt, 600), 600);        // the default
  EXPECT_DOUBLE_EQ(ExpectedIdleS(0, 42.0, 600), 42);
}

TEST(ReuseEstimatorTest, GeometricMeanThenSmoothed) {
  ReuseEstimator r(0.05, 2);
  EXPECT_FALSE(r.EstimateS(7).has_value());
  r.Observe(7, 10, 1);
  EXPECT_NEAR(*r.EstimateS(7), 10, 1e-9);
  r.Observe(7, 1000, 2);  // weights 1, 1/2: the geometric mean of 10 and 1000
  EXPECT_NEAR(*r.EstimateS(7), 100, 1e-9);
  // After many samples each new one weighs 0.05.
  for (int i = 0; i < 200; ++i) r.Observe(7, 100, 3);
  const double before = std::log(*r.EstimateS(7));
  r.Observe(7, 100 * std::exp(1.0), 4);
  EXPECT_NEAR(std::log(*r.EstimateS(7)) - before, 0.05, 1e-9);
  // Bounded: a third stream pushes out the least recently updated.
  r.Observe(8, 1, 5);
  r.Observe(9, 1, 6);
  EXPECT_EQ(r.streams(), 2u);
  EXPECT_FALSE(r.EstimateS(7).has_value());
  EXPECT_TRUE(r.EstimateS(9).has_value());
}

TEST(CostPerSecondTest, GibMonth) {
  // 1 TiB at $3/GiB-month: 1024 * 3 / 2592000 $/s.
  EXPECT_NEAR(CostPerSecond(1024.0 * (1 << 30), 3.0), 1024 * 3.0 / 2592000, 1e-12);
}

}  // namespace
}  // namespace kvtier
