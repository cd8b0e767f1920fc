// ARC against hand traces of Megiddo & Modha, FAST'03, the ARC(c) figure (cases I-IV,
// REPLACE(x, p)), with one-byte blocks so that sizes are page counts.
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

std::unique_ptr<EvictionPolicy> Arc(uint64_t capacity_bytes) {
  return NewArcPolicy(PolicyOptions{capacity_bytes});
}

// c = 4. Lists are written LRU..MRU as T1 | T2 | B1 | B2; L1 = T1 + B1.
// clang-format off
//
//  #  req  what happens                                           victim  after
//  1-4 1..4 case IV, the cache has room                              -    1 2 3 4 | | | ; p=0
//  5   1   case I: hit, to the MRU of T2                             -    2 3 4 | 1 | |
//  6   5   IV-B (|L1|=3 < c). REPLACE: |T1|=3 > p=0,                 2    3 4 5 | 1 | 2 |
//          LRU of T1 to B1
//  7   2   II: d1 = 1 (|B1|=1 >= |B2|=0), p = 1.                    3    4 5 | 1 2 | 3 | ; p=1
//          REPLACE: |T1|=3 > 1, T1's LRU goes
//  8   6   IV-B (|L1|=3). REPLACE: |T1|=2 > 1                        4    5 6 | 1 2 | 3 4 |
//  9   7   IV-A (|L1|=4=c, |T1|=2 < c): delete B1's LRU (3).         5    6 7 | 1 2 | 4 5 |
//          REPLACE: |T1|=2 > 1
// 10   4   II: d1 = 1 (|B1|=2 >= 0), p = 2. REPLACE: |T1|=2 is       1    6 7 | 2 4 | 5 | 1 ; p=2
//          not > 2 and 4 is not in B2, so T2's LRU goes
// 11   5   II: d1 = 1 (|B1|=1 >= |B2|=1), p = 3.                     2    6 7 | 4 5 | | 1 2 ; p=3
//          REPLACE: |T1|=2 < 3
// 12   1   III: d2 = 1 (|B2|=2 >= |B1|=0), p = 2. REPLACE:           6    7 | 4 5 1 | 6 | 2 ; p=2
//          |T1|=2 = p and 1 is in B2, so T1's LRU goes. (Had p
//          stayed 3, or had the rule not looked at the incoming
//          key, 4 would have gone.)
// 13   8   IV-B (|L1|=2, directory 6). REPLACE: |T1|=1 < 2           4    7 8 | 5 1 | 6 | 2 4
// 14   6   II: |B1|=1 < |B2|=2 so d1 = |B2|/|B1| = 2, p = 4.         5    7 8 | 1 6 | | 2 4 5 ; p=4
//          REPLACE: |T1|=2 < 4
// 15   2   III: d2 = 1 (|B2|=3 >= 0), p = 3. REPLACE: |T1|=2 < 3     1    7 8 | 6 2 | | 4 5 1 ; p=3
//          and |T1| != p. (With d1 = 1 at #14, p would be 2 and
//          7 would go.)
// 16   9   IV-B (|L1|=2, directory 7). REPLACE: |T1|=2 < 3           6    7 8 9 | 2 | | 4 5 1 6
// 17  10   IV-B (|L1|=3, directory 8 = 2c): delete B2's LRU (4).     2    7 8 9 10 | | | 5 1 6 2
//          REPLACE: |T1|=3 is not > 3
// 18  11   IV-A with |T1| = c: T1's LRU leaves without a ghost       7    8 9 10 11 | | | 5 1 6 2
// 19   3   3 left B1 at #9, so a plain miss: IV-A again              8    9 10 11 3 | | | 5 1 6 2
//
// clang-format on
TEST(ArcPolicyTest, PaperTraceAdaptsTargetUpAndDown) {
  auto p = Arc(4);
  const std::vector<uint64_t> requests = {1, 2, 3, 4, 1, 5, 2,  6,  7, 4,
                                          5, 1, 8, 6, 2, 9, 10, 11, 3};
  auto r = ReplayBlocks(*p, 4, requests);
  EXPECT_EQ(r.victims, (std::vector<uint64_t>{2, 3, 4, 5, 1, 2, 6, 4, 5, 1, 6, 2, 7, 8}));
  EXPECT_EQ(r.hits, HitsAt(requests.size(), {4}));
  EXPECT_EQ(p->size(), 4u);
}

// Hits move keys to T2, which ARC protects while p is small.
// c = 3.
//  1 2 3         T1: 1 2 3
//  1 2 hit       T1: 3         T2: 1 2
//  4: IV-B, REPLACE: |T1|=1 > p=0, so 3 goes to B1        T1: 4  T2: 1 2  B1: 3
//  5: IV-B (|L1|=2), REPLACE: |T1|=1 > 0, 4 goes          T1: 5  T2: 1 2  B1: 3 4
//  6: IV-A (|L1|=3=c, |T1|=1): delete B1's LRU (3); REPLACE: 5 goes
//                                                        T1: 6  T2: 1 2  B1: 4 5
//  1 hit         T2: 2 1
TEST(ArcPolicyTest, FrequentKeysSurviveAScan) {
  auto p = Arc(3);
  auto r = ReplayBlocks(*p, 3, {1, 2, 3, 1, 2, 4, 5, 6, 1});
  EXPECT_EQ(r.victims, (std::vector<uint64_t>{3, 4, 5}));
  EXPECT_EQ(r.hits, HitsAt(9, {3, 4, 8}));
}

// A ghost hit for which no Victims call came (the tier had room after an
// Erase) adapts p in Insert, once.
TEST(ArcPolicyTest, GhostHitWithRoomAdaptsInInsert) {
  auto p = Arc(4);
  for (uint64_t i = 1; i <= 4; ++i) p->Insert(K(i), PolicyBlock{});
  for (uint64_t i = 2; i <= 4; ++i) p->Touch(K(i));  // T1: 1  T2: 2 3 4
  const BlockKey k5 = K(5);
  // New key 5: REPLACE with |T1|=1 > p=0 takes 1 to B1.
  EXPECT_EQ(Evict(*p, 1, &k5), (std::vector<uint64_t>{1}));
  p->Insert(k5, PolicyBlock{});    // T1: 5  T2: 2 3 4  B1: 1
  p->Erase(K(2));                  // room: T2: 3 4, and no ghost for 2
  p->Insert(K(1), PolicyBlock{});  // case II without REPLACE: p = 1; T2: 3 4 1
  // New key 6: |T1|=1 is not > p=1, so T2's LRU goes. (Unadapted, p=0 would take 5.)
  const BlockKey k6 = K(6);
  EXPECT_EQ(Evict(*p, 1, &k6), (std::vector<uint64_t>{3}));
  EXPECT_EQ(p->size(), 3u);
}

// Erase forgets a resident key without a ghost; unknown keys are ignored.
TEST(ArcPolicyTest, EraseLeavesNoGhost) {
  auto p = Arc(2);
  p->Insert(K(1), PolicyBlock{});
  p->Insert(K(2), PolicyBlock{});
  p->Erase(K(1));
  p->Erase(K(99));
  p->Touch(K(99));
  EXPECT_EQ(p->size(), 1u);
  p->Insert(K(3), PolicyBlock{});  // T1: 2 3
  // 1 is new, not a B1 ghost: IV-A with |T1| = c drops T1's LRU without a ghost.
  const BlockKey k1 = K(1);
  EXPECT_EQ(Evict(*p, 1, &k1), (std::vector<uint64_t>{2}));
  p->Insert(k1, PolicyBlock{});  // T1: 3 1
  // 1 went to T1 as a new key, so this is IV-A again and 3 goes.
  const BlockKey k4 = K(4);
  EXPECT_EQ(Evict(*p, 1, &k4), (std::vector<uint64_t>{3}));
  p->Erase(K(1));
  EXPECT_EQ(p->size(), 0u);
  EXPECT_EQ(Evict(*p, 3), (std::vector<uint64_t>{}));
}

TEST(ArcPolicyTest, EmptyHasNoVictims) {
  auto p = Arc(4);
  EXPECT_EQ(Evict(*p, 1), (std::vector<uint64_t>{}));
  EXPECT_EQ(p->size(), 0u);
}

// Refused blocks keep their place and are taken once allowed; a list with
// nothing eligible yields to the other one.
TEST(ArcPolicyTest, SkipsIneligibleBlocksAndKeepsThem) {
  auto p = Arc(4);
  for (uint64_t i = 1; i <= 4; ++i) p->Insert(K(i), PolicyBlock{});  // T1: 1 2 3 4
  auto not_1_or_2 = [](const BlockKey& k) { return k.lo != 1 && k.lo != 2; };
  EXPECT_EQ(Evict(*p, 2, nullptr, not_1_or_2), (std::vector<uint64_t>{3, 4}));
  EXPECT_EQ(Evict(*p, 1, nullptr, [](const BlockKey&) { return false; }),
            (std::vector<uint64_t>{}));
  EXPECT_EQ(p->size(), 2u);
  EXPECT_EQ(Evict(*p, 5), (std::vector<uint64_t>{1, 2}));  // still LRU first

  auto q = Arc(4);
  q->Insert(K(1), PolicyBlock{});
  q->Insert(K(2), PolicyBlock{});
  q->Touch(K(2));  // T1: 1  T2: 2
  // REPLACE picks T1 (|T1|=1 > p=0), whose only block is refused: T2 gives one.
  EXPECT_EQ(Evict(*q, 1, nullptr, [](const BlockKey& k) { return k.lo != 1; }),
            (std::vector<uint64_t>{2}));
  EXPECT_EQ(Evict(*q, 1), (std::vector<uint64_t>{1}));
}

// Sizes, targets and deltas all scale with the bytes: blocks of 16 bytes in
// a 64-byte tier behave as the one-byte trace above.
TEST(ArcPolicyTest, UniformBlockSizeScalesTheUnitTrace) {
  auto p = Arc(64);
  const std::vector<uint64_t> requests = {1, 2, 3, 4, 1, 5, 2,  6,  7, 4,
                                          5, 1, 8, 6, 2, 9, 10, 11, 3};
  EXPECT_EQ(ReplayScaled(*p, 4, 16, requests),
            (std::vector<uint64_t>{2, 3, 4, 5, 1, 2, 6, 4, 5, 1, 6, 2, 7, 8}));
}

TEST(ArcPolicyTest, MixedSizesStayWithinCapacity) {
  auto p = Arc(400);
  ReplayMixedSizes(*p, 400, 0, 42);
  auto u = Arc(0);  // unbounded
  ReplayMixedSizes(*u, 0, 300, 42);
}

TEST(ArcPolicyTest, FactoryName) {
  auto p = Arc(8);
  EXPECT_EQ(p->Name(), "arc");
}

}  // namespace
}  // namespace kvtier
