// Admission filters (cache/admission.h) and the TinyLFU frequency sketch
// they share (cache/admission/frequency_sketch.h).
#include "cache/admission.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cache/admission/frequency_sketch.h"

namespace kvtier {
namespace {

BlockKey K(uint64_t i) { return BlockKey{0, i}; }
uint64_t H(uint64_t i) { return AdmissionHash(K(i), 0); }

// Records one reference of key `i` (a miss, no parent, depth 0) and returns
// whether the filter admits it over `victim` (null: no victim).
bool SeeAndAsk(AdmissionFilter& f, uint64_t i, const BlockKey* victim = nullptr) {
  const BlockKey key = K(i);
  const PolicyBlock block;
  const BlockRef ref{key, block, false};
  f.Record(ref, false);
  return f.Admit(ref, victim);
}

// Records `times` references of key `i` at `depth` (misses).
void See(AdmissionFilter& f, uint64_t i, int times = 1, uint32_t depth = 0) {
  const BlockKey key = K(i);
  PolicyBlock block;
  block.depth = depth;
  for (int n = 0; n < times; ++n) f.Record(BlockRef{key, block, false}, false);
}

TEST(FrequencySketchTest, CountsReferencesThroughTheDoorkeeper) {
  FrequencySketch sketch(64, /*doorkeeper=*/true);
  EXPECT_EQ(sketch.Frequency(H(1)), 0u);
  EXPECT_EQ(sketch.Add(H(1)), 0u);        // the estimate before the reference
  EXPECT_EQ(sketch.Frequency(H(1)), 1u);  // in the doorkeeper only
  for (int i = 0; i < 4; ++i) sketch.Add(H(1));
  EXPECT_EQ(sketch.Frequency(H(1)), 5u);
  EXPECT_EQ(sketch.Frequency(H(2)), 0u);
  // Counters saturate at 15 (plus one for the doorkeeper).
  for (int i = 0; i < 40; ++i) sketch.Add(H(3));
  EXPECT_EQ(sketch.Frequency(H(3)), FrequencySketch::kMaxCount + 1);
}

TEST(FrequencySketchTest, AgingHalvesCountsAfterTheSample) {
  FrequencySketch sketch(64, /*doorkeeper=*/true);
  ASSERT_EQ(sketch.sample_size(), 640u);          // W = 10 x capacity
  for (int i = 0; i < 10; ++i) sketch.Add(H(7));  // 1 in the doorkeeper + 9 counted
  ASSERT_EQ(sketch.Frequency(H(7)), 10u);
  // Keys seen once each fill the rest of the sample; they stay in the
  // doorkeeper and leave the counters alone.
  uint64_t next = 1000;
  while (sketch.resets() == 0) sketch.Add(H(next++));
  EXPECT_EQ(next - 1000, 640u - 10u);  // the reset came exactly at W references
  // 9 counted halves to 4; the doorkeeper was emptied.
  EXPECT_EQ(sketch.Frequency(H(7)), 4u);
}

// The doorkeeper keeps one-hit wonders out of the counters: after many
// distinct keys seen once, a key never seen reads (almost always) 0; without
// it the shared counters fill up and unseen keys often read 1 or more.
TEST(FrequencySketchTest, DoorkeeperKeepsOneHitWondersOutOfTheCounters) {
  FrequencySketch with(64, true), without(64, false);
  for (uint64_t i = 0; i < 600; ++i) {
    with.Add(H(i));
    without.Add(H(i));
  }
  double with_sum = 0, without_sum = 0;
  for (uint64_t i = 100000; i < 100200; ++i) {
    with_sum += with.Frequency(H(i));
    without_sum += without.Frequency(H(i));
  }
  EXPECT_LT(with_sum / 200, 0.1);
  EXPECT_GT(without_sum / 200, 0.5);
}

TEST(AdmissionFilterTest, NamesAndBadInput) {
  EXPECT_EQ(AdmissionFilterNames(),
            (std::vector<std::string>{"none", "tinylfu", "ghost", "prefix"}));
  for (const std::string& name : AdmissionFilterNames()) {
    auto f = NewAdmissionFilter(name, AdmissionOptions{.capacity_blocks = 16});
    ASSERT_NE(f, nullptr) << name;
    EXPECT_EQ(f->Name(), name);
    EXPECT_EQ(NewAdmissionFilter(name, AdmissionOptions{.capacity_blocks = 0}), nullptr) << name;
  }
  EXPECT_EQ(NewAdmissionFilter("lru", AdmissionOptions{.capacity_blocks = 16}), nullptr);
  EXPECT_EQ(NewAdmissionFilter("", AdmissionOptions{.capacity_blocks = 16}), nullptr);
}

TEST(AdmissionFilterTest, NoneAdmitsEverything) {
  auto f = NewAdmissionFilter("none", AdmissionOptions{.capacity_blocks = 4});
  const BlockKey hot = K(1);
  See(*f, 1, 50);
  EXPECT_TRUE(SeeAndAsk(*f, 2, &hot));
}

TEST(TinyLfuAdmissionTest, FrequentBlockBeatsOneHitWonder) {
  auto f = NewAdmissionFilter("tinylfu", AdmissionOptions{.capacity_blocks = 100});
  See(*f, 1, 5);
  const BlockKey frequent = K(1), wonder = K(2);
  EXPECT_FALSE(SeeAndAsk(*f, 2, &frequent));  // seen once against five times
  EXPECT_TRUE(SeeAndAsk(*f, 1, &wonder));     // the other way round
  // A tie keeps the victim.
  See(*f, 3);
  const BlockKey once = K(3);
  EXPECT_FALSE(SeeAndAsk(*f, 4, &once));
  // Without a victim there is nothing to compare: admitted.
  EXPECT_TRUE(SeeAndAsk(*f, 5));
}

TEST(GhostAdmissionTest, AdmitsOnSecondSightOnly) {
  auto f = NewAdmissionFilter("ghost", AdmissionOptions{.capacity_blocks = 10});
  EXPECT_FALSE(f->ComparesVictim());
  EXPECT_FALSE(SeeAndAsk(*f, 1));
  EXPECT_TRUE(SeeAndAsk(*f, 1));
  // The history holds 10 x capacity = 100 keys (two generations of 50): a
  // key seen again after 200 other keys has been forgotten.
  EXPECT_FALSE(SeeAndAsk(*f, 2));
  for (uint64_t i = 1000; i < 1200; ++i) See(*f, i);
  EXPECT_FALSE(SeeAndAsk(*f, 2));
  // After 40 it is still remembered.
  for (uint64_t i = 2000; i < 2040; ++i) See(*f, i);
  EXPECT_TRUE(SeeAndAsk(*f, 2));
}

// Untrained, it behaves as no filter.
TEST(PrefixAdmissionTest, AdmitsWithoutEvidence) {
  auto f = NewAdmissionFilter("prefix", AdmissionOptions{.capacity_blocks = 10});
  EXPECT_FALSE(f->ComparesVictim());
  // Untrained, a new block is admitted (the bar starts at 0).
  EXPECT_TRUE(SeeAndAsk(*f, 1));
  // A block seen before is admitted.
  EXPECT_TRUE(SeeAndAsk(*f, 1));
}

// Drives the prefix filter as a cache would: `key` (a miss at `depth` under
// `parent`) is asked about; if admitted, `victim` is evicted for it.
bool Miss(AdmissionFilter& f, uint64_t key, uint32_t depth, std::optional<uint64_t> parent,
          std::optional<uint64_t> victim) {
  const BlockKey k = K(key);
  PolicyBlock block;
  block.depth = depth;
  if (parent) block.parent = K(*parent);
  const BlockRef ref{k, block, false};
  f.Record(ref, false);
  if (!f.Admit(ref, nullptr)) return false;
  if (victim) f.Evicted(K(*victim));
  f.Inserted(ref);
  return true;
}

// New blocks displace blocks that are then asked for again: admitting them
// cost hits, so the bar rises until new blocks are kept out. Then a block
// seen before is still admitted, but not under a parent just kept out.
TEST(PrefixAdmissionTest, LearnsToKeepNewBlocksOutWhenTheyCostHits) {
  auto f = NewAdmissionFilter("prefix", AdmissionOptions{.capacity_blocks = 10});
  uint64_t next = 100;
  int admitted = 0;
  for (int i = 0; i < 50; ++i) {
    const uint64_t victim = 5000 + i;
    See(*f, victim, 1, 8);  // resident (deep in a chain), then evicted for a new block ...
    if (Miss(*f, next++, 0, std::nullopt, victim)) ++admitted;
    See(*f, victim, 1, 8);  // ... and asked for again: a regret
  }
  EXPECT_GT(admitted, 0);
  EXPECT_LT(admitted, 20);  // it stopped admitting
  EXPECT_FALSE(Miss(*f, next++, 0, std::nullopt, std::nullopt));
  // A block seen before is admitted ...
  See(*f, 42);
  EXPECT_TRUE(Miss(*f, 42, 1, std::nullopt, std::nullopt));
  // ... but not under a parent just kept out: it could not be hit.
  See(*f, 43);
  EXPECT_FALSE(Miss(*f, 7777, 0, std::nullopt, std::nullopt));
  EXPECT_FALSE(Miss(*f, 43, 1, 7777, std::nullopt));
}

// Blocks kept out that are asked for again lower the bar (keeping them out
// cost hits), and their class's reuse estimate rises: new blocks get in again.
TEST(PrefixAdmissionTest, LearnsToAdmitAgainWhenRefusalsCostHits) {
  auto f = NewAdmissionFilter("prefix", AdmissionOptions{.capacity_blocks = 10});
  uint64_t next = 100;
  for (int i = 0; i < 50; ++i) {
    const uint64_t victim = 5000 + i;
    See(*f, victim, 1, 8);
    Miss(*f, next++, 0, std::nullopt, victim);
    See(*f, victim, 1, 8);
  }
  ASSERT_FALSE(Miss(*f, next++, 0, std::nullopt, std::nullopt));
  bool admits_again = false;
  for (int i = 0; i < 200 && !admits_again; ++i) {
    const uint64_t key = next++;
    admits_again = Miss(*f, key, 0, std::nullopt, std::nullopt);
    See(*f, key);  // the refused block is asked for again
  }
  EXPECT_TRUE(admits_again);
}

// Runs chains of blocks (requests of 1-8 blocks under one of 60 roots)
// through `f` in front of an LRU cache of 32 blocks, as a replay does;
// returns every Admit answer. `hints`: before each reference, the filter is
// told of the next 8 references and of a key never referenced (Prefetch).
std::vector<bool> AdmitAnswers(AdmissionFilter& f, bool hints) {
  std::vector<std::vector<uint64_t>> requests;
  std::vector<uint64_t> refs;
  uint64_t x = 99;
  auto next = [&x] { return (x = x * 6364136223846793005ull + 1442695040888963407ull) >> 33; };
  for (int r = 0; r < 1500; ++r) {
    const uint64_t root = next() % 60, length = 1 + next() % 8, branch = next() % 3;
    std::vector<uint64_t> chain;
    for (uint64_t d = 0; d < length; ++d) chain.push_back(root * 1000 + d * 10 + branch);
    refs.insert(refs.end(), chain.begin(), chain.end());
    requests.push_back(std::move(chain));
  }
  std::vector<uint64_t> lru;  // the cache, least recently used first
  std::vector<bool> answers;
  size_t at = 0;
  for (const std::vector<uint64_t>& chain : requests) {
    for (size_t i = 0; i < chain.size(); ++i, ++at) {
      if (hints) {
        for (size_t d = 1; d <= 8 && at + d < refs.size(); ++d) f.Prefetch(K(refs[at + d]));
        f.Prefetch(K(1'000'000'000));
      }
      const BlockKey key = K(chain[i]);
      PolicyBlock block;
      if (i > 0) block.parent = K(chain[i - 1]);
      block.depth = static_cast<uint32_t>(i);
      const BlockRef ref{key, block, i + 1 == chain.size()};
      const auto held = std::find(lru.begin(), lru.end(), chain[i]);
      f.Record(ref, held != lru.end());
      if (held != lru.end()) {
        lru.erase(held);
        lru.push_back(chain[i]);
        continue;
      }
      if (lru.size() == 32) {
        const BlockKey victim = K(lru.front());
        answers.push_back(f.Admit(ref, &victim));
        if (!answers.back()) continue;
        lru.erase(lru.begin());
        f.Evicted(victim);
      }
      lru.push_back(chain[i]);
      f.Inserted(ref);
    }
  }
  return answers;
}

// Every filter: Prefetch is only a hint. The same references get the same
// answers with hints before each as without any.
TEST(AdmissionFilterTest, EveryFilterAnswersTheSameWithPrefetchHints) {
  for (const std::string& name : AdmissionFilterNames()) {
    SCOPED_TRACE(name);
    auto plain = NewAdmissionFilter(name, AdmissionOptions{.capacity_blocks = 32});
    auto hinted = NewAdmissionFilter(name, AdmissionOptions{.capacity_blocks = 32});
    const std::vector<bool> a = AdmitAnswers(*plain, false);
    const std::vector<bool> b = AdmitAnswers(*hinted, true);
    EXPECT_EQ(a, b);
    EXPECT_GT(a.size(), 1000u);  // the cache was full for most references
    if (name != "none") {
      EXPECT_GT(std::count(a.begin(), a.end(), false), 10) << "it kept some out";
    }
  }
}

}  // namespace
}  // namespace kvtier
