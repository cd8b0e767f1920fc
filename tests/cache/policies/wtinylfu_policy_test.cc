// W-TinyLFU against hand-worked sequences (Caffeine's rules, one-byte
// blocks so that sizes are block counts).
//
// Capacity 10: window 10 - floor(9.9) = 1 block, main 9, protected
// floor(0.8 * 9) = 7. Every insert pushes the window's previous block into
// probation as the pending candidate; the sketch counts every Insert and
// Touch (a key's first reference sits in the doorkeeper: frequency 1).
#include <gtest/gtest.h>

#include <vector>

#include "cache/eviction_policy.h"
#include "tests/cache/policies/policy_test_util.h"

namespace kvtier {
namespace {

using policy_test::Evict;
using policy_test::HitsAt;
using policy_test::K;
using policy_test::ReplayBlocks;
using policy_test::ReplayMixedSizes;

std::unique_ptr<EvictionPolicy> WTinyLfu(uint64_t capacity) {
  return NewWTinyLfuPolicy(PolicyOptions{capacity});
}

//  #      req     what happens                                              victim
//  1-10   1..10   window [10]; probation 9..1 (MRU..LRU), 9 pending          -
//  11-12  1 1     1 moves to protected, then to its MRU end (hits)          -
//  13     11      candidate 9 (f 1) vs probation LRU 2 (f 1): a tie keeps   9
//                 the victim, 9 leaves; window [11], 10 pending
//  14     9       candidate 10 (f 1) vs 2 (f 1): 10 leaves; 11 pending      10
//  15     12      candidate 11 (f 1) vs 2: 11 leaves; 9 (f 2) pending       11
//  16     13      candidate 9 (f 2) vs 2 (f 1): 9 wins, 2 leaves; 12 pending 2
//  17     14      candidate 12 (f 1) vs 3 (f 1): 12 leaves                  12
TEST(WTinyLfuPolicyTest, CandidatesDuelProbationByFrequency) {
  auto p = WTinyLfu(10);
  const auto r = ReplayBlocks(*p, 10, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 1, 11, 9, 12, 13, 14});
  EXPECT_EQ(r.hits, HitsAt(17, {10, 11}));
  EXPECT_EQ(r.victims, (std::vector<uint64_t>{9, 10, 11, 2, 12}));
}

//  1-10   1..10   as above; 9 pending
//  11-18  1..8    each moves from probation to protected; the 8th overflows
//                 protected (max 7): its LRU block, 1, goes back to
//                 probation's MRU end. Probation: 1, 9 (MRU..LRU).
//  19     11      candidate 9 (f 1) vs probation's LRU non-candidate, 1 (f 2):
//                 9 leaves                                                  9
//  20     12      candidate 10 (f 1) vs 1 (f 2): 10 leaves                  10
//  21     1       hit: 1 back to protected, whose LRU (2) is demoted        -
//  22     13      candidate 11 (f 1) vs probation's LRU, 2 (f 2): 11 leaves 11
TEST(WTinyLfuPolicyTest, ProtectedOverflowGoesBackToProbation) {
  auto p = WTinyLfu(10);
  const auto r =
      ReplayBlocks(*p, 10, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 1, 13});
  EXPECT_EQ(r.hits, HitsAt(22, {10, 11, 12, 13, 14, 15, 16, 17, 20}));
  EXPECT_EQ(r.victims, (std::vector<uint64_t>{9, 10, 11}));
}

// No candidate pending (the last insert found room): victims come from
// probation, LRU first.
TEST(WTinyLfuPolicyTest, WithoutCandidateProbationGoesFirst) {
  auto p = WTinyLfu(10);
  for (uint64_t k = 1; k <= 4; ++k) p->Insert(K(k), PolicyBlock{});
  // Window [4]; probation 3, 2, 1 (MRU..LRU); 3 pending.
  const BlockKey incoming = K(5);
  EXPECT_EQ(Evict(*p, 1, &incoming), (std::vector<uint64_t>{3}));  // a tie: the candidate leaves
  EXPECT_EQ(Evict(*p, 1, &incoming), (std::vector<uint64_t>{1}));
  EXPECT_EQ(Evict(*p, 1, &incoming, [](const BlockKey& k) { return k.lo != 2; }),
            (std::vector<uint64_t>{4}));  // 2 refused: protected is empty, the window's 4
  EXPECT_EQ(p->size(), 1u);
}

TEST(WTinyLfuPolicyTest, MixedSizesNeverOverflow) {
  for (uint64_t seed : {1, 2, 3}) {
    auto p = WTinyLfu(400);
    ReplayMixedSizes(*p, 400, 0, seed);
  }
  auto unbounded = WTinyLfu(0);
  ReplayMixedSizes(*unbounded, 0, 600, 4);
}

}  // namespace
}  // namespace kvtier
