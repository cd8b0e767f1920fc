#include "common/rendezvous.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

namespace kvtier {
namespace {

std::vector<std::string> Nodes(int n) {
  std::vector<std::string> v;
  for (int i = 0; i < n; ++i) v.push_back("10.0.0." + std::to_string(i + 1) + ":50051");
  return v;
}

std::vector<BlockKey> Keys(int n) {
  std::mt19937_64 rng(3);
  std::vector<BlockKey> k;
  for (int i = 0; i < n; ++i) k.push_back(BlockKey{rng(), rng()});
  return k;
}

TEST(RendezvousTest, EveryNodeOwnsAboutItsShare) {
  const Rendezvous r(Nodes(4));
  std::vector<int> owned(4);
  for (const BlockKey& k : Keys(40000)) ++owned[r.Owner(k)];
  for (int n : owned) {
    EXPECT_GT(n, 9000);  // 10,000 each expected; 1% of slack is ~10 sigma
    EXPECT_LT(n, 11000);
  }
}

TEST(RendezvousTest, TheOrderOfNamesDoesNotMatter) {
  std::vector<std::string> a = Nodes(5), b = a;
  std::reverse(b.begin(), b.end());
  const Rendezvous ra(a), rb(b);
  for (const BlockKey& k : Keys(2000)) EXPECT_EQ(ra.nodes()[ra.Owner(k)], rb.nodes()[rb.Owner(k)]);
}

// Adding a node moves only the keys it now wins (about 1/(N+1)); removing one
// moves only the keys it held (about 1/N); no other key changes owner.
TEST(RendezvousTest, AddingOrRemovingANodeMovesAboutOneNth) {
  const std::vector<BlockKey> keys = Keys(40000);
  std::vector<std::string> four = Nodes(4), five = Nodes(5);
  const Rendezvous r4(four), r5(five);
  int moved = 0;
  for (const BlockKey& k : keys) {
    const std::string& before = r4.nodes()[r4.Owner(k)];
    const std::string& after = r5.nodes()[r5.Owner(k)];
    if (before != after) {
      ++moved;
      EXPECT_EQ(after, five.back()) << "a key moved between two old nodes";
    }
  }
  EXPECT_GT(moved, 40000 / 5 - 800);
  EXPECT_LT(moved, 40000 / 5 + 800);
  // Removing node 2 of 5: exactly its keys move.
  std::vector<std::string> without = five;
  without.erase(without.begin() + 2);
  const Rendezvous r4b(without);
  for (const BlockKey& k : keys) {
    const std::string& before = r5.nodes()[r5.Owner(k)];
    if (before != five[2]) {
      EXPECT_EQ(r4b.nodes()[r4b.Owner(k)], before);
    }
  }
}

TEST(RendezvousTest, NoNodesOwnsNothingAndOneNodeOwnsAll) {
  EXPECT_EQ(Rendezvous({}).Owner(BlockKey{1, 2}), 0u);
  const Rendezvous one({"a:1"});
  for (const BlockKey& k : Keys(100)) EXPECT_EQ(one.Owner(k), 0u);
}

}  // namespace
}  // namespace kvtier
