// ReplayTrace with admission filters (replay/policy_replay.h,
// cache/admission.h): filters see every reference, keep blocks out of a full
// tier, and the replay stays deterministic.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "cache/admission.h"
#include "cache/eviction_policy.h"
#include "replay/policy_replay.h"
#include "replay/trace.h"

namespace kvtier {
namespace {

// Appends a request of chained blocks `ids` (dense ids, 512 tokens each).
void AddRequest(Trace* t, const std::vector<uint32_t>& ids) {
  TraceRequest r;
  r.first_block = static_cast<uint32_t>(t->blocks.size());
  r.num_blocks = static_cast<uint32_t>(ids.size());
  r.input_tokens = r.num_blocks * 512;
  for (uint32_t id : ids) {
    t->blocks.push_back(id);
    t->distinct_blocks = std::max(t->distinct_blocks, id + 1);
  }
  t->requests.push_back(r);
}

// 20 hot chains of 5 blocks asked for in turn, each followed by 3 one-shot
// chains of 5 blocks (a scan): between two uses of a hot chain come 400
// block references, more than a 150-block tier holds, so LRU without a
// filter never hits them; a filter that keeps the one-shot blocks out keeps
// the hot chains.
Trace HotChainsUnderAScan(int rounds) {
  Trace t;
  uint32_t next_cold = 100;
  for (int round = 0; round < rounds; ++round) {
    for (uint32_t chain = 0; chain < 20; ++chain) {
      AddRequest(&t, {chain * 5, chain * 5 + 1, chain * 5 + 2, chain * 5 + 3, chain * 5 + 4});
      for (int s = 0; s < 3; ++s) {
        AddRequest(&t, {next_cold, next_cold + 1, next_cold + 2, next_cold + 3, next_cold + 4});
        next_cold += 5;
      }
    }
  }
  return t;
}

TEST(AdmissionReplayTest, FiltersKeepHotChainsUnderAScan) {
  const Trace t = HotChainsUnderAScan(30);
  Result<ReplayResult> none = ReplayTrace(t, "lru", 150);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->name(), "lru");
  EXPECT_EQ(none->block_hits, 0u);
  // 20 x 5 hot blocks per round; 29 rounds can hit. Each filter must keep
  // a good part of them.
  const uint64_t hot_refs = 29 * 100;
  for (const std::string filter : {"tinylfu", "ghost", "prefix"}) {
    Result<ReplayResult> r = ReplayTrace(t, "lru", 150, filter);
    ASSERT_TRUE(r.ok()) << filter;
    EXPECT_EQ(r->name(), "lru+" + filter);
    EXPECT_GT(r->block_hits, hot_refs / 2) << filter;
  }
}

// Every chain is asked for twice, soon enough for the tier to hold it: with
// nothing to gain from keeping blocks out, the prefix filter must not lose
// the hits a tier without a filter gets (its bar stays low).
TEST(AdmissionReplayTest, PrefixFilterStaysOutOfTheWayWhenEverythingIsReused) {
  Trace t;
  for (uint32_t c = 0; c < 400; ++c) {
    const uint32_t b = c * 4;
    AddRequest(&t, {b, b + 1, b + 2, b + 3});
    if (c >= 2) {
      const uint32_t p = (c - 2) * 4;
      AddRequest(&t, {p, p + 1, p + 2, p + 3});
    }
  }
  Result<ReplayResult> none = ReplayTrace(t, "lru", 40);
  Result<ReplayResult> prefix = ReplayTrace(t, "lru", 40, "prefix");
  ASSERT_TRUE(none.ok());
  ASSERT_TRUE(prefix.ok());
  EXPECT_GT(none->hit_ratio(), 0.45);
  EXPECT_GE(prefix->block_hits, none->block_hits * 95 / 100);
}

// The offline oracle admits a block exactly when the trace uses it again:
// one-block requests A, B, A through a one-block LRU tier. Without a filter B
// evicts A and the second A misses; the oracle keeps B (never used again) out
// and A hits. It knows whether, not when: in A, B, A, B, A it lets B (used
// again, but later) evict A and gets one hit, where Belady keeps A and gets
// two.
TEST(AdmissionReplayTest, TheOracleAdmitsExactlyTheBlocksUsedAgain) {
  Trace t;
  AddRequest(&t, {0});
  AddRequest(&t, {1});
  AddRequest(&t, {0});
  Result<ReplayResult> none = ReplayTrace(t, "lru", 1);
  Result<ReplayResult> oracle = ReplayTrace(t, "lru", 1, kOracleAdmission);
  ASSERT_TRUE(none.ok() && oracle.ok());
  EXPECT_EQ(none->block_hits, 0u);
  EXPECT_EQ(oracle->block_hits, 1u);
  EXPECT_EQ(oracle->name(), "lru+oracle");

  Trace u;
  for (uint32_t id : {0u, 1u, 0u, 1u, 0u}) AddRequest(&u, {id});
  Result<ReplayResult> whether = ReplayTrace(u, "lru", 1, kOracleAdmission);
  Result<ReplayResult> belady = ReplayTrace(u, "belady", 1);
  ASSERT_TRUE(whether.ok() && belady.ok());
  EXPECT_EQ(whether->block_hits, 1u);
  EXPECT_EQ(belady->block_hits, 2u);
  // Under a scan it keeps every hot chain it has room for: more than any
  // online filter, never more than Belady.
  const Trace scan = HotChainsUnderAScan(30);
  Result<ReplayResult> bound = ReplayTrace(scan, "lru", 150, kOracleAdmission);
  Result<ReplayResult> best = ReplayTrace(scan, "belady", 150);
  ASSERT_TRUE(bound.ok() && best.ok());
  // While the tier fills, one-shot blocks find room without asking and LRU
  // may push a hot block out: it misses once in the next round.
  EXPECT_GE(bound->block_hits, 28u * 100u);
  EXPECT_LE(bound->block_hits, 29u * 100u);
  EXPECT_LE(bound->block_hits, best->block_hits);
  for (const std::string& filter : AdmissionFilterNames()) {
    Result<ReplayResult> r = ReplayTrace(scan, "lru", 150, filter);
    ASSERT_TRUE(r.ok()) << filter;
    EXPECT_LE(r->block_hits, bound->block_hits) << filter;
  }
  // A bound for online policies: Belady decides admission itself.
  EXPECT_FALSE(ReplayTrace(t, "belady", 1, kOracleAdmission).ok());
}

TEST(AdmissionReplayTest, DeterministicForEveryPolicyAndFilter) {
  const Trace t = HotChainsUnderAScan(5);
  for (const std::string& policy : EvictionPolicyNames()) {
    for (const std::string& filter : AdmissionFilterNames()) {
      Result<ReplayResult> a = ReplayTrace(t, policy, 120, filter);
      Result<ReplayResult> b = ReplayTrace(t, policy, 120, filter);
      ASSERT_TRUE(a.ok() && b.ok()) << policy << "+" << filter;
      EXPECT_EQ(a->block_hits, b->block_hits) << policy << "+" << filter;
      EXPECT_EQ(a->hit_tokens, b->hit_tokens) << policy << "+" << filter;
      EXPECT_EQ(a->admission, filter);
    }
  }
}

TEST(AdmissionReplayTest, BadNamesAreRefused) {
  const Trace t = HotChainsUnderAScan(1);
  Result<ReplayResult> r = ReplayTrace(t, "lru", 100, "tinylf");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("unknown admission filter 'tinylf'"), std::string::npos);
  // Belady decides admission itself.
  r = ReplayTrace(t, "belady", 100, "ghost");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(ReplayTrace(t, "belady", 100, "none").ok());
}

}  // namespace
}  // namespace kvtier
