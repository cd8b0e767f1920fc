// LIRS against sequences worked by hand from Jiang & Zhang, SIGMETRICS'02
// (one-byte blocks, so the byte-sized policy is the published one).
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
using policy_test::Take;

std::unique_ptr<EvictionPolicy> Lirs(uint64_t capacity) {
  return NewLirsPolicy(PolicyOptions{capacity});
}

// Three blocks: L_hirs = max(1, 3/100) = 1, L_lirs = 2. S is written top
// first, g marks a ghost (non-resident HIR block); Q front last.
//  1 2     LIR set not full: LIR.                 S 2 1
//  3       LIR set full: resident HIR.            S 3 2 1, Q 3
//  4       evict Q's front 3 (a ghost in S);
//          4 HIR.                                 S 4 3g 2 1, Q 4        3
//  3       evict 4 (ghost); 3 was a ghost in S:
//          LIR; bottom LIR 1 to Q, leaves S.      S 3 4g 2, Q 1          4
//  1 hit   HIR not in S: to the top of S, end of Q.  S 1 3 4g 2, Q 1
//  2 hit   LIR at the bottom: to the top; pruning drops 4g.  S 2 1 3
//  1 hit   HIR in S: LIR; bottom LIR 3 to Q.      S 1 2, Q 3
//  5       evict 3 (not in S: forgotten); 5 HIR.  S 5 1 2, Q 5           3
//  3       a new block again: evict 5 (ghost);
//          3 HIR.                                 S 3 5g 1 2, Q 3        5
//  5       evict 3 (ghost); 5 a ghost: LIR; bottom
//          LIR 2 to Q.                            S 5 3g 1, Q 2          3
//  2 hit   HIR not in S.                          S 2 5 3g 1, Q 2
//  3       evict 2 (ghost); 3 a ghost: LIR; bottom
//          LIR 1 to Q.                            S 3 2g 5, Q 1          2
TEST(LirsPolicyTest, HandWorkedSequence) {
  auto p = Lirs(3);
  const std::vector<uint64_t> requests = {1, 2, 3, 4, 3, 1, 2, 1, 5, 3, 5, 2, 3};
  auto r = ReplayBlocks(*p, 3, requests);
  EXPECT_EQ(r.victims, (std::vector<uint64_t>{3, 4, 3, 5, 3, 2}));
  EXPECT_EQ(r.hits, HitsAt(requests.size(), {5, 6, 7, 11}));
  EXPECT_EQ(p->size(), 3u);
  // Q holds 1 alone: it goes first, then the LIR blocks from the bottom of S.
  EXPECT_EQ(Take(*p, 3), (std::vector<uint64_t>{1, 5, 3}));
}

// The paper's example (its Table 1 and the figure after it), A..E = 1..5,
// three blocks (L_lirs 2, L_hirs 1). At time 10: LIR = {A, B}, E the only
// resident HIR block, D a non-resident HIR block still in S, recency order
// E A D B. It is reached here by B A D A E:
//  B A     LIR.                         S A B (top first)
//  D       HIR, Q D.                    S D A B
//  A hit   LIR, to the top.             S A D B
//  E       evict D (a ghost in S); E HIR.  S E A Dg B, Q E        D
// Then the paper's two cases:
//  D       evict E (a ghost); D was in S: LIR; the bottom LIR block B
//          becomes HIR and goes to Q.   S D Eg A, Q B             E
//  C       evict E; C was not in S: resident HIR, at the top of S and
//          the end of Q; LIR stays {A, B}.  S C Eg A Dg B, Q C    E
TEST(LirsPolicyTest, PapersExampleAtTimeTen) {
  {
    auto p = Lirs(3);
    auto r = ReplayBlocks(*p, 3, {2, 1, 4, 1, 5, 4});
    EXPECT_EQ(r.victims, (std::vector<uint64_t>{4, 5}));
    EXPECT_EQ(r.hits, HitsAt(6, {3}));
    EXPECT_EQ(Take(*p, 1), (std::vector<uint64_t>{2}));     // B, now Q's front
    EXPECT_EQ(Take(*p, 2), (std::vector<uint64_t>{1, 4}));  // LIR: A at S's bottom, then D
  }
  {
    auto p = Lirs(3);
    auto r = ReplayBlocks(*p, 3, {2, 1, 4, 1, 5, 3});
    EXPECT_EQ(r.victims, (std::vector<uint64_t>{4, 5}));
    EXPECT_EQ(Take(*p, 1), (std::vector<uint64_t>{3}));     // C, the only resident HIR block
    EXPECT_EQ(Take(*p, 2), (std::vector<uint64_t>{2, 1}));  // LIR: B at S's bottom, then A
  }
}

// LIRS's point: blocks reused at short distances hold their LIR status
// through a scan of blocks used once, which only cycles through Q. LRU
// would lose every one of them.
TEST(LirsPolicyTest, ScanDoesNotFlushLirBlocks) {
  auto p = Lirs(100);  // L_hirs 1, L_lirs 99
  std::vector<uint64_t> requests;
  for (int round = 0; round < 2; ++round) {
    for (uint64_t i = 1; i <= 99; ++i) requests.push_back(i);
  }
  for (uint64_t i = 1000; i < 3000; ++i) requests.push_back(i);
  for (uint64_t i = 1; i <= 99; ++i) requests.push_back(i);
  auto r = ReplayBlocks(*p, 100, requests);
  size_t last_hits = 0;
  for (size_t i = requests.size() - 99; i < requests.size(); ++i) last_hits += r.hits[i];
  EXPECT_EQ(last_hits, 99u);
  auto lru = NewLruPolicy();
  auto l = ReplayBlocks(*lru, 100, requests);
  EXPECT_FALSE(l.hits.back());
}

// S weighs at most twice the capacity: after a scan, only the latest ghosts
// are remembered. Ten blocks: 1..9 LIR, then 100..199 each evict the one
// before, which stays a ghost; S keeps 9 LIR + 1 resident HIR + 10 ghosts
// (189..198).
TEST(LirsPolicyTest, GhostsAreBoundedToTwiceTheCapacity) {
  for (const bool remembered : {true, false}) {
    SCOPED_TRACE(remembered);
    auto p = Lirs(10);
    std::vector<uint64_t> requests;
    for (uint64_t i = 1; i <= 9; ++i) requests.push_back(i);
    for (uint64_t i = 100; i < 200; ++i) requests.push_back(i);
    // 195, a ghost still, turns LIR and demotes the bottom LIR block 1,
    // the next victim; 150 was forgotten and comes back as HIR, the next
    // victim itself.
    requests.push_back(remembered ? 195 : 150);
    requests.push_back(500);
    auto r = ReplayBlocks(*p, 10, requests);
    ASSERT_GE(r.victims.size(), 2u);
    EXPECT_EQ(r.victims[r.victims.size() - 2], 199u);
    EXPECT_EQ(r.victims.back(), remembered ? 1u : 150u);
  }
}

// Erase forgets a block for good (no ghost); unknown keys are ignored.
TEST(LirsPolicyTest, EraseForgets) {
  auto p = Lirs(3);
  for (uint64_t i = 1; i <= 3; ++i) p->Insert(K(i), PolicyBlock{});  // 1 2 LIR, 3 HIR
  p->Erase(K(3));
  p->Erase(K(42));
  p->Touch(K(42));
  EXPECT_EQ(p->size(), 2u);
  // 3 comes back as a new block: the LIR set is full, so HIR, first victim.
  p->Insert(K(3), PolicyBlock{});
  EXPECT_EQ(Take(*p, 1), (std::vector<uint64_t>{3}));
  // Q is empty: LIR blocks from the bottom of S.
  EXPECT_EQ(Take(*p, 5), (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(p->size(), 0u);
}

// Refused blocks keep their place: Q's front refused, the next one goes;
// with Q all refused, LIR blocks are taken.
TEST(LirsPolicyTest, SkipsIneligibleBlocks) {
  auto p = Lirs(100);                                                  // L_lirs 99
  for (uint64_t i = 1; i <= 101; ++i) p->Insert(K(i), PolicyBlock{});  // 100, 101 HIR in Q
  EXPECT_EQ(Take(*p, 1, [](const BlockKey& k) { return k.lo != 100; }),
            (std::vector<uint64_t>{101}));
  EXPECT_EQ(Take(*p, 2, [](const BlockKey& k) { return k.lo != 100; }),
            (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(Take(*p, 1), (std::vector<uint64_t>{100}));
}

TEST(LirsPolicyTest, MixedSizesNeverOverflow) {
  auto p = Lirs(400);
  ReplayMixedSizes(*p, 400, 0, 11);
  auto u = Lirs(0);
  ReplayMixedSizes(*u, 0, 300, 11);
}

TEST(LirsPolicyTest, FactoryName) {
  EXPECT_EQ(Lirs(10)->Name(), "lirs");
  EXPECT_EQ(NewEvictionPolicy("lirs", PolicyOptions{10})->Name(), "lirs");
}

}  // namespace
}  // namespace kvtier
