// MrcEstimator: exact stack distances while every key is sampled (hand
// sequences, block sizes), the bounded
// sample's estimate against exact LRU replays of synthetic streams, and
// concurrent use. tests/replay/mrc_trace_test.cc checks it on the shipped
// traces.
#include "cache/mrc.h"

#include <gtest/gtest.h>

#include "cache/cache_manager.h"
#include "cache/prefix_hasher.h"
#include "tiers/dram/dram_tier.h"

#include <cmath>
#include <list>
#include <random>
#include <thread>
#include <unordered_map>
#include <vector>

namespace kvtier {
namespace {

struct Ref {
  uint64_t key;
  uint64_t bytes;
};

// Exact per-use LRU hit ratio of a cache of `capacity` bytes: a list-based
// LRU that evicts from the tail until the used block fits (an independent
// check of the estimator's Fenwick tree).
double ExactLruHitRatio(const std::vector<Ref>& refs, uint64_t capacity) {
  std::list<Ref> lru;  // most recent first
  std::unordered_map<uint64_t, std::list<Ref>::iterator> where;
  uint64_t used = 0, hits = 0;
  for (const Ref& r : refs) {
    if (auto it = where.find(r.key); it != where.end()) {
      ++hits;
      used -= it->second->bytes;
      lru.erase(it->second);
      where.erase(it);
    }
    if (r.bytes > capacity) continue;
    while (used + r.bytes > capacity) {
      used -= lru.back().bytes;
      where.erase(lru.back().key);
      lru.pop_back();
    }
    lru.push_front(r);
    where[r.key] = lru.begin();
    used += r.bytes;
  }
  return refs.empty() ? 0 : static_cast<double>(hits) / static_cast<double>(refs.size());
}

// The hit ratio the definition gives: a use hits a cache of `capacity` when
// its LRU stack distance in bytes (the blocks above it in the stack, and
// itself) fits. Found by walking the stack: O(uses * keys), for small tests.
// With unit sizes this is what an LRU cache does; with mixed sizes an LRU
// cache that evicts to fit can hold less than the stack's top (a large block
// pushed smaller ones out), which is why the estimator is defined by
// distances.
double StackDistanceHitRatio(const std::vector<Ref>& refs, uint64_t capacity) {
  std::vector<Ref> stack;  // most recent last
  uint64_t hits = 0;
  for (const Ref& r : refs) {
    uint64_t above = 0;
    for (size_t i = stack.size(); i-- > 0;) {
      if (stack[i].key == r.key) {
        if (above + stack[i].bytes <= capacity) ++hits;
        stack.erase(stack.begin() + static_cast<std::ptrdiff_t>(i));
        break;
      }
      above += stack[i].bytes;
    }
    stack.push_back(r);
  }
  return refs.empty() ? 0 : static_cast<double>(hits) / static_cast<double>(refs.size());
}

MrcEstimator* Feed(MrcEstimator* m, const std::vector<Ref>& refs) {
  for (const Ref& r : refs) m->Use(r.key, r.bytes);
  return m;
}

std::vector<Ref> Units(const std::vector<uint64_t>& keys) {
  std::vector<Ref> refs;
  for (uint64_t k : keys) refs.push_back({k, 1});
  return refs;
}

TEST(MrcEstimatorTest, NothingUsedGivesAnEmptyCurve) {
  MrcEstimator m;
  const MrcSnapshot s = m.Snapshot();
  EXPECT_EQ(s.uses, 0u);
  EXPECT_TRUE(s.curve.empty());
  EXPECT_EQ(s.HitRatioAt(1 << 30), 0);
  EXPECT_EQ(s.MaxHitRatio(), 0);
}

// a b c a b d a c: stack distances -, -, -, 3, 3, -, 3, 4.
TEST(MrcEstimatorTest, EverySampledKeyGivesExactStackDistances) {
  MrcEstimator m;
  const std::vector<Ref> refs = Units({1, 2, 3, 1, 2, 4, 1, 3});
  Feed(&m, refs);
  const MrcSnapshot s = m.Snapshot();
  EXPECT_EQ(s.uses, 8u);
  EXPECT_EQ(s.sampled_uses, 8u);
  EXPECT_EQ(s.sampling_rate, 1.0);
  EXPECT_EQ(s.sampled_keys, 4u);
  EXPECT_DOUBLE_EQ(s.HitRatioAt(0), 0);
  EXPECT_DOUBLE_EQ(s.HitRatioAt(2), 0);
  EXPECT_DOUBLE_EQ(s.HitRatioAt(3), 3.0 / 8);
  EXPECT_DOUBLE_EQ(s.HitRatioAt(4), 4.0 / 8);
  EXPECT_DOUBLE_EQ(s.HitRatioAt(1000), 4.0 / 8);
  EXPECT_DOUBLE_EQ(s.MaxHitRatio(), 0.5);
  for (uint64_t c = 0; c <= 6; ++c) {
    EXPECT_DOUBLE_EQ(s.HitRatioAt(c), ExactLruHitRatio(refs, c)) << "size " << c;
  }
  EXPECT_DOUBLE_EQ(m.HitRatioAt(3), 3.0 / 8);
}

TEST(MrcEstimatorTest, DistancesCountBytes) {
  // a(10) b(20) a: a's distance is 30 bytes (b and itself).
  MrcEstimator m;
  Feed(&m, {{1, 10}, {2, 20}, {1, 10}});
  EXPECT_DOUBLE_EQ(m.HitRatioAt(29), 0);
  EXPECT_DOUBLE_EQ(m.HitRatioAt(30), 1.0 / 3);
  // Random sizes up to 50 bytes and 40 keys: exact below the histogram's
  // exact range (64 bytes), within a bucket's spread above.
  std::mt19937_64 rng(7);
  std::vector<Ref> refs;
  std::vector<uint64_t> size_of(40);
  for (uint64_t& b : size_of) b = 1 + rng() % 50;
  for (int i = 0; i < 5000; ++i) {
    const uint64_t k = rng() % 40;
    refs.push_back({k, size_of[k]});
  }
  MrcEstimator sized;
  Feed(&sized, refs);
  for (uint64_t c : {10, 40, 63}) {
    EXPECT_NEAR(sized.HitRatioAt(c), StackDistanceHitRatio(refs, c), 1e-12) << c;
  }
  for (uint64_t c : {100, 300, 600, 900}) {
    EXPECT_NEAR(sized.HitRatioAt(c), StackDistanceHitRatio(refs, c), 0.01) << c;
  }
}

TEST(MrcEstimatorTest, TheSampleStaysWithinItsBoundAndItsRateFalls) {
  MrcOptions o;
  o.max_sampled_keys = 512;
  MrcEstimator m(o);
  for (uint64_t k = 0; k < 100000; ++k) m.Use(k, 1);
  const MrcSnapshot s = m.Snapshot();
  EXPECT_LE(s.sampled_keys, 512u);
  EXPECT_GE(s.sampled_keys, 500u);
  // About 512 of 100000 keys are left in the sample.
  EXPECT_NEAR(s.sampling_rate, 512.0 / 100000, 0.002);
  EXPECT_EQ(s.uses, 100000u);
  EXPECT_DOUBLE_EQ(s.MaxHitRatio(), 0);  // no key was used twice
}

// A loop over K keys: LRU misses everything below K and hits all but the
// first pass at K and above.
TEST(MrcEstimatorTest, ALoopLargerThanTheSampleHasItsCliffAtItsLength) {
  MrcOptions o;
  o.max_sampled_keys = 2048;
  MrcEstimator m(o);
  constexpr uint64_t kKeys = 50000;
  for (int pass = 0; pass < 10; ++pass) {
    for (uint64_t k = 0; k < kKeys; ++k) m.Use(k, 4096);
  }
  const MrcSnapshot s = m.Snapshot();
  EXPECT_LT(s.sampling_rate, 0.1);
  EXPECT_NEAR(s.HitRatioAt(kKeys * 4096 * 9 / 10), 0.0, 0.02);
  EXPECT_NEAR(s.HitRatioAt(kKeys * 4096 * 11 / 10), 0.9, 0.02);
  EXPECT_NEAR(s.MaxHitRatio(), 0.9, 0.02);
}

// A skewed random stream (a few hot keys, a long tail) of 400K uses over
// 100K keys with a 4K-key sample: the estimate tracks exact LRU at every size.
TEST(MrcEstimatorTest, TheBoundedSampleTracksExactLruOnASkewedStream) {
  std::mt19937_64 rng(11);
  std::vector<Ref> refs;
  constexpr uint64_t kKeys = 100000;
  for (int i = 0; i < 400000; ++i) {
    // Pareto-like popularity: key ~ kKeys * u^3 puts most uses on few keys.
    const double u = std::uniform_real_distribution<double>(0, 1)(rng);
    refs.push_back({static_cast<uint64_t>(kKeys * u * u * u), 1});
  }
  MrcOptions o;
  o.max_sampled_keys = 4096;
  MrcEstimator m(o);
  Feed(&m, refs);
  const MrcSnapshot s = m.Snapshot();
  EXPECT_LT(s.sampling_rate, 0.1);
  for (uint64_t c : {100, 1000, 5000, 20000, 50000, 100000}) {
    EXPECT_NEAR(s.HitRatioAt(c), ExactLruHitRatio(refs, c), 0.02) << "size " << c;
  }
  // The curve is a curve: sizes increase, hit ratios never fall.
  for (size_t i = 1; i < s.curve.size(); ++i) {
    EXPECT_GT(s.curve[i].size_bytes, s.curve[i - 1].size_bytes);
    EXPECT_GE(s.curve[i].hit_ratio, s.curve[i - 1].hit_ratio);
  }
}

TEST(MrcEstimatorTest, ConcurrentUsesAreAllCounted) {
  MrcOptions o;
  o.max_sampled_keys = 256;
  MrcEstimator m(o);
  std::vector<std::thread> threads;
  for (uint64_t t = 0; t < 4; ++t) {
    threads.emplace_back([&m, t] {
      for (uint64_t i = 0; i < 50000; ++i) m.Use((t * 7919 + i) % 3000, 64);
    });
  }
  for (std::thread& t : threads) t.join();
  const MrcSnapshot s = m.Snapshot();
  EXPECT_EQ(s.uses, 200000u);
  EXPECT_LE(s.sampled_keys, 256u);
  // 3000 keys of 64 bytes: everything but first uses hits once all of them
  // fit (a 256-key sample sizes the stream to within about 1/sqrt(256)).
  EXPECT_NEAR(s.MaxHitRatio(), 1.0 - 3000.0 / 200000, 0.01);
  EXPECT_NEAR(s.HitRatioAt(3000 * 64 * 3 / 2), s.MaxHitRatio(), 1e-9);
}

// The CacheManager's uses: a lookup's hits (deepest first, as the policies
// are touched), a read that is a use, and every insert; a probe and a plain
// read are not uses, and a lookup's miss counts once, when it is stored.
TEST(CacheManagerMrcTest, LookupHitsUseReadsAndInsertsAreTheUses) {
  ManualClock clock;
  DramTierOptions o;
  o.capacity_bytes = 64 << 16;
  o.page_bytes = 64 << 10;
  o.clock = &clock;
  o.read_bytes_per_s = o.write_bytes_per_s = 1e9;
  auto tier = OpenDramTier(o);
  ASSERT_TRUE(tier.ok()) << tier.status();
  std::vector<TierSlot> slots;
  slots.push_back({std::move(*tier), NewLruPolicy()});
  CacheManagerOptions options;
  options.clock = &clock;
  options.sweep_interval_ms = 0;
  options.background_promotion = false;
  auto cache = CacheManager::Open(std::move(slots), options);
  ASSERT_TRUE(cache.ok()) << cache.status();
  CacheManager& c = **cache;

  std::vector<TokenId> tokens(5 * 16);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<TokenId>(i);
  Namespace ns;
  ns.block_tokens = 16;
  const std::vector<BlockKey> keys = PrefixHasher(ns).Keys(tokens);
  const std::vector<std::byte> block(10, std::byte{7});  // 10 bytes: exact distances
  for (size_t i = 0; i < 4; ++i) {
    ASSERT_TRUE(c.Insert(keys[i], i ? std::optional(keys[i - 1]) : std::nullopt, block).ok());
  }
  EXPECT_EQ(c.MissRatioCurve().uses, 4u);
  // Four hits, the deepest first: 10, 20, 30 and 40 bytes away. The fifth
  // key misses and is no use until it is stored.
  EXPECT_EQ(c.Lookup(keys).blocks, 4u);
  EXPECT_EQ(c.MissRatioCurve().uses, 8u);
  EXPECT_EQ(c.Probe(keys).blocks, 4u);
  std::vector<std::byte> buf(10);
  ASSERT_TRUE(c.Read(keys[1], buf).ok());
  EXPECT_EQ(c.MissRatioCurve().uses, 8u);
  ASSERT_TRUE(c.Read(keys[1], buf, /*is_use=*/true).ok());   // 20 bytes away (keys[0], itself)
  ASSERT_TRUE(c.Insert(keys[4], keys[3], block).ok());       // the lookup's miss
  ASSERT_TRUE(c.Insert(keys[0], std::nullopt, block).ok());  // a refresh: 30 bytes away
  const MrcSnapshot s = c.MissRatioCurve();
  EXPECT_EQ(s.uses, 11u);
  EXPECT_EQ(s.sampling_rate, 1.0);
  EXPECT_DOUBLE_EQ(s.HitRatioAt(9), 0);
  EXPECT_DOUBLE_EQ(s.HitRatioAt(10), 1.0 / 11);
  EXPECT_DOUBLE_EQ(s.HitRatioAt(20), 3.0 / 11);
  EXPECT_DOUBLE_EQ(s.HitRatioAt(30), 5.0 / 11);
  EXPECT_DOUBLE_EQ(s.HitRatioAt(1 << 20), 6.0 / 11);
}

}  // namespace
}  // namespace kvtier
