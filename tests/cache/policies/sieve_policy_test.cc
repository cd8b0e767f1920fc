// SIEVE against hand traces of Zhang et al., NSDI'24: one FIFO queue, visited
// bits, and a hand that moves from the tail towards the head and stays put.
#include <gtest/gtest.h>

#include <functional>
#include <vector>

#include "cache/eviction_policy.h"
#include "tests/cache/policies/policy_test_util.h"

namespace kvtier {
namespace {

using policy_test::HitsAt;
using policy_test::K;
using policy_test::ReplayBlocks;
using policy_test::Take;

// Five objects. The queue is written tail..head; * marks a visited object
// and ^ the object under the hand.
//  1..5       1 2 3 4 5                      (the hand has no position)
//  1 2 4 hit  1* 2* 3 4* 5
//  6          from the tail: 1* and 2* are cleared, 3 is evicted;
//             the hand stays on 3's neighbour towards the head:
//             1 2 4*^ 5 6                                                 3
//  7          4* is cleared, 5 is evicted. 1 and 2, unvisited now, lie
//             behind the hand and stay: 1 2 4 6^ 7                        5
//  1 hit      1* 2 4 6^ 7
//  8          6 evicted: 1* 2 4 7^ 8                                      6
//  9          7 evicted: 1* 2 4 8^ 9                                      7
//  10         8 evicted: 1* 2 4 9^ 10                                     8
//  9 10 hit   1* 2 4 9*^ 10*
//  11         9* and 10* cleared; past the head the hand wraps to the
//             tail: 1* cleared, 2 evicted: 1 4^ 9 10 11                   2
//  12         4 evicted: 1 9^ 10 11 12                                    4
//  9 10 11 hit  1 9*^ 10* 11* 12
//  13         9*, 10*, 11* cleared, 12 (the head) evicted; the hand has
//             no position again: 1 9 10 11 13                             12
//  14         from the tail: 1 evicted: 9^ 10 11 13 14                    1
TEST(SievePolicyTest, HandKeepsItsPlaceAndClearsBits) {
  auto p = NewSievePolicy();
  const std::vector<uint64_t> requests = {1, 2,  3, 4,  5,  1,  2, 4,  6,  7,  1, 8,
                                          9, 10, 9, 10, 11, 12, 9, 10, 11, 13, 14};
  auto r = ReplayBlocks(*p, 5, requests);
  EXPECT_EQ(r.victims, (std::vector<uint64_t>{3, 5, 6, 7, 8, 2, 4, 12, 1}));
  EXPECT_EQ(r.hits, HitsAt(requests.size(), {5, 6, 7, 10, 14, 15, 18, 19, 20}));
  EXPECT_EQ(p->size(), 5u);
}

// Re-inserting a present key is a hit: it sets the visited bit.
//  1 2 3; Insert 1 again: 1* 2 3. Evicting: 1* cleared, 2 evicted.
TEST(SievePolicyTest, InsertOfPresentKeyIsATouch) {
  auto p = NewSievePolicy();
  for (uint64_t i = 1; i <= 3; ++i) p->Insert(K(i), PolicyBlock{});
  p->Insert(K(1), PolicyBlock{});
  EXPECT_EQ(p->size(), 3u);
  EXPECT_EQ(Take(*p, 1), (std::vector<uint64_t>{2}));
  EXPECT_EQ(Take(*p, 2), (std::vector<uint64_t>{3, 1}));
}

// Erasing the object under the hand moves the hand on towards the head, as
// an eviction does; unknown keys are ignored.
//  1* 2* 3 4 5: evict 3 (1, 2 cleared), hand on 4: 1 2 4^ 5
//  Erase 4: the hand moves to 5: 1 2 5^
//  evict: 5 (from the tail it would have been 1)
TEST(SievePolicyTest, EraseUnderTheHand) {
  auto p = NewSievePolicy();
  for (uint64_t i = 1; i <= 5; ++i) p->Insert(K(i), PolicyBlock{});
  p->Touch(K(1));
  p->Touch(K(2));
  EXPECT_EQ(Take(*p, 1), (std::vector<uint64_t>{3}));
  p->Erase(K(4));
  p->Erase(K(99));
  p->Touch(K(99));
  EXPECT_EQ(p->size(), 3u);
  EXPECT_EQ(Take(*p, 1), (std::vector<uint64_t>{5}));
  // 5 was the head: the hand starts at the tail again.
  EXPECT_EQ(Take(*p, 2), (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(Take(*p, 1), (std::vector<uint64_t>{}));
}

TEST(SievePolicyTest, EmptyHasNoVictims) {
  auto p = NewSievePolicy();
  EXPECT_EQ(Take(*p, 1), (std::vector<uint64_t>{}));
  EXPECT_EQ(p->size(), 0u);
}

// Refused objects are stepped over with their bit as it was.
//  1* 2* 3*. Refusing 2: 1* cleared, 2 stepped over (still visited), 3*
//  cleared, wrap: 1 evicted; the hand is on 2: 2*^ 3
//  Then: 2* cleared, 3 evicted (had 2's bit been cleared, 2 would go).
TEST(SievePolicyTest, SkipsIneligibleBlocksAndKeepsThem) {
  auto p = NewSievePolicy();
  for (uint64_t i = 1; i <= 3; ++i) p->Insert(K(i), PolicyBlock{});
  for (uint64_t i = 1; i <= 3; ++i) p->Touch(K(i));
  EXPECT_EQ(Take(*p, 1, [](const BlockKey& k) { return k.lo != 2; }), (std::vector<uint64_t>{1}));
  EXPECT_EQ(Take(*p, 1), (std::vector<uint64_t>{3}));
  EXPECT_EQ(Take(*p, 1), (std::vector<uint64_t>{2}));
}

// With nothing eligible the call returns early and changes nothing: no bit
// is cleared and the hand does not move.
//  1* 2 3: a call refusing everything, then 1* cleared and 2 evicted.
TEST(SievePolicyTest, NothingEligibleChangesNothing) {
  auto p = NewSievePolicy();
  for (uint64_t i = 1; i <= 3; ++i) p->Insert(K(i), PolicyBlock{});
  p->Touch(K(1));
  EXPECT_EQ(Take(*p, 2, [](const BlockKey&) { return false; }), (std::vector<uint64_t>{}));
  EXPECT_EQ(p->size(), 3u);
  EXPECT_EQ(Take(*p, 1), (std::vector<uint64_t>{2}));
  // Only 1 is eligible and it is visited: its bit is cleared on one lap and
  // it is taken on the next.  Queue: 1* 3^ after a touch.
  p->Touch(K(1));
  EXPECT_EQ(Take(*p, 3, [](const BlockKey& k) { return k.lo == 1; }), (std::vector<uint64_t>{1}));
  EXPECT_EQ(Take(*p, 3), (std::vector<uint64_t>{3}));
}

TEST(SievePolicyTest, FactoryName) {
  auto p = NewSievePolicy();
  EXPECT_EQ(p->Name(), "sieve");
}

}  // namespace
}  // namespace kvtier
