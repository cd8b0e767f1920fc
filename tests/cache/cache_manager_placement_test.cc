// CacheManager with the drain-time cost model: where inserts land, what
// victims become, promotion after hits, TTL refresh and the expiry sweep.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <random>
#include <thread>

#include "cache/cache_manager.h"
#include "tiers/dram/dram_tier.h"
#include "tiers/flash/flash_tier.h"
#include "tiers/rocks/rocks_tier.h"

namespace kvtier {
namespace {

constexpr uint64_t kPage = 64 << 10;
constexpr uint64_t kBlock = 60 << 10;  // 61440 bytes
constexpr double kUnit = 1e-15;        // $ per byte-second of the hold prices below

BlockKey K(uint64_t i) { return BlockKey{0x5eed, i}; }

std::vector<std::byte> Payload(size_t n, uint8_t seed) {
  std::vector<std::byte> p(n);
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<std::byte>((i * 131 + seed) & 0xff);
  return p;
}

// A tier of host memory with the given drain time and hold price (pi, in
// kUnit $ per byte-second), as in tests/cache/placement_test.cc.
struct TierSpec {
  const char* name;
  double drain_s;
  double pi;
  uint64_t pages = 64;
};

class CacheManagerPlacementTest : public ::testing::Test {
 protected:
  // Host-memory tiers as specified, each with `policy`.
  std::vector<TierSlot> Slots(const std::vector<TierSpec>& specs, const std::string& policy) {
    std::vector<TierSlot> slots;
    for (const TierSpec& spec : specs) {
      DramTierOptions o;
      o.name = spec.name;
      o.capacity_bytes = spec.pages * kPage;
      o.page_bytes = kPage;
      o.clock = &clock_;
      o.read_bytes_per_s = static_cast<double>(o.capacity_bytes) / spec.drain_s;
      o.write_bytes_per_s = 1e9;
      auto tier = OpenDramTier(o);
      EXPECT_TRUE(tier.ok()) << tier.status();
      tiers_.push_back(tier->get());
      slots.push_back({std::move(*tier), NewEvictionPolicy(policy),
                       spec.pi * kUnit * static_cast<double>(o.capacity_bytes)});
    }
    return slots;
  }

  // The engine's wait for a fetch is priced at 0 unless a test prices it:
  // these tiers are tiny and slow, and their crossovers are the drain-time
  // formula's (placement_test.cc prices the wait).
  void Open(const std::vector<TierSpec>& specs, PlacementOptions placement = NoWait()) {
    std::vector<TierSlot> slots = Slots(specs, "lru");
    CacheManagerOptions opts;
    opts.clock = &clock_;
    opts.sweep_interval_ms = 0;
    opts.background_promotion = false;
    placement.fetch_budget_s = 1e9;  // the slow test tiers are not held to a TTFT target
    opts.placement = placement;
    auto m = CacheManager::Open(std::move(slots), opts);
    ASSERT_TRUE(m.ok()) << m.status();
    cache_ = std::move(*m);
  }

  static PlacementOptions NoWait() {
    PlacementOptions p;
    p.remat.wait_cost_per_s = 0;
    return p;
  }

  uint32_t TierOf(const BlockKey& k) {
    Result<IndexEntry> e = cache_->Find(k);
    EXPECT_TRUE(e.ok()) << e.status();
    return e.ok() ? e->tier : UINT32_MAX;
  }

  ManualClock clock_;
  std::vector<Tier*> tiers_;  // owned by cache_
  std::unique_ptr<CacheManager> cache_;
};

// The four tiers of placement_test.cc: drain times 20 ms, 10 s, 5 min, 1 h.
const std::vector<TierSpec> kFourTiers = {
    {"hbm", 0.02, 2700}, {"dram", 10, 32}, {"flash", 300, 3.75}, {"cold", 3600, 1}};

TEST_F(CacheManagerPlacementTest, InsertsLandWhereTheCostModelSays) {
  Open(kFourTiers);
  // With no reuse history, a block's expected idle time is its TTL.
  struct Case {
    int64_t ttl_ms;
    uint32_t tier;
  } cases[] = {{10, 0},           // 10 ms: hbm (below the 0.1 s crossover)
               {1'000, 1},        // 1 s: dram
               {120'000, 2},      // 2 min: flash
               {1'800'000, 3},    // 30 min: cold
               {10'800'000, 3}};  // 3 h: cold
  uint64_t i = 0;
  for (const Case& c : cases) {
    BlockMeta meta;
    meta.ttl_ms = c.ttl_ms;
    meta.stream = 100 + i;  // each its own namespace: no shared history
    ASSERT_TRUE(cache_->Insert(K(i), Payload(kBlock, 1), meta).ok());
    EXPECT_EQ(TierOf(K(i)), c.tier) << "ttl " << c.ttl_ms << " ms";
    Result<BlockExplanation> x = cache_->Explain(K(i));
    ASSERT_TRUE(x.ok());
    EXPECT_EQ(x->entry.decision.kind, DecisionKind::kPlaced);
    EXPECT_NEAR(x->entry.decision.idle_s, c.ttl_ms / 1000.0, 1e-3);
    // The explanation's costs are the formula's: s pi (T + D).
    for (size_t t = 0; t < 4; ++t) {
      const double want =
          kBlock * kFourTiers[t].pi * kUnit * (c.ttl_ms / 1000.0 + kFourTiers[t].drain_s);
      EXPECT_NEAR(x->decision_costs.tier_costs[t], want, want * 1e-5);
    }
    ++i;
  }
  EXPECT_EQ(cache_->Stats().placed, 5u);
}

// A class of blocks that never come back is held where holding is cheapest:
// with p = 0 only the rent counts. Blocks deeper in the same namespace are
// another class and keep p = 1.
TEST_F(CacheManagerPlacementTest, ARarelyReusedClassIsHeldWhereHoldingIsCheapest) {
  Open(kFourTiers);
  BlockMeta meta;
  meta.ttl_ms = 1'000;  // 1 s: dram while blocks are assumed to come back
  meta.stream = 5;
  ASSERT_TRUE(cache_->Insert(K(0), Payload(kBlock, 1), meta).ok());
  EXPECT_EQ(TierOf(K(0)), 1u);
  for (uint64_t i = 1; i <= 40; ++i) {
    ASSERT_TRUE(cache_->Insert(K(i), Payload(kBlock, 1), meta).ok());
    ASSERT_TRUE(cache_->Erase(K(i)).ok());  // room for the next; never used
  }
  ASSERT_TRUE(cache_->Insert(K(100), Payload(kBlock, 1), meta).ok());
  EXPECT_EQ(TierOf(K(100)), 3u) << "the cheapest rent";
  Result<BlockExplanation> x = cache_->Explain(K(100));
  ASSERT_TRUE(x.ok());
  EXPECT_EQ(x->reuse_probability, 0.0);
  EXPECT_EQ(x->decision_costs.reuse_probability, 0.0);
  // The child of K(0) is at depth 1: a class with no history.
  BlockMeta child = meta;
  child.parent = K(0);
  ASSERT_TRUE(cache_->Insert(K(200), Payload(kBlock, 1), child).ok());
  EXPECT_EQ(TierOf(K(200)), 1u);
  EXPECT_EQ(cache_->Find(K(200))->depth, 1u);
}

TEST_F(CacheManagerPlacementTest, ReuseHistoryShortensTheExpectedIdleTime) {
  Open(kFourTiers);
  BlockMeta meta;
  meta.ttl_ms = 3'600'000;  // 1 h: cold, without history
  meta.stream = 7;
  ASSERT_TRUE(cache_->Insert(K(1), Payload(kBlock, 1), meta).ok());
  EXPECT_EQ(TierOf(K(1)), 3u);
  // Blocks of stream 7 come back every 2 s.
  for (int i = 0; i < 5; ++i) {
    clock_.AdvanceMs(2000);
    ASSERT_EQ(cache_->Lookup(std::vector<BlockKey>{K(1)}).blocks, 1u);
  }
  // A new block of the stream is expected idle ~2 s, capped by its TTL: dram.
  ASSERT_TRUE(cache_->Insert(K(2), Payload(kBlock, 2), meta).ok());
  EXPECT_EQ(TierOf(K(2)), 1u);
  Result<BlockExplanation> x = cache_->Explain(K(2));
  ASSERT_TRUE(x.ok() && x->reuse_estimate_s);
  EXPECT_NEAR(*x->reuse_estimate_s, 2.0, 1e-6);
}

// An engine that probes (no use) and then reads says the read is the use:
// its reuse feeds the estimate as a Lookup's hit does. A plain read does not.
TEST_F(CacheManagerPlacementTest, AReadThatIsTheUseFeedsTheReuseEstimate) {
  Open(kFourTiers);
  BlockMeta meta;
  meta.ttl_ms = 3'600'000;
  meta.stream = 11;
  ASSERT_TRUE(cache_->Insert(K(1), Payload(kBlock, 1), meta).ok());
  std::vector<std::byte> dest(kBlock);
  for (int i = 0; i < 5; ++i) {
    clock_.AdvanceMs(3000);
    ASSERT_EQ(cache_->Probe(std::vector<BlockKey>{K(1)}).blocks, 1u);
    ASSERT_TRUE(cache_->Read(K(1), dest).ok());
  }
  Result<BlockExplanation> x = cache_->Explain(K(1));
  ASSERT_TRUE(x.ok());
  EXPECT_FALSE(x->reuse_estimate_s) << "probes and plain reads observed nothing";
  for (int i = 0; i < 5; ++i) {
    clock_.AdvanceMs(3000);
    ASSERT_TRUE(cache_->Read(K(1), dest, /*is_use=*/true).ok());
  }
  x = cache_->Explain(K(1));
  ASSERT_TRUE(x.ok() && x->reuse_estimate_s);
  EXPECT_NEAR(*x->reuse_estimate_s, 3.0, 1e-6);
}

TEST_F(CacheManagerPlacementTest, AHitPromotesWhenAHigherTierBecomesCheaper) {
  Open(kFourTiers);
  BlockMeta meta;
  meta.ttl_ms = 120'000;  // 2 min: flash
  meta.stream = 9;
  const std::vector<std::byte> payload = Payload(kBlock, 3);
  ASSERT_TRUE(cache_->Insert(K(1), payload, meta).ok());
  ASSERT_EQ(TierOf(K(1)), 2u);
  // Used every second: the estimate falls to 1 s, where dram is cheapest.
  for (int i = 0; i < 3; ++i) {
    clock_.AdvanceMs(1000);
    ASSERT_EQ(cache_->Lookup(std::vector<BlockKey>{K(1)}).blocks, 1u);
  }
  EXPECT_EQ(TierOf(K(1)), 2u) << "promotion is asynchronous: nothing moved yet";
  EXPECT_GE(cache_->RunPromotions(), 1u);
  EXPECT_EQ(TierOf(K(1)), 1u);
  std::vector<std::byte> got(kBlock);
  ASSERT_TRUE(cache_->Read(K(1), got).ok());
  EXPECT_EQ(got, payload);
  Result<BlockExplanation> x = cache_->Explain(K(1));
  ASSERT_TRUE(x.ok());
  EXPECT_EQ(x->entry.decision.kind, DecisionKind::kPromoted);
  EXPECT_EQ(x->entry.decision.from_tier, 2u);
  EXPECT_EQ(tiers_[2]->Info().blocks, 0u) << "the old copy is freed";
  EXPECT_EQ(cache_->Stats().promotions, 1u);
}

// DRAM over flash, economics as above. Victims of the full DRAM tier are
// re-placed: a tiny model's block costs less to recompute than to keep in
// flash for its expected 2 min, so it is dropped; a large model's is demoted.
TEST_F(CacheManagerPlacementTest, ATinyModelsVictimIsDroppedRatherThanDemoted) {
  PlacementOptions p = NoWait();
  p.default_idle_s = 1;  // new blocks without history: dram
  Open({{"dram", 10, 32, 2}, {"flash", 300, 3.75}}, p);
  // Per block (61440 bytes) at T = 120 s, flash costs 61440 * 3.75e-15 * 420
  // = 9.68e-8 $. Recomputing a 64-token block of a 260K model costs
  // 2 * 2.6e5 * 64 / 4e14 s * 2.5/3600 $/s = 5.78e-11 $ (drop); of a 7B
  // model 2 * 7e9 * 64 / 4e14 * 2.5/3600 = 1.56e-6 $ (keep).
  BlockMeta tiny, big;
  tiny.stream = big.stream = 1;
  tiny.tokens = big.tokens = 64;
  tiny.remat_flops = 2 * 2.6e5 * 64;
  big.remat_flops = 2 * 7e9 * 64;
  ASSERT_TRUE(cache_->Insert(K(1), Payload(kBlock, 1), tiny).ok());
  ASSERT_TRUE(cache_->Insert(K(2), Payload(kBlock, 2), big).ok());
  ASSERT_EQ(TierOf(K(1)), 0u);
  ASSERT_EQ(TierOf(K(2)), 0u);
  // Stream 1 is reused every 2 min.
  clock_.AdvanceMs(120'000);
  ASSERT_EQ(cache_->Lookup(std::vector<BlockKey>{K(1)}).blocks, 1u);
  ASSERT_EQ(cache_->Lookup(std::vector<BlockKey>{K(2)}).blocks, 1u);
  // Two new blocks of another namespace (no history: 1 s, dram) push both out.
  BlockMeta other;
  other.stream = 2;
  ASSERT_TRUE(cache_->Insert(K(3), Payload(kBlock, 3), other).ok());
  ASSERT_TRUE(cache_->Insert(K(4), Payload(kBlock, 4), other).ok());
  EXPECT_FALSE(cache_->Find(K(1)).ok()) << "the tiny model's block is dropped";
  EXPECT_EQ(TierOf(K(2)), 1u) << "the big model's block is demoted";
  const CacheStats s = cache_->Stats();
  EXPECT_EQ(s.remat_drops, 1u);
  EXPECT_EQ(s.demotions, 1u);
  EXPECT_EQ(s.drops, 0u);
  EXPECT_EQ(tiers_[1]->Info().blocks, 1u);
  // A block whose recompute cost is unknown is never dropped for it.
  BlockMeta unknown;
  unknown.stream = 1;
  ASSERT_TRUE(cache_->Insert(K(5), Payload(kBlock, 5), unknown).ok());
  EXPECT_EQ(cache_->Stats().remat_drops, 1u);
}

// Rent or buy: a block moves down once it has waited as long as the move
// saves (its cost lines cross), and is dropped once recomputing it is the
// cheapest. Per byte in kUnit $, at a wait of T s: dram 32 (T + 10), flash
// 3.75 (T + 300), cold T + 3600; recomputing a 7B model's 64 tokens costs
// 1.5556e-6 $ = 25319 x 61440 x kUnit. So dram until 28.5 s, flash until
// 900 s, cold until 21719 s, then the drop.
TEST_F(CacheManagerPlacementTest, ABlockThatWaitsMovesDownThenIsDropped) {
  PlacementOptions p = NoWait();
  p.default_idle_s = 1;  // placed for a wait of a second: dram
  Open(kFourTiers, p);
  BlockMeta meta;
  meta.remat_flops = 2 * 7e9 * 64;
  ASSERT_TRUE(cache_->Insert(K(1), Payload(kBlock, 1), meta).ok());
  ASSERT_EQ(TierOf(K(1)), 1u);
  clock_.AdvanceMs(28'000);
  EXPECT_EQ(cache_->ReviewIdle(), 0u) << "not yet";
  EXPECT_EQ(TierOf(K(1)), 1u);
  clock_.AdvanceMs(1'000);
  EXPECT_EQ(cache_->ReviewIdle(), 1u);
  EXPECT_EQ(TierOf(K(1)), 2u);
  Result<BlockExplanation> x = cache_->Explain(K(1));
  ASSERT_TRUE(x.ok());
  EXPECT_EQ(x->entry.decision.kind, DecisionKind::kDemoted);
  EXPECT_EQ(x->entry.decision.from_tier, 1u);
  clock_.AdvanceMs(871'000);  // 900 s
  EXPECT_EQ(cache_->ReviewIdle(), 0u);
  clock_.AdvanceMs(1'000);
  EXPECT_EQ(cache_->ReviewIdle(), 1u);
  EXPECT_EQ(TierOf(K(1)), 3u);
  clock_.AdvanceMs(20'817'000);  // 21718 s
  EXPECT_EQ(cache_->ReviewIdle(), 0u);
  clock_.AdvanceMs(2'000);
  size_t looked = 0;
  EXPECT_EQ(cache_->ReviewIdle(SIZE_MAX, &looked), 1u);
  EXPECT_EQ(looked, 1u) << "one look per move";
  EXPECT_FALSE(cache_->Find(K(1)).ok());
  const CacheStats s = cache_->Stats();
  EXPECT_EQ(s.aged_out, 3u);
  EXPECT_EQ(s.demotions, 2u);
  EXPECT_EQ(s.remat_drops, 1u);
  EXPECT_EQ(s.traffic[1].demoted, 1u);
  EXPECT_EQ(s.traffic[2].demoted, 1u);
  EXPECT_EQ(s.traffic[3].dropped_for_remat, 1u);
}

// With a settled reuse probability p the crossings come p times sooner: a
// class whose new blocks come back one time in ten moves them down and
// drops them ten times sooner than one with no history (p = 1). A dropped
// block written again counts as the use it would have had.
TEST_F(CacheManagerPlacementTest, ARarelyReusedClassAgesOutSoonerAndItsReturnsStillCount) {
  PlacementOptions p = NoWait();
  p.default_idle_s = 1;
  Open(kFourTiers, p);
  BlockMeta rare;
  rare.stream = 9;
  rare.remat_flops = 2 * 7e9 * 64;
  // 40 blocks of stream 9 came back after 2 s, 360 never: p = 40/400.
  for (uint64_t i = 0; i < 40; ++i)
    ASSERT_TRUE(cache_->Insert(K(1000 + i), Payload(kBlock, 1), rare).ok());
  clock_.AdvanceMs(2'000);
  for (uint64_t i = 0; i < 40; ++i) {
    ASSERT_EQ(cache_->Lookup(std::vector<BlockKey>{K(1000 + i)}).blocks, 1u);
    ASSERT_TRUE(cache_->Erase(K(1000 + i)).ok());
  }
  for (uint64_t i = 0; i < 360; ++i) {
    ASSERT_TRUE(cache_->Insert(K(2000 + i), Payload(kBlock, 1), rare).ok());
    ASSERT_TRUE(cache_->Erase(K(2000 + i)).ok());
  }
  BlockMeta unknown = rare;  // no history: p = 1
  unknown.stream = 10;
  ASSERT_TRUE(cache_->Insert(K(1), Payload(kBlock, 1), rare).ok());
  ASSERT_TRUE(cache_->Insert(K(2), Payload(kBlock, 2), unknown).ok());
  ASSERT_EQ(TierOf(K(1)), 1u);
  ASSERT_EQ(TierOf(K(2)), 1u);
  // dram -> flash at 28.5 p s: 2.8 s for K(1), 28.5 s for K(2).
  clock_.AdvanceMs(20'000);
  cache_->ReviewIdle();
  EXPECT_EQ(TierOf(K(1)), 2u);
  EXPECT_EQ(TierOf(K(2)), 1u);
  // Dropped from cold at 21719 p s: 2166 s for K(1); K(2) is in cold by then.
  clock_.AdvanceMs(2'200'000);
  for (int i = 0; i < 4; ++i) cache_->ReviewIdle();
  EXPECT_FALSE(cache_->Find(K(1)).ok());
  EXPECT_EQ(TierOf(K(2)), 3u);
  EXPECT_EQ(cache_->Stats().remat_drops, 1u);
  // K(1) written again: a use of its class after 2222 s, and a reused block.
  ASSERT_TRUE(cache_->Insert(K(3), Payload(kBlock, 3), rare).ok());
  const double before = cache_->Explain(K(3))->reuse_probability;
  ASSERT_TRUE(cache_->Insert(K(1), Payload(kBlock, 1), rare).ok());
  EXPECT_EQ(cache_->Find(K(1))->uses, 1u);
  EXPECT_GT(cache_->Explain(K(3))->reuse_probability, before)
      << "the drop did not hide the return from the estimate";
}

// A use restarts the wait; a pinned block, a parent, a block whose
// recompute cost is unknown and one with a TTL are never dropped by age.
TEST_F(CacheManagerPlacementTest, TheWaitCountsFromTheLastUseAndSparesWhatIsInUse) {
  PlacementOptions p = NoWait();
  p.default_idle_s = 1;
  Open(kFourTiers, p);
  BlockMeta meta;
  meta.remat_flops = 2 * 7e9 * 64;
  ASSERT_TRUE(cache_->Insert(K(1), Payload(kBlock, 1), meta).ok());  // used at 20 s
  ASSERT_TRUE(cache_->Insert(K(2), Payload(kBlock, 2), meta).ok());  // pinned
  BlockMeta child;  // its recompute cost unknown: it stays, and so does its parent
  child.parent = K(3);
  ASSERT_TRUE(cache_->Insert(K(3), Payload(kBlock, 3), meta).ok());  // a parent
  ASSERT_TRUE(cache_->Insert(K(4), Payload(kBlock, 4), child).ok());
  BlockMeta unknown;  // recompute cost unknown
  ASSERT_TRUE(cache_->Insert(K(5), Payload(kBlock, 5), unknown).ok());
  BlockMeta ttl = meta;  // a context-caching write: kept for its TTL
  ttl.ttl_ms = 100'000'000;
  ASSERT_TRUE(cache_->Insert(K(6), Payload(kBlock, 6), ttl).ok());
  clock_.AdvanceMs(20'000);
  ASSERT_EQ(cache_->Lookup(std::vector<BlockKey>{K(1)}).blocks, 1u);
  PrefixHit pinned = cache_->Lookup(std::vector<BlockKey>{K(2)}, /*pin=*/true);
  ASSERT_EQ(pinned.blocks, 1u);
  clock_.AdvanceMs(10'000);  // 30 s
  cache_->ReviewIdle();
  EXPECT_EQ(TierOf(K(1)), 1u) << "used 10 s ago";
  EXPECT_EQ(TierOf(K(2)), 1u) << "pinned";
  EXPECT_EQ(TierOf(K(3)), 2u);
  EXPECT_EQ(TierOf(K(4)), 2u);
  EXPECT_EQ(TierOf(K(5)), 2u);
  clock_.AdvanceMs(20'000);  // 50 s: K(1) has waited 30 s
  cache_->ReviewIdle();
  EXPECT_EQ(TierOf(K(1)), 2u);
  EXPECT_EQ(TierOf(K(2)), 1u) << "still pinned";
  pinned = PrefixHit{};
  clock_.AdvanceMs(40'000'000);  // far past every crossing
  for (int i = 0; i < 8; ++i) cache_->ReviewIdle();
  EXPECT_FALSE(cache_->Find(K(1)).ok());
  EXPECT_FALSE(cache_->Find(K(2)).ok()) << "unpinned, it ages like the rest";
  EXPECT_EQ(TierOf(K(3)), 3u) << "a parent keeps its chain: moved down, never dropped";
  std::vector<std::byte> out(kBlock);
  ASSERT_TRUE(cache_->Read(K(3), out).ok());
  EXPECT_EQ(out, Payload(kBlock, 3)) << "moved, not changed";
  EXPECT_EQ(TierOf(K(4)), 3u);
  EXPECT_EQ(TierOf(K(5)), 3u) << "never dropped for a recompute of unknown cost";
  EXPECT_EQ(TierOf(K(6)), 3u) << "moved down, kept until its TTL ends";
}

TEST_F(CacheManagerPlacementTest, ExpiredBlocksAreTheFirstVictims) {
  Open({{"dram", 10, 0, 3}, {"flash", 300, 0}});
  BlockMeta short_ttl, long_ttl;
  short_ttl.ttl_ms = 1000;
  long_ttl.ttl_ms = 3'600'000;
  ASSERT_TRUE(cache_->Insert(K(1), Payload(kBlock, 1), long_ttl).ok());
  ASSERT_TRUE(cache_->Insert(K(2), Payload(kBlock, 2), short_ttl).ok());
  ASSERT_TRUE(cache_->Insert(K(3), Payload(kBlock, 3), long_ttl).ok());
  clock_.AdvanceMs(2000);
  // The top tier is full; K(1) is least recently used, but K(2) has expired.
  ASSERT_TRUE(cache_->Insert(K(4), Payload(kBlock, 4), long_ttl).ok());
  EXPECT_EQ(TierOf(K(1)), 0u);
  EXPECT_EQ(TierOf(K(4)), 0u);
  EXPECT_FALSE(cache_->Find(K(2)).ok());
  const CacheStats s = cache_->Stats();
  EXPECT_EQ(s.expired, 1u);
  EXPECT_EQ(s.demotions, 0u);
}

TEST_F(CacheManagerPlacementTest, SweepFreesExpiredBlocksButNotPinnedOnes) {
  Open({{"dram", 10, 0, 2}, {"flash", 300, 0}});
  BlockMeta m;
  m.ttl_ms = 60'000;
  for (uint64_t i = 1; i <= 4; ++i) ASSERT_TRUE(cache_->Insert(K(i), Payload(kBlock, 1), m).ok());
  ASSERT_EQ(tiers_[0]->Info().blocks + tiers_[1]->Info().blocks, 4u);
  PrefixHit pinned = cache_->Lookup(std::vector<BlockKey>{K(4)}, /*pin=*/true);
  ASSERT_EQ(pinned.blocks, 1u);
  clock_.AdvanceMs(30'000);
  EXPECT_EQ(cache_->SweepExpired(), 0u) << "nothing has expired";
  clock_.AdvanceMs(31'000);
  EXPECT_EQ(cache_->SweepExpired(), 3u) << "all four expired; K(4) is pinned";
  EXPECT_FALSE(cache_->Find(K(4)).ok()) << "expired: a miss for new requests";
  EXPECT_EQ(tiers_[0]->Info().blocks + tiers_[1]->Info().blocks, 1u)
      << "but its bytes stay for the request that pinned it";
  clock_.AdvanceMs(60'000);
  EXPECT_EQ(cache_->SweepExpired(), 0u) << "still pinned";
  pinned.pins.clear();
  clock_.AdvanceMs(1000);
  EXPECT_EQ(cache_->SweepExpired(), 1u);
  EXPECT_EQ(tiers_[0]->Info().blocks + tiers_[1]->Info().blocks, 0u);
  EXPECT_EQ(cache_->Stats().expired, 4u);
}

// Everything at once, with the background sweep and promoter running:
// inserts with short TTLs, pinned lookups (hits promote), reads, erases and a
// moving clock. No read returns wrong bytes, a pinned block stays readable,
// and at rest every stored copy is indexed exactly once.
TEST_F(CacheManagerPlacementTest, ConcurrentUseWithBackgroundWorkNeverReturnsWrongBytes) {
  std::vector<TierSlot> slots = Slots({{"dram", 1, 32, 6}, {"flash", 300, 3.75, 12}}, "ttl-cost");
  CacheManagerOptions opts;
  opts.clock = &clock_;
  opts.sweep_interval_ms = 1;
  opts.background_promotion = true;
  opts.placement.fetch_budget_s = 1e9;
  opts.placement.default_idle_s = 60;
  cache_ = CacheManager::Open(std::move(slots), opts).value();

  auto payload_of = [](uint64_t i) { return Payload(20'000 + (i % 3) * 20'000, uint8_t(i)); };
  std::atomic<bool> wrong{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<uint32_t>(t));
      std::vector<std::byte> buf(60'000);
      for (int step = 0; step < 3000; ++step) {
        if (t == 0) clock_.AdvanceMs(100);  // 300 s in all: TTLs of 1 s .. 2 min run out
        const uint64_t i = rng() % 48;
        switch (rng() % 5) {
          case 0:
          case 1: {
            BlockMeta m;
            m.ttl_ms = 1000 + static_cast<int64_t>(rng() % 120'000);
            m.stream = i % 2;
            (void)cache_->Insert(K(i), payload_of(i), m);
            break;
          }
          case 2: {
            PrefixHit hit = cache_->Lookup(std::vector<BlockKey>{K(i)}, /*pin=*/true);
            Result<IndexEntry> e = cache_->Find(K(i));
            if (hit.blocks == 1 && e.ok()) {
              // Pinned: whatever moves, the block stays readable and right
              // until it expires (the clock runs fast here).
              auto n = cache_->Read(K(i), buf);
              if (!n.ok() && clock_.NowMs() < e->expiry_ms) {
                ADD_FAILURE() << "pinned, unexpired block missed: " << n.status();
                wrong = true;
              } else if (n.ok() &&
                         std::vector<std::byte>(buf.begin(), buf.begin() + *n) != payload_of(i)) {
                wrong = true;
              }
            }
            break;
          }
          case 3: {
            auto n = cache_->Read(K(i), buf);
            if (n.ok() && std::vector<std::byte>(buf.begin(), buf.begin() + *n) != payload_of(i)) {
              wrong = true;
            }
            break;
          }
          case 4:
            (void)cache_->Erase(K(i));
            break;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_FALSE(wrong.load());
  cache_->RunPromotions();
  const CacheStats s = cache_->Stats();
  EXPECT_EQ(s.tiers[0].blocks + s.tiers[1].blocks, s.indexed_blocks);
  EXPECT_GT(s.expired, 0u) << "the clock moved: some blocks expired";
  EXPECT_GT(s.promotions + s.demotions, 0u) << "blocks moved between the tiers";
}

// The whole tier stack of kvtierd (DRAM, flash on io_uring, RocksDB), with a
// controlled clock: blocks written with a 5-minute TTL are gone from every
// tier 5 minutes after their last use, and stay while read every minute.
class CacheManagerTtlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("kvtier_ttl_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    cache_.reset();
    std::filesystem::remove_all(dir_);
  }

  ManualClock clock_;
  std::filesystem::path dir_;
  std::vector<Tier*> tiers_;
  std::unique_ptr<CacheManager> cache_;
};

TEST_F(CacheManagerTtlTest, FiveMinuteBlocksLeaveEveryTierUnlessReadEveryMinute) {
  std::vector<TierSlot> slots;
  DramTierOptions d;
  d.capacity_bytes = 4 * kPage;  // 4 blocks
  d.page_bytes = kPage;
  d.read_bytes_per_s = d.write_bytes_per_s = 1e9;
  d.clock = &clock_;
  FlashTierOptions f;
  f.path = (dir_ / "flash.log").string();
  f.capacity_bytes = 6 * (kBlock + 8192);  // about 6 blocks with their headers
  f.region_bytes = 2 << 20;
  f.max_block_bytes = 1 << 20;
  f.queue_depth = 8;
  f.staging_bytes = 4 << 20;
  f.read_bytes_per_s = f.write_bytes_per_s = 1e9;
  f.clock = &clock_;
  RocksTierOptions r;
  r.path = (dir_ / "rocks").string();
  r.capacity_bytes = 64 << 20;
  r.read_bytes_per_s = r.write_bytes_per_s = 1e9;
  r.clock = &clock_;
  std::vector<Result<std::unique_ptr<Tier>>> opened;
  opened.push_back(OpenDramTier(d));
  opened.push_back(OpenFlashTier(f));
  opened.push_back(OpenRocksTier(r));
  for (Result<std::unique_ptr<Tier>>& t : opened) {
    ASSERT_TRUE(t.ok()) << t.status();
    tiers_.push_back(t->get());
    slots.push_back({std::move(*t), NewLruPolicy()});
  }
  CacheManagerOptions opts;
  opts.clock = &clock_;
  opts.sweep_interval_ms = 0;
  opts.background_promotion = false;
  auto m = CacheManager::Open(std::move(slots), opts);
  ASSERT_TRUE(m.ok()) << m.status();
  cache_ = std::move(*m);

  // 16 blocks, free tiers: each goes to the top, victims move down, so they
  // spread over all three tiers. Even keys are read every minute, odd ones
  // never.
  BlockMeta meta;
  meta.ttl_ms = 5 * 60'000;
  constexpr uint64_t kBlocks = 16;
  for (uint64_t i = 0; i < kBlocks; ++i) {
    ASSERT_TRUE(cache_->Insert(K(i), Payload(kBlock, static_cast<uint8_t>(i)), meta).ok());
  }
  std::vector<int> per_tier(3, 0), read_per_tier(3, 0);
  for (uint64_t i = 0; i < kBlocks; ++i) {
    const uint32_t t = cache_->Find(K(i)).value().tier;
    ++per_tier[t];
    if (i % 2 == 0) ++read_per_tier[t];
  }
  for (int t = 0; t < 3; ++t) {
    ASSERT_GT(read_per_tier[t], 0) << "tier " << t << " holds no block that is read";
    ASSERT_LT(read_per_tier[t], per_tier[t]) << "tier " << t << " holds no idle block";
  }

  std::vector<std::byte> buf(kBlock);
  for (int minute = 1; minute <= 10; ++minute) {
    clock_.AdvanceMs(60'000);
    cache_->SweepExpired();
    for (uint64_t i = 0; i < kBlocks; i += 2) {
      ASSERT_TRUE(cache_->Read(K(i), buf).ok()) << "block " << i << ", minute " << minute;
      ASSERT_EQ(buf, Payload(kBlock, static_cast<uint8_t>(i)));
    }
    for (uint64_t i = 1; i < kBlocks; i += 2) {
      // Idle since minute 0: alive through minute 4, gone from minute 5.
      EXPECT_EQ(cache_->Find(K(i)).ok(), minute < 5) << "block " << i << ", minute " << minute;
    }
  }
  // Gone from every tier, not just from the index: each tier holds exactly
  // the blocks that are read.
  uint64_t held = 0;
  for (Tier* t : tiers_) held += t->Info().blocks;
  EXPECT_EQ(held, kBlocks / 2);
  for (uint64_t i = 1; i < kBlocks; i += 2) {
    for (Tier* t : tiers_) {
      std::vector<std::byte> b(kBlock);
      EXPECT_TRUE(ReadOne(*t, K(i), b).status().IsNotFound());
    }
  }
  EXPECT_EQ(cache_->Stats().expired, kBlocks / 2);
  // And the read ones expire 5 minutes after their last read.
  clock_.AdvanceMs(5 * 60'000);
  cache_->SweepExpired();
  held = 0;
  for (Tier* t : tiers_) held += t->Info().blocks;
  EXPECT_EQ(held, 0u);
}

}  // namespace
}  // namespace kvtier
