// GDSF and ttl-cost. Priorities are H = L + freq * miss_cost / bytes; costs
// and sizes are picked so every H below is exact in binary floating point.
#include <gtest/gtest.h>

#include <functional>
#include <limits>

#include "cache/eviction_policy.h"
#include "tests/cache/policies/policy_test_util.h"

namespace kvtier {
namespace {

using policy_test::K;
using policy_test::ReplayBlocks;

PolicyBlock Block(uint64_t bytes, double miss_cost, int64_t expiry_ms = kNoExpiry) {
  PolicyBlock b;
  b.bytes = bytes;
  b.miss_cost = miss_cost;
  b.expiry_ms = expiry_ms;
  return b;
}

// Asks for `n` victims at `now_ms` and returns them by key number.
std::vector<uint64_t> Take(EvictionPolicy& p, size_t n, int64_t now_ms = 0,
                           std::function<bool(const BlockKey&)> eligible = nullptr) {
  return policy_test::Evict(p, n, nullptr, std::move(eligible), now_ms);
}

auto Not(uint64_t refused) {
  return [refused](const BlockKey& k) { return k.lo != refused; };
}

// ---------------------------------------------------------------- gdsf

TEST(GdsfPolicyTest, BigCheapBlockGoesBeforeSmallExpensive) {
  auto p = NewGdsfPolicy();
  p->Insert(K(1), Block(1, 4.0));                            // H = 0 + 1*4/1 = 4
  p->Insert(K(2), Block(4, 4.0));                            // H = 0 + 1*4/4 = 1
  p->Insert(K(3), Block(8, 2.0));                            // H = 0 + 1*2/8 = 0.25
  EXPECT_EQ(Take(*p, 3), (std::vector<uint64_t>{3, 2, 1}));  // L: 0.25, 1, 4
}

TEST(GdsfPolicyTest, FrequencyMatters) {
  auto p = NewGdsfPolicy();
  p->Insert(K(1), Block(2, 2.0));   // H1 = 1*2/2 = 1
  p->Insert(K(2), Block(1, 1.5));   // H2 = 1.5
  p->Touch(K(1));                   // H1 = 0 + 2*2/2 = 2
  p->Insert(K(3), Block(1, 1.75));  // H3 = 1.75
  // Order: 2 (1.5), 3 (1.75), 1 (2). Without the hit 1 would have gone first.
  EXPECT_EQ(Take(*p, 3), (std::vector<uint64_t>{2, 3, 1}));
}

TEST(GdsfPolicyTest, ReplayWithUnitBlocks) {
  // Capacity 2, bytes 1 and cost 1: H = L + freq. State: key:H(seq), L.
  //   1 miss            1:1(0)                  L=0
  //   1 hit             1:2(0)                  L=0
  //   2 miss            1:2(0) 2:1(1)           L=0
  //   3 miss, evict 2   1:2(0) 3:2(2)           L=1   (3: 1+1)
  //   4 miss, evict 1   3:2(2) 4:3(3)           L=2   (tie 1 vs 3 at H=2: older seq 0)
  //   3 hit             3:4(2) 4:3(3)           L=2   (3: L 2 + freq 2)
  //   5 miss, evict 4   3:4(2) 5:4(4)           L=3   (5: 3+1)
  //   6 miss, evict 3   5:4(4) 6:5(5)           L=4   (tie at H=4: older seq 2)
  //   5 hit             5:6(4) 6:5(5)           L=4
  //   7 miss, evict 6   5:6(4) 7:6(6)           L=5
  const std::vector<uint64_t> requests = {1, 1, 2, 3, 4, 3, 5, 6, 5, 7};
  auto p = NewGdsfPolicy();
  const auto r = ReplayBlocks(*p, 2, requests);
  EXPECT_EQ(r.victims, (std::vector<uint64_t>{2, 1, 4, 3, 6}));
  EXPECT_EQ(Take(*p, 2), (std::vector<uint64_t>{5, 7}));  // tie at 6: seq 4 first

  // With no block ever expiring, ttl-cost is exactly gdsf.
  auto t = NewTtlCostPolicy();
  EXPECT_EQ(ReplayBlocks(*t, 2, requests).victims, r.victims);
}

TEST(GdsfPolicyTest, InflationAgesOutAnOldValuableBlock) {
  auto p = NewGdsfPolicy();
  p->Insert(K(100), Block(1, 10.0));                   // V: H = 10
  p->Insert(K(1), Block(1, 4.0));                      // H = 0 + 4 = 4
  EXPECT_EQ(Take(*p, 1), (std::vector<uint64_t>{1}));  // L = 4
  p->Insert(K(2), Block(1, 4.0));                      // H = 4 + 4 = 8
  EXPECT_EQ(Take(*p, 1), (std::vector<uint64_t>{2}));  // 8 < 10; L = 8
  p->Insert(K(3), Block(1, 4.0));                      // H = 8 + 4 = 12
  // The same kind of block that lost to V twice now outranks it.
  EXPECT_EQ(Take(*p, 1), (std::vector<uint64_t>{100}));  // 10 < 12; L = 10
  p->Insert(K(4), Block(1, 1.0));                        // H = 10 + 1 = 11
  EXPECT_EQ(Take(*p, 2), (std::vector<uint64_t>{4, 3}));
}

TEST(GdsfPolicyTest, TouchRecomputesWithTheCurrentL) {
  auto p = NewGdsfPolicy();
  p->Insert(K(1), Block(1, 1.0));                      // H = 1
  p->Insert(K(2), Block(1, 2.0));                      // H = 2
  p->Insert(K(3), Block(1, 8.0));                      // H = 8
  EXPECT_EQ(Take(*p, 1), (std::vector<uint64_t>{1}));  // L = 1
  p->Touch(K(2));                                      // H = 1 + 2*2 = 5 (with L 0 it would be 4)
  p->Insert(K(4), Block(1, 3.5));                      // H = 1 + 3.5 = 4.5
  EXPECT_EQ(Take(*p, 3), (std::vector<uint64_t>{4, 2, 3}));
}

TEST(GdsfPolicyTest, ReInsertIsAHitThatTakesTheNewCost) {
  auto p = NewGdsfPolicy();
  p->Insert(K(1), Block(1, 1.0));  // H1 = 1      (seq 0)
  p->Insert(K(2), Block(1, 3.0));  // H2 = 3      (seq 1)
  p->Insert(K(1), Block(1, 2.0));  // H1 = 0 + 2*2/1 = 4, keeps seq 0
  EXPECT_EQ(p->size(), 2u);
  EXPECT_EQ(Take(*p, 1), (std::vector<uint64_t>{2}));     // L = 3
  p->Insert(K(3), Block(1, 1.0));                         // H3 = 3 + 1 = 4 (seq 2)
  EXPECT_EQ(Take(*p, 2), (std::vector<uint64_t>{1, 3}));  // tie at 4: older seq first
  // A re-insert also takes a new size (L is 4 now).
  p->Insert(K(5), Block(1, 4.0));   // L = 4: H5 = 8
  p->Insert(K(6), Block(1, 1.0));   // H6 = 5
  p->Insert(K(5), Block(16, 4.0));  // H5 = 4 + 2*4/16 = 4.5
  EXPECT_EQ(Take(*p, 2), (std::vector<uint64_t>{5, 6}));
}

TEST(GdsfPolicyTest, EraseAndUnknownKeys) {
  auto p = NewGdsfPolicy();
  p->Insert(K(1), Block(1, 1.0));  // H = 1
  p->Insert(K(2), Block(1, 3.0));  // H = 3
  p->Erase(K(1));                  // present; L stays 0
  p->Erase(K(9));                  // absent: ignored
  p->Touch(K(9));                  // absent: ignored
  EXPECT_EQ(p->size(), 1u);
  // Had Erase raised L to 1, 3 would be at 3 and tie with 2 (older): 2 first.
  p->Insert(K(3), Block(1, 2.0));  // H = 0 + 2 = 2
  EXPECT_EQ(Take(*p, 5), (std::vector<uint64_t>{3, 2}));
  std::vector<BlockKey> out = {K(42)};
  EXPECT_EQ(p->Victims(VictimQuery{}, &out), 0u);
  EXPECT_EQ(out, (std::vector<BlockKey>{K(42)}));
  EXPECT_EQ(p->size(), 0u);
}

TEST(GdsfPolicyTest, SkipsIneligibleBlocksAndKeepsTheirState) {
  auto p = NewGdsfPolicy();
  p->Insert(K(1), Block(1, 1.0));                                 // H = 1
  p->Insert(K(2), Block(1, 2.0));                                 // H = 2
  p->Insert(K(3), Block(1, 3.0));                                 // H = 3
  EXPECT_EQ(Take(*p, 1, 0, Not(1)), (std::vector<uint64_t>{2}));  // L = 2
  EXPECT_EQ(Take(*p, 5, 0, Not(1)), (std::vector<uint64_t>{3}));  // fewer; L = 3
  EXPECT_EQ(Take(*p, 5, 0, Not(1)), std::vector<uint64_t>{});     // none eligible
  p->Insert(K(4), Block(1, 0.5));                                 // H = 3.5
  EXPECT_EQ(Take(*p, 1), (std::vector<uint64_t>{1}));  // still H 1; L stays max(3, 1) = 3
  p->Insert(K(5), Block(1, 1.0));                      // H = 3 + 1 = 4 (with L 1: 2)
  EXPECT_EQ(Take(*p, 2), (std::vector<uint64_t>{4, 5}));
}

TEST(GdsfPolicyTest, Names) {
  EXPECT_EQ(NewGdsfPolicy()->Name(), "gdsf");
  EXPECT_EQ(NewTtlCostPolicy()->Name(), "ttl-cost");
}

// ------------------------------------------------------------ ttl-cost

TEST(TtlCostPolicyTest, ExpiredGoFirstEarliestExpiryFirst) {
  auto p = NewTtlCostPolicy();
  p->Insert(K(1), Block(1, 10.0, 90));  // H = 10, expired at 100
  p->Insert(K(2), Block(1, 20.0, 80));  // H = 20, expired at 100
  p->Insert(K(3), Block(1, 1.0));       // H = 1, never expires
  p->Insert(K(4), Block(1, 2.0, 500));  // H = 2, live at 100
  p->Insert(K(5), Block(1, 30.0, 80));  // H = 30, expired, same expiry as 2, inserted later
  // Expired by expiry (80: 2 then 5; 90: 1), then gdsf: 3 (1), 4 (2).
  EXPECT_EQ(Take(*p, 5, 100), (std::vector<uint64_t>{2, 5, 1, 3, 4}));
}

TEST(TtlCostPolicyTest, NowMattersAndExpiryAtNowIsExpired) {
  auto p = NewTtlCostPolicy();
  p->Insert(K(1), Block(1, 1.0, 200));                      // H = 1
  p->Insert(K(2), Block(1, 5.0, 100));                      // H = 5
  p->Insert(K(3), Block(1, 3.0));                           // H = 3
  EXPECT_EQ(Take(*p, 1, 50), (std::vector<uint64_t>{1}));   // nothing expired: gdsf; L = 1
  EXPECT_EQ(Take(*p, 1, 99), (std::vector<uint64_t>{3}));   // still none: 3 < 5; L = 3
  p->Insert(K(4), Block(1, 1.0));                           // H = 3 + 1 = 4
  EXPECT_EQ(Take(*p, 1, 100), (std::vector<uint64_t>{2}));  // 100 <= 100: expired, H 5 no help
  EXPECT_EQ(Take(*p, 1, 100), (std::vector<uint64_t>{4}));
}

TEST(TtlCostPolicyTest, ExpiredPicksDoNotRaiseL) {
  auto p = NewTtlCostPolicy();
  p->Insert(K(1), Block(1, 10.0, 50));                      // H = 10, expired at 100
  p->Insert(K(2), Block(1, 1.0));                           // H = 1
  p->Insert(K(3), Block(1, 3.0));                           // H = 3
  EXPECT_EQ(Take(*p, 1, 100), (std::vector<uint64_t>{1}));  // expired; L stays 0
  p->Insert(K(4), Block(1, 2.0));  // H = 0 + 2 = 2 (with L 10 it would be 12 and go last)
  EXPECT_EQ(Take(*p, 3, 100), (std::vector<uint64_t>{2, 4, 3}));
}

TEST(TtlCostPolicyTest, RefreshByReInsertSavesABlock) {
  auto p = NewTtlCostPolicy();
  p->Insert(K(1), Block(1, 1.0, 100));  // H = 1
  p->Insert(K(2), Block(1, 5.0, 100));  // H = 5
  p->Insert(K(3), Block(1, 3.0));       // H = 3
  p->Insert(K(1), Block(1, 1.0, 300));  // refresh, a hit: H = 0 + 2*1 = 2, expiry 300
  // At 150: 2 expired goes first; 1 is live again and cheapest among the live.
  EXPECT_EQ(Take(*p, 2, 150), (std::vector<uint64_t>{2, 1}));  // L: 0, then 2
  // A refresh to kNoExpiry also takes it out of the expired order.
  p->Insert(K(4), Block(1, 4.0, 200));  // H = 2 + 4 = 6
  p->Insert(K(4), Block(1, 4.0));       // H = 2 + 2*4 = 10, never expires
  EXPECT_EQ(Take(*p, 1, 1000), (std::vector<uint64_t>{3}));
  EXPECT_EQ(Take(*p, 1, 1000), (std::vector<uint64_t>{4}));
}

TEST(TtlCostPolicyTest, NoExpiryNeverCountsAsExpired) {
  auto p = NewTtlCostPolicy();
  p->Insert(K(1), Block(1, 5.0));  // H = 5, kNoExpiry, seq 0
  p->Insert(K(2), Block(1, 1.0));  // H = 1, kNoExpiry, seq 1
  // Even at the end of time both are live, so gdsf order (not 1 by seq).
  EXPECT_EQ(Take(*p, 2, std::numeric_limits<int64_t>::max()), (std::vector<uint64_t>{2, 1}));
}

TEST(TtlCostPolicyTest, SkipsIneligibleBlocksAndKeepsThem) {
  auto p = NewTtlCostPolicy();
  p->Insert(K(1), Block(1, 1.0, 10));  // H = 1, expired at 100
  p->Insert(K(2), Block(1, 1.0, 20));  // H = 1, expired at 100
  p->Insert(K(3), Block(1, 2.0));      // H = 2
  p->Insert(K(4), Block(1, 4.0));      // H = 4
  // 1 refused in both orders: expired 2, then gdsf 3 (L = 2).
  EXPECT_EQ(Take(*p, 2, 100, Not(1)), (std::vector<uint64_t>{2, 3}));
  EXPECT_EQ(Take(*p, 5, 100, Not(1)), (std::vector<uint64_t>{4}));  // fewer than asked
  EXPECT_EQ(p->size(), 1u);
  // 1 is still there and still expired: it goes before a cheap live block.
  p->Insert(K(5), Block(1, 0.5));  // H = 4 + 0.5
  EXPECT_EQ(Take(*p, 1, 100), (std::vector<uint64_t>{1}));
  EXPECT_EQ(Take(*p, 1, 100), (std::vector<uint64_t>{5}));
}

TEST(TtlCostPolicyTest, EraseAndUnknownKeys) {
  auto p = NewTtlCostPolicy();
  p->Insert(K(1), Block(1, 9.0, 10));  // expired at 100
  p->Insert(K(2), Block(1, 1.0));
  p->Insert(K(3), Block(1, 2.0, 20));  // expired at 100
  p->Erase(K(1));                      // present: leaves both orders
  p->Erase(K(9));                      // absent: ignored
  p->Touch(K(9));                      // absent: ignored
  EXPECT_EQ(p->size(), 2u);
  EXPECT_EQ(Take(*p, 5, 100), (std::vector<uint64_t>{3, 2}));
  std::vector<BlockKey> out = {K(42)};
  VictimQuery q;
  q.n = 3;
  q.now_ms = 100;
  EXPECT_EQ(p->Victims(q, &out), 0u);
  EXPECT_EQ(out, (std::vector<BlockKey>{K(42)}));
}

}  // namespace
}  // namespace kvtier
