// S3-FIFO against hand traces of Yang et al., SOSP'23, Algorithm 1, with
// one-byte blocks so that sizes are object counts.
#include <gtest/gtest.h>

#include <functional>
#include <map>
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
using policy_test::ReplayScaled;

std::unique_ptr<EvictionPolicy> S3Fifo(uint64_t capacity_bytes) {
  return NewS3FifoPolicy(PolicyOptions{capacity_bytes});
}

std::vector<uint64_t> Range(uint64_t first, uint64_t last) {
  std::vector<uint64_t> v;
  for (uint64_t i = first; i <= last; ++i) v.push_back(i);
  return v;
}

std::vector<uint64_t> Concat(std::vector<std::vector<uint64_t>> parts) {
  std::vector<uint64_t> v;
  for (const auto& part : parts) v.insert(v.end(), part.begin(), part.end());
  return v;
}

// c = 10: S >= 10% means S holds at least one object; M's share is 9; G holds
// up to 9 keys. Queues are written tail..head, freq in parentheses when not 0.
//
//  #      req        what happens                                         victim
//  1-10   1..10      S: 1..10                                               -
//  11-12  1 1        hits: 1(2)                                             -
//  13     2          hit: 2(1)                                              -
//  14     11         EVICTS: 1 has freq 2 > 1, so it moves to M as 1(0);
//                    2 has freq 1, not > 1, so it goes to G.                2
//                    S: 3..11  M: 1  G: 2
//  15     12         EVICTS: 3 (a one-hit wonder) to G.  S: 4..12  G: 2 3   3
//  16     2          EVICTS: 4 to G; 2 is in G, so it enters M.             4
//                    S: 5..12  M: 1 2  G: 3 4
//  17-23  3..9       each a ghost hit: EVICTS takes 5, 6, ..., 11 to G and  5..11
//                    the key enters M.  S: 12  M: 1..9  G: 10 11
//  24-25  12 12      hits: 12(2)                                            -
//  26     1          hit: 1(1)                                              -
//  27-30  2 2 2 2    hits: 2(3), capped at 3                                -
//  31     13         EVICTS: 12(2) moves to M as 12(0); M now holds 10 > 9,
//                    so EVICTM: 1(1) goes back to the head as 1(0), 2(3) as
//                    2(2); 3 leaves. S is empty, so EVICTS is done too.     3
//                    S: 13  M: 4..9 12 1 2(2)  G: 10 11
//  32     10         ghost hit: EVICTS takes 13 to G; 10 enters M.          13
//                    S: -  M: 4..9 12 1 2(2) 10  G: 11 13
//  33     11         ghost hit with S empty (< 10%): EVICTM, 4 leaves.      4
//                    M: 5..9 12 1 2(2) 10 11  G: 13
//  34     14         EVICTM again (S empty): 5 leaves.  S: 14               5
//  35     3          3 left from M, which leaves no ghost: a plain miss.
//                    EVICTS: 14 to G.  S: 3  G: 13 14                       14
TEST(S3FifoPolicyTest, PaperTrace) {
  auto p = S3Fifo(10);
  const auto requests = Concat({Range(1, 10),
                                {1, 1, 2, 11, 12, 2},
                                Range(3, 9),
                                {12, 12, 1, 2, 2, 2, 2, 13, 10, 11, 14, 3}});
  auto r = ReplayBlocks(*p, 10, requests);
  EXPECT_EQ(r.victims, (std::vector<uint64_t>{2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 3, 13, 4, 5, 14}));
  EXPECT_EQ(r.hits, HitsAt(requests.size(), {10, 11, 12, 23, 24, 25, 26, 27, 28, 29}));
  EXPECT_EQ(p->size(), 10u);
}

// c = 10, so G remembers 9 keys (M's share), not 10.
//  1..10    S: 1..10
//  11..20   EVICTS takes 1..10 to G, which keeps the newest 9: G: 2..10   victims 1..10
//  2        EVICTS takes 11 to G, which drops 2 (G: 3..11); so 2 is not a
//           ghost any more and enters S. (A G of 10 would still hold it.)  11
//  4        EVICTS takes 12 to G (G: 4..12); 4 is there, so it enters M.   12
//           S: 13..20 2  M: 4
//  21..30   EVICTS every time (S >= 10%): 13..20, then 2, then 21; 4 stays.
TEST(S3FifoPolicyTest, GhostQueueHoldsAsManyKeysAsMain) {
  auto p = S3Fifo(10);
  const auto requests = Concat({Range(1, 20), {2, 4}, Range(21, 30)});
  auto r = ReplayBlocks(*p, 10, requests);
  EXPECT_EQ(r.victims, Concat({Range(1, 20), {2, 21}}));
  EXPECT_EQ(r.hits, HitsAt(requests.size(), {}));
}

// A key promoted from S starts in M with freq 0.
TEST(S3FifoPolicyTest, PromotedKeyStartsMainAfresh) {
  auto p = S3Fifo(10);
  p->Insert(K(1), PolicyBlock{});
  p->Touch(K(1));
  p->Touch(K(1));
  p->Insert(K(2), PolicyBlock{});  // S: 1(2) 2
  // EVICTS: 1 moves to M as 1(0); 2 goes to G.
  EXPECT_EQ(Evict(*p, 1), (std::vector<uint64_t>{2}));
  p->Insert(K(2), PolicyBlock{});  // ghost hit: M: 1 2
  // S is empty: EVICTM takes 1 at once (had it kept freq 2, 2 would go).
  EXPECT_EQ(Evict(*p, 1), (std::vector<uint64_t>{1}));
}

// EVICTS promoting into a full M runs EVICTM, whose victim comes first.
// c = 10. M: 1..9 (ghost hits), S: 10(2) 11.
//  EVICTS: 10 moves to M, which now holds 10 > 9: EVICTM takes 1.
//  The paper's EVICTS then goes on and takes 11 to G in the same EVICT; here
//  that is the next victim.
TEST(S3FifoPolicyTest, PromotionIntoFullMainEvictsFromMain) {
  auto p = S3Fifo(10);
  for (uint64_t k = 1; k <= 9; ++k) {
    p->Insert(K(k), PolicyBlock{});
    EXPECT_EQ(Evict(*p, 1), (std::vector<uint64_t>{k}));
    p->Insert(K(k), PolicyBlock{});  // ghost hit: to M
  }
  p->Insert(K(10), PolicyBlock{});
  p->Touch(K(10));
  p->Touch(K(10));
  p->Insert(K(11), PolicyBlock{});
  EXPECT_EQ(Evict(*p, 1), (std::vector<uint64_t>{1}));
  EXPECT_EQ(Evict(*p, 1), (std::vector<uint64_t>{11}));
  EXPECT_EQ(p->size(), 9u);
}

// EVICT compares S's bytes with 10% of the capacity (here 10 of 100 bytes).
TEST(S3FifoPolicyTest, SmallQueueShareIsMeasuredInBytes) {
  auto p = S3Fifo(100);
  p->Insert(K(1), PolicyBlock{50});
  EXPECT_EQ(Evict(*p, 1), (std::vector<uint64_t>{1}));     // S = 50 >= 10: EVICTS, 1 to G
  p->Insert(K(1), PolicyBlock{50});                        // ghost hit: M: 1
  p->Insert(K(2), PolicyBlock{5});                         // S: 2 (5 bytes)
  EXPECT_EQ(Evict(*p, 1), (std::vector<uint64_t>{1}));     // S = 5 < 10: EVICTM
  p->Insert(K(1), PolicyBlock{50});                        // M's evictions leave no ghost: S: 2 1
  p->Insert(K(3), PolicyBlock{5});                         // S: 2 1 3
  EXPECT_EQ(Evict(*p, 2), (std::vector<uint64_t>{2, 1}));  // S = 60, then 55 >= 10
  EXPECT_EQ(Evict(*p, 1), (std::vector<uint64_t>{3}));     // S = 5 < 10, M empty: S after all
  EXPECT_EQ(p->size(), 0u);
}

// The frequency is 2 bits: five hits count as three.
TEST(S3FifoPolicyTest, FrequencyIsCappedAtThree) {
  auto p = S3Fifo(10);
  for (uint64_t k : {1, 2}) {
    p->Insert(K(k), PolicyBlock{});
    EXPECT_EQ(Evict(*p, 1), (std::vector<uint64_t>{k}));  // S to G
    p->Insert(K(k), PolicyBlock{});                       // ghost hit: to M
  }
  for (int i = 0; i < 5; ++i) p->Touch(K(1));  // 1(3), not 5
  for (int i = 0; i < 3; ++i) p->Touch(K(2));  // 2(3)
  // M: 1(3) 2(3). EVICTM: 1->2, 2->2, 1->1, 2->1, 1->0, 2->0, then 1 leaves.
  // (An uncapped 1(5) would outlast 2, which would leave instead.)
  EXPECT_EQ(Evict(*p, 1), (std::vector<uint64_t>{1}));
  EXPECT_EQ(Evict(*p, 1), (std::vector<uint64_t>{2}));
}

// Erase forgets resident keys without a ghost; ghosts and unknown keys are
// not resident and are ignored.
TEST(S3FifoPolicyTest, EraseLeavesNoGhost) {
  auto p = S3Fifo(10);
  p->Insert(K(1), PolicyBlock{});
  p->Erase(K(1));
  p->Erase(K(99));
  p->Touch(K(99));
  EXPECT_EQ(p->size(), 0u);
  p->Insert(K(1), PolicyBlock{});                       // not a ghost: S: 1
  p->Insert(K(2), PolicyBlock{});                       // S: 1 2
  EXPECT_EQ(Evict(*p, 1), (std::vector<uint64_t>{1}));  // G: 1
  p->Erase(K(1));                                       // only a ghost: ignored
  p->Insert(K(1), PolicyBlock{});                       // ghost hit: M: 1
  EXPECT_EQ(Evict(*p, 1), (std::vector<uint64_t>{2}));  // S: 2 goes first
  p->Erase(K(1));
  EXPECT_EQ(p->size(), 0u);
  EXPECT_EQ(Evict(*p, 4), (std::vector<uint64_t>{}));
}

TEST(S3FifoPolicyTest, EmptyHasNoVictims) {
  auto p = S3Fifo(10);
  EXPECT_EQ(Evict(*p, 1), (std::vector<uint64_t>{}));
  EXPECT_EQ(p->size(), 0u);
}

// Refused blocks keep their queue, place and frequency.
TEST(S3FifoPolicyTest, SkipsIneligibleBlocksAndKeepsThem) {
  auto p = S3Fifo(10);
  for (uint64_t i = 1; i <= 4; ++i) p->Insert(K(i), PolicyBlock{});
  p->Touch(K(1));
  p->Touch(K(1));  // S: 1(2) 2 3 4
  // 1 is refused, so not promoted; 2 is refused; 3 and 4 go to G.
  EXPECT_EQ(Evict(*p, 2, nullptr, [](const BlockKey& k) { return k.lo > 2; }),
            (std::vector<uint64_t>{3, 4}));
  EXPECT_EQ(Evict(*p, 1, nullptr, [](const BlockKey&) { return false; }),
            (std::vector<uint64_t>{}));
  EXPECT_EQ(p->size(), 2u);
  // Now 1(2) moves to M and 2 goes; then S is empty and EVICTM takes 1.
  EXPECT_EQ(Evict(*p, 1), (std::vector<uint64_t>{2}));
  EXPECT_EQ(Evict(*p, 1), (std::vector<uint64_t>{1}));

  // In M: a refused block is neither reinserted nor has its freq lowered.
  auto q = S3Fifo(10);
  for (uint64_t k : {5, 6, 7}) {
    q->Insert(K(k), PolicyBlock{});
    EXPECT_EQ(Evict(*q, 1), (std::vector<uint64_t>{k}));
    q->Insert(K(k), PolicyBlock{});  // M: 5 6 7
  }
  q->Touch(K(5));
  q->Touch(K(6));  // M: 5(1) 6(1) 7
  // 5 refused; 6(1) to the head as 6(0); 7 leaves.  M: 5(1) 6
  EXPECT_EQ(Evict(*q, 1, nullptr, [](const BlockKey& k) { return k.lo != 5; }),
            (std::vector<uint64_t>{7}));
  // 5(1) to the head as 5(0); 6 leaves; then 5.
  EXPECT_EQ(Evict(*q, 2), (std::vector<uint64_t>{6, 5}));
}

TEST(S3FifoPolicyTest, UniformBlockSizeScalesTheUnitTrace) {
  auto p = S3Fifo(10 * 32);
  const auto requests = Concat({Range(1, 10),
                                {1, 1, 2, 11, 12, 2},
                                Range(3, 9),
                                {12, 12, 1, 2, 2, 2, 2, 13, 10, 11, 14, 3}});
  EXPECT_EQ(ReplayScaled(*p, 10, 32, requests),
            (std::vector<uint64_t>{2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 3, 13, 4, 5, 14}));
}

TEST(S3FifoPolicyTest, MixedSizesStayWithinCapacity) {
  auto p = S3Fifo(400);
  ReplayMixedSizes(*p, 400, 0, 7);
  auto u = S3Fifo(0);  // unbounded
  ReplayMixedSizes(*u, 0, 300, 7);
}

TEST(S3FifoPolicyTest, FactoryName) {
  auto p = S3Fifo(10);
  EXPECT_EQ(p->Name(), "s3fifo");
}

}  // namespace
}  // namespace kvtier
