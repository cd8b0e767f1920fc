// The contract every eviction policy keeps, checked for each by name.
#include "cache/eviction_policy.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "tests/cache/policies/policy_test_util.h"

namespace kvtier {
namespace {

using policy_test::K;
using policy_test::Take;

TEST(EvictionPolicyTest, FactoryKnowsEveryPolicyByItsName) {
  for (const std::string& name : EvictionPolicyNames()) {
    std::unique_ptr<EvictionPolicy> p = NewEvictionPolicy(name, PolicyOptions{100});
    ASSERT_NE(p, nullptr) << name;
    EXPECT_EQ(p->Name(), name);
  }
  EXPECT_EQ(EvictionPolicyNames().size(), 13u);
  EXPECT_EQ(NewEvictionPolicy("nope"), nullptr);
}

// Every policy: holds what it is given, honours eligibility, forgets victims
// and erased keys, and ends up empty.
TEST(EvictionPolicyTest, EveryPolicyKeepsTheContract) {
  for (const std::string& name : EvictionPolicyNames()) {
    SCOPED_TRACE(name);
    std::unique_ptr<EvictionPolicy> p = NewEvictionPolicy(name, PolicyOptions{8});
    for (uint64_t i = 1; i <= 8; ++i) p->Insert(K(i), PolicyBlock{});
    EXPECT_EQ(p->size(), 8u);
    p->Touch(K(3));
    p->Touch(K(99));  // absent: ignored
    p->Erase(K(5));
    p->Erase(K(99));
    EXPECT_EQ(p->size(), 7u);
    std::vector<BlockKey> v;
    // Only odd keys are eligible: 1, 3, 7 (5 is gone).
    EXPECT_EQ(p->Victims(Take(10, [](const BlockKey& k) { return k.lo % 2 == 1; }), &v), 3u);
    std::sort(v.begin(), v.end());
    EXPECT_EQ(v, (std::vector<BlockKey>{K(1), K(3), K(7)}));
    EXPECT_EQ(p->size(), 4u);
    v.clear();
    EXPECT_EQ(p->Victims(Take(10), &v), 4u);
    std::sort(v.begin(), v.end());
    EXPECT_EQ(v, (std::vector<BlockKey>{K(2), K(4), K(6), K(8)}));
    EXPECT_EQ(p->size(), 0u);
    EXPECT_EQ(p->Victims(Take(1), &v), 0u);
  }
}

// Every policy: a block that names itself as its parent (a client's bad
// hint) is held and evicted like any other, new or back from a ghost.
TEST(EvictionPolicyTest, EveryPolicyIgnoresABlockNamedItsOwnParent) {
  for (const std::string& name : EvictionPolicyNames()) {
    SCOPED_TRACE(name);
    std::unique_ptr<EvictionPolicy> p = NewEvictionPolicy(name, PolicyOptions{8});
    PolicyBlock self;
    self.parent = K(2);
    p->Insert(K(1), PolicyBlock{});
    p->Insert(K(2), self);
    EXPECT_EQ(p->size(), 2u);
    std::vector<BlockKey> v;
    EXPECT_EQ(p->Victims(Take(2), &v), 2u);
    EXPECT_EQ(p->size(), 0u);
    p->Insert(K(2), self);  // a ghost now, for the policies that keep them
    v.clear();
    EXPECT_EQ(p->Victims(Take(2), &v), 1u);
    EXPECT_EQ(v, std::vector<BlockKey>{K(2)});
  }
}

// Every policy: a call that has stepped over max_refused refused blocks
// gives up with what it has, asks `eligible` no more than that many times
// for refusals, and keeps every block it did not take.
TEST(EvictionPolicyTest, EveryPolicyStopsAfterMaxRefusedRefusals) {
  for (const std::string& name : EvictionPolicyNames()) {
    SCOPED_TRACE(name);
    std::unique_ptr<EvictionPolicy> p = NewEvictionPolicy(name, PolicyOptions{1000});
    for (uint64_t i = 1; i <= 1000; ++i) p->Insert(K(i), PolicyBlock{});
    size_t asked = 0;
    VictimQuery q = Take(1, [&](const BlockKey& k) {
      ++asked;
      return k.lo == 1000;  // one eligible block, wherever the policy ranks it
    });
    q.max_refused = 10;
    std::vector<BlockKey> v;
    const size_t taken = p->Victims(q, &v);
    EXPECT_LE(asked, 11u);  // at most 10 refusals (and the one it took, if it met it)
    EXPECT_EQ(p->size(), 1000u - taken);
    // Without the bound the eligible block is found.
    q.max_refused = SIZE_MAX;
    v.clear();
    if (taken == 0) {
      EXPECT_EQ(p->Victims(q, &v), 1u);
      EXPECT_EQ(v, std::vector<BlockKey>{K(1000)});
    }
    EXPECT_EQ(p->size(), 999u);
    // 0: only the policy's first choice, taken when it is eligible.
    q.eligible = nullptr;
    q.max_refused = 0;
    v.clear();
    EXPECT_EQ(p->Victims(q, &v), 1u);
    q.eligible = [](const BlockKey&) { return false; };
    EXPECT_EQ(p->Victims(q, &v), 0u);
    EXPECT_EQ(p->size(), 998u);
  }
}

// Forwards every call to `inner`, and before each one hints keys to it
// (Prefetch): the next ones of the sequence, and one never inserted.
class HintingPolicy final : public EvictionPolicy {
 public:
  explicit HintingPolicy(EvictionPolicy& inner) : inner_(inner) {}
  std::string_view Name() const override { return inner_.Name(); }
  void Insert(const BlockKey& key, const PolicyBlock& block) override {
    Hint(key);
    inner_.Insert(key, block);
  }
  void Touch(const BlockKey& key) override {
    Hint(key);
    inner_.Touch(key);
  }
  void Erase(const BlockKey& key) override {
    Hint(key);
    inner_.Erase(key);
  }
  size_t Victims(const VictimQuery& query, std::vector<BlockKey>* out) override {
    Hint(*query.incoming);
    return inner_.Victims(query, out);
  }
  size_t size() const override { return inner_.size(); }

 private:
  void Hint(const BlockKey& key) {
    for (uint64_t d = 0; d < 8; ++d) inner_.Prefetch(K(key.lo + d));
    inner_.Prefetch(K(1'000'000));
  }
  EvictionPolicy& inner_;
};

// Every policy: Prefetch is only a hint. The same sequence gives the same
// hits and victims with hints before every call as without any.
TEST(EvictionPolicyTest, EveryPolicyAnswersTheSameWithPrefetchHints) {
  std::vector<uint64_t> requests;
  uint64_t x = 12345;
  for (int i = 0; i < 4000; ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    const uint64_t r = x >> 33;
    requests.push_back(r % 4 == 0 ? 1 + r % 400 : 1 + r % 40);  // a hot set and a cold one
  }
  for (const std::string& name : EvictionPolicyNames()) {
    SCOPED_TRACE(name);
    std::unique_ptr<EvictionPolicy> plain = NewEvictionPolicy(name, PolicyOptions{64});
    std::unique_ptr<EvictionPolicy> hinted = NewEvictionPolicy(name, PolicyOptions{64});
    plain->Prefetch(K(1));  // an empty policy takes a hint too
    hinted->Prefetch(K(1));
    HintingPolicy hinting(*hinted);
    const policy_test::Replay a = policy_test::ReplayBlocks(*plain, 64, requests);
    const policy_test::Replay b = policy_test::ReplayBlocks(hinting, 64, requests);
    EXPECT_EQ(a.hits, b.hits);
    EXPECT_EQ(a.victims, b.victims);
    EXPECT_GT(a.victims.size(), 500u);  // the sequence did make it evict
    EXPECT_EQ(plain->size(), hinted->size());
  }
}

}  // namespace
}  // namespace kvtier
