#include "cache/prefix_hasher.h"

#include <gtest/gtest.h>
#include <xxhash.h>

#include <cstring>
#include <numeric>
#include <random>
#include <set>
#include <span>

#include "cache/chained_hash.h"
#include "tests/cache/test_namespace.h"

namespace kvtier {
namespace {

std::vector<TokenId> Iota(size_t n, TokenId start = 1) {
  std::vector<TokenId> t(n);
  std::iota(t.begin(), t.end(), start);
  return t;
}

TEST(PrefixHasherTest, SameTokensAndNamespaceGiveSameKeys) {
  const auto tokens = Iota(100);
  EXPECT_EQ(PrefixHasher(TestNamespace()).Keys(tokens), PrefixHasher(TestNamespace()).Keys(tokens));
}

TEST(PrefixHasherTest, OnlyFullBlocksGetKeys) {
  PrefixHasher h(TestNamespace());
  EXPECT_EQ(h.Keys(Iota(15)).size(), 0u);
  EXPECT_EQ(h.Keys(Iota(16)).size(), 1u);
  EXPECT_EQ(h.Keys(Iota(100)).size(), 6u);
  // A partial tail does not change the keys of the full blocks before it.
  auto with_tail = h.Keys(Iota(100));
  auto without = h.Keys(Iota(96));
  EXPECT_EQ(with_tail, without);
}

TEST(PrefixHasherTest, KeysFollowTheDocumentedChain) {
  // key_0 = XXH3_128(seed || tokens[0,B)), key_i = XXH3_128(key_{i-1} || ...),
  // computed here independently of the hasher.
  Namespace ns = TestNamespace();
  const auto tokens = Iota(48);
  auto keys = PrefixHasher(ns).Keys(tokens);
  ASSERT_EQ(keys.size(), 3u);
  BlockKey prev = ns.Seed();
  for (size_t i = 0; i < 3; ++i) {
    std::vector<unsigned char> buf(16 + 16 * sizeof(TokenId));
    std::string p = prev.ToByteString();
    std::memcpy(buf.data(), p.data(), 16);
    std::memcpy(buf.data() + 16, tokens.data() + i * 16, 16 * sizeof(TokenId));
    XXH128_hash_t h = XXH3_128bits(buf.data(), buf.size());
    BlockKey expect{h.high64, h.low64};
    EXPECT_EQ(keys[i], expect) << "block " << i;
    prev = expect;
  }
}

// The key hashes prev || tokens where the tokens lie (no copy past XXH3's
// short sizes): XXH3_128bits of the concatenation for every length, and the
// documented chain for every block size.
TEST(PrefixHasherTest, KeysAreXxh3OfTheConcatenationAtEveryLength) {
  std::mt19937 rng(7);
  std::vector<TokenId> tokens(1100);
  for (TokenId& t : tokens) t = static_cast<TokenId>(rng());
  std::byte key[16];
  for (std::byte& b : key) b = static_cast<std::byte>(rng());
  for (size_t n = 0; n <= tokens.size(); n += (n < 80 ? 1 : 37)) {
    std::vector<unsigned char> buf(16 + n * sizeof(TokenId));
    std::memcpy(buf.data(), key, 16);
    std::memcpy(buf.data() + 16, tokens.data(), n * sizeof(TokenId));
    const XXH128_hash_t want = XXH3_128bits(buf.data(), buf.size());
    const Hash128 got = HashKeyAndTokens(key, tokens.data(), n);
    ASSERT_EQ(got.low64, want.low64) << n << " tokens";
    ASSERT_EQ(got.high64, want.high64) << n << " tokens";
  }
  for (int bt : {16, 32, 64, 128, 256, 512, 1024}) {
    Namespace ns = TestNamespace();
    ns.block_tokens = bt;
    const auto keys = PrefixHasher(ns).Keys(std::span<const TokenId>(tokens.data(), 1024));
    BlockKey prev = ns.Seed();
    for (size_t i = 0; i < keys.size(); ++i) {
      std::vector<unsigned char> buf(16 + size_t(bt) * sizeof(TokenId));
      const std::string p = prev.ToByteString();
      std::memcpy(buf.data(), p.data(), 16);
      std::memcpy(buf.data() + 16, tokens.data() + i * bt, size_t(bt) * sizeof(TokenId));
      const XXH128_hash_t h = XXH3_128bits(buf.data(), buf.size());
      ASSERT_EQ(keys[i], (BlockKey{h.high64, h.low64})) << bt << "-token block " << i;
      prev = keys[i];
    }
  }
}

TEST(PrefixHasherTest, ChangingTokenJChangesItsBlockAndEveryLaterOneOnly) {
  PrefixHasher h(TestNamespace());
  const auto base = Iota(16 * 8);
  const auto base_keys = h.Keys(base);
  for (size_t j : {size_t{0}, size_t{15}, size_t{16}, size_t{70}, size_t{127}}) {
    auto changed = base;
    changed[j] += 1000;
    const auto keys = h.Keys(changed);
    const size_t block = j / 16;
    for (size_t i = 0; i < keys.size(); ++i) {
      if (i < block) {
        EXPECT_EQ(keys[i], base_keys[i]) << "token " << j << " changed earlier block " << i;
      } else {
        EXPECT_NE(keys[i], base_keys[i]) << "token " << j << " left block " << i << " unchanged";
      }
    }
  }
}

TEST(PrefixHasherTest, DifferentNamespacesNeverShareKeys) {
  std::vector<Namespace> spaces;
  spaces.push_back(TestNamespace());
  auto vary = [&](auto change) {
    Namespace ns = TestNamespace();
    change(ns);
    spaces.push_back(ns);
  };
  vary([](Namespace& n) { n.model_id = "other-model"; });
  vary([](Namespace& n) { n.model_revision = "rev2"; });
  vary([](Namespace& n) { n.kv_dtype = DType::kBFloat16; });
  vary([](Namespace& n) { n.layout_version = 2; });
  vary([](Namespace& n) { n.tp_size = 2; });
  vary([](Namespace& n) {
    n.tp_size = 2;
    n.tp_rank = 1;
  });
  vary([](Namespace& n) { n.cache_salt = "tenant-a"; });
  vary([](Namespace& n) { n.cache_salt = "tenant-b"; });
  // Field boundaries are unambiguous: moving bytes between strings changes the seed.
  vary([](Namespace& n) {
    n.model_id = "stories260";
    n.model_revision = "K";
  });
  const auto tokens = Iota(16 * 4);
  std::set<BlockKey> seen;
  size_t total = 0;
  for (const Namespace& ns : spaces) {
    ASSERT_TRUE(ns.Validate().ok()) << ns.ToString();
    for (const BlockKey& k : PrefixHasher(ns).Keys(tokens)) {
      seen.insert(k);
      ++total;
    }
  }
  EXPECT_EQ(seen.size(), total);
}

TEST(PrefixHasherTest, BlockTokensChangeTheChain) {
  Namespace a = TestNamespace(), b = TestNamespace();
  b.block_tokens = 32;
  const auto tokens = Iota(64);
  auto ka = PrefixHasher(a).Keys(tokens);
  auto kb = PrefixHasher(b).Keys(tokens);
  for (const BlockKey& k : kb) EXPECT_EQ(std::count(ka.begin(), ka.end(), k), 0);
}

TEST(PrefixHasherTest, AppendKeysContinuesAChain) {
  PrefixHasher h(TestNamespace());
  const auto tokens = Iota(16 * 5);
  auto all = h.Keys(tokens);
  std::vector<BlockKey> keys = h.Keys(std::span(tokens).first(32));
  h.AppendKeys(keys.back(), std::span(tokens).subspan(32), &keys);
  EXPECT_EQ(keys, all);
}

TEST(PrefixHasherTest, TailKeysNameExactlyTheirTokens) {
  Namespace ns;
  ns.block_tokens = 16;
  PrefixHasher h(ns);
  std::vector<TokenId> tokens(40);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<TokenId>(i * 7 + 1);
  const BlockKey prev = h.Keys(std::span<const TokenId>(tokens).first(16)).back();
  const BlockKey t5 = h.TailKey(prev, std::span<const TokenId>(tokens).subspan(16, 5));
  // Only the tail's own tokens count: what follows it does not.
  std::vector<TokenId> other = tokens;
  other[21] = 999;
  EXPECT_EQ(h.TailKey(prev, std::span<const TokenId>(other).subspan(16, 5)), t5);
  // A different length, token, or parent is a different key.
  EXPECT_NE(h.TailKey(prev, std::span<const TokenId>(tokens).subspan(16, 6)), t5);
  other[20] = 999;
  EXPECT_NE(h.TailKey(prev, std::span<const TokenId>(other).subspan(16, 5)), t5);
  EXPECT_NE(h.TailKey(h.seed(), std::span<const TokenId>(tokens).subspan(16, 5)), t5);
  // Never the key of a full block.
  EXPECT_NE(h.TailKey(prev, std::span<const TokenId>(tokens).subspan(16, 15)),
            h.Next(prev, std::span<const TokenId>(tokens).subspan(16, 16)));
}

}  // namespace
}  // namespace kvtier
