// lhd: least hit density among sampled leaves, learned by class and age.
#include <gtest/gtest.h>

#include <algorithm>
#include <optional>
#include <set>
#include <vector>

#include "cache/eviction_policy.h"
#include "tests/cache/policies/policy_test_util.h"

namespace kvtier {
namespace {

using policy_test::K;
using policy_test::Take;

PolicyBlock Child(uint64_t parent) {
  PolicyBlock b;
  b.parent = K(parent);
  return b;
}

constexpr uint64_t kReused = 1000;   // keys kReused + i: hit over and over
constexpr uint64_t kOneShot = 2000;  // keys kOneShot + i: never hit

// Trains `p` on a stream where four blocks are hit every few references and
// a new block arrives at each step and leaves unused four steps later, for
// more than one recomputation interval (4096 references).
void Train(EvictionPolicy& p) {
  for (uint64_t i = 0; i < 4; ++i) p.Insert(K(kReused + i), PolicyBlock{});
  for (uint64_t i = 0; i < 3000; ++i) {
    p.Insert(K(kOneShot + i), PolicyBlock{});
    p.Touch(K(kReused + i % 4));
    if (i >= 4) p.Erase(K(kOneShot + i - 4));
  }
}

// LRU would take the reused block touched longest ago; LHD has learned that
// the one-shot class is never hit and takes one of those, though younger.
TEST(LhdPolicyTest, AClassThatIsNeverHitGoesBeforeOlderBlocksThatAre) {
  auto p = NewEvictionPolicy("lhd", PolicyOptions{100});
  Train(*p);
  const std::set<uint64_t> one_shot = {kOneShot + 2996, kOneShot + 2997, kOneShot + 2998,
                                       kOneShot + 2999};
  for (int round = 0; round < 4; ++round) {
    std::vector<BlockKey> v;
    ASSERT_EQ(p->Victims(Take(1), &v), 1u);
    EXPECT_TRUE(one_shot.count(v[0].lo)) << "victim " << v[0].lo;
  }
  // Only the reused blocks are left.
  std::vector<BlockKey> v;
  EXPECT_EQ(p->Victims(Take(10), &v), 4u);
  for (const BlockKey& k : v) EXPECT_GE(k.lo, kReused) << k.lo;
  for (const BlockKey& k : v) EXPECT_LT(k.lo, kReused + 4) << k.lo;
}

// A new block under a reused parent that has no other reused child continues
// the parent's chain and takes its class: it outlives a new root block,
// though it is older. Under a fan-out point (a parent with another reused
// child) a new block is new.
TEST(LhdPolicyTest, ANewBlockContinuingAReusedChainTakesItsClass) {
  auto p = NewEvictionPolicy("lhd", PolicyOptions{100});
  Train(*p);
  // Continues kReused+0's chain; then a new root, younger.
  p->Insert(K(1), Child(kReused + 0));
  p->Insert(K(2), PolicyBlock{});
  std::vector<BlockKey> v;
  // The candidates: K(1) (reused class), K(2) and four one-shot blocks (new
  // class), three reused leaves. The new-class leaves go first, K(1) stays.
  ASSERT_EQ(p->Victims(Take(5), &v), 5u);
  EXPECT_EQ(std::count(v.begin(), v.end(), K(2)), 1);
  EXPECT_EQ(std::count(v.begin(), v.end(), K(1)), 0);

  // kReused+1 gets a reused child (K(3), hit), so it is a fan-out point: a
  // new block under it (K(4)) is new and goes first.
  p->Insert(K(3), Child(kReused + 1));
  p->Touch(K(3));
  p->Insert(K(4), Child(kReused + 1));
  v.clear();
  ASSERT_EQ(p->Victims(Take(1), &v), 1u);
  EXPECT_EQ(v[0], K(4));
}

// Leaves only: a chain leaves from its end, whatever its blocks' ages.
TEST(LhdPolicyTest, VictimsAreLeaves) {
  auto p = NewEvictionPolicy("lhd", PolicyOptions{100});
  p->Insert(K(1), PolicyBlock{});
  p->Insert(K(2), Child(1));
  p->Insert(K(3), Child(2));
  p->Touch(K(3));  // the leaf is the newest
  std::vector<BlockKey> v;
  ASSERT_EQ(p->Victims(Take(3), &v), 3u);
  EXPECT_EQ(v, (std::vector<BlockKey>{K(3), K(2), K(1)}));
}

// The victim an admission filter peeks at (a call that refuses it) is the
// one the next call takes: a call that takes nothing changes nothing.
TEST(LhdPolicyTest, ThePeekedVictimIsTheNextOneTaken) {
  auto p = NewEvictionPolicy("lhd", PolicyOptions{1000});
  for (uint64_t i = 0; i < 1000; ++i) p->Insert(K(i), PolicyBlock{});
  for (uint64_t i = 0; i < 1000; i += 3) p->Touch(K(i));
  for (uint64_t r = 0; r < 100; ++r) {
    const BlockKey incoming = K(5000 + r);
    const std::optional<BlockKey> peeked = PeekVictim(*p, incoming);
    ASSERT_TRUE(peeked.has_value());
    std::vector<BlockKey> v;
    ASSERT_EQ(p->Victims(Take(1), &v), 1u);
    EXPECT_EQ(v[0], *peeked) << "round " << r;
    p->Insert(incoming, PolicyBlock{});
  }
}

// A replay repeats exactly: sampling is seeded.
TEST(LhdPolicyTest, ReplaysRepeat) {
  std::vector<uint64_t> requests;
  for (uint64_t i = 0; i < 20000; ++i) requests.push_back((i * 7919) % 257 + (i % 3 ? 0 : i));
  auto a = NewEvictionPolicy("lhd", PolicyOptions{64});
  auto b = NewEvictionPolicy("lhd", PolicyOptions{64});
  const auto ra = policy_test::ReplayBlocks(*a, 64, requests);
  const auto rb = policy_test::ReplayBlocks(*b, 64, requests);
  EXPECT_EQ(ra.victims, rb.victims);
  EXPECT_GT(ra.victims.size(), 1000u);
}

}  // namespace
}  // namespace kvtier
