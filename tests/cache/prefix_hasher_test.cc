#include "cache/prefix_hasher.h"

#include <gtest/gtest.h>
#include <xxhash.h>

#include <cstring>
#include <memory>
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

// The documented chain, one libxxhash call per block: what every kernel must
// give bit for bit.
std::vector<BlockKey> ReferenceChain(BlockKey prev, size_t bt, const TokenId* tokens,
                                     size_t blocks) {
  std::vector<BlockKey> keys;
  std::vector<unsigned char> buf(16 + bt * sizeof(TokenId));
  for (size_t i = 0; i < blocks; ++i) {
    const std::string p = prev.ToByteString();
    std::memcpy(buf.data(), p.data(), 16);
    std::memcpy(buf.data() + 16, tokens + i * bt, bt * sizeof(TokenId));
    const XXH128_hash_t h = XXH3_128bits(buf.data(), buf.size());
    keys.push_back(prev = BlockKey{h.high64, h.low64});
  }
  return keys;
}

// Every instruction set's kernel, at every block size, for runs of blocks
// shorter and longer than what the kernels compute ahead (8), starting one
// token off alignment, beside memory that differs from the zeros a key's
// first stripe is computed with: libxxhash's chain, and nothing written past
// the last key.
TEST(ChainedHashTest, EveryInstructionSetGivesTheDocumentedChainAtEveryBlockSize) {
  std::mt19937_64 rng(11);
  std::vector<TokenId> tokens(1 + 1024 * 19);
  for (TokenId& t : tokens) t = static_cast<TokenId>(rng());
  const TokenId* start = tokens.data() + 1;
  const BlockKey prev{rng(), rng()};
  for (ChecksumIsa isa : SupportedChecksumIsas()) {
    for (int bt = 16; bt <= 1024; bt *= 2) {
      for (size_t blocks : {0, 1, 2, 7, 8, 9, 17}) {
        if (blocks * size_t(bt) > tokens.size() - 1) continue;
        const auto want = ReferenceChain(prev, size_t(bt), start, blocks);
        std::vector<BlockKey> got(blocks + 1, BlockKey{7, 7});
        ChainBlockKeys(prev, bt, start, blocks, got.data(), isa);
        for (size_t i = 0; i < blocks; ++i) {
          ASSERT_EQ(got[i], want[i])
              << ToString(isa) << ", " << bt << "-token blocks, " << blocks << " blocks: key " << i;
        }
        EXPECT_EQ(got[blocks], (BlockKey{7, 7})) << ToString(isa) << " wrote past the last key";
      }
    }
  }
}

// Fewer tokens than a block (none, or a client's short request) give no keys
// and read no token: not even the first block's first stripe.
TEST(ChainedHashTest, NoWholeBlockReadsNothing) {
  for (ChecksumIsa isa : SupportedChecksumIsas()) {
    for (int bt = 16; bt <= 1024; bt *= 2) {
      BlockKey out{7, 7};
      ChainBlockKeys(BlockKey{1, 2}, bt, nullptr, 0, &out, isa);
      EXPECT_EQ(out, (BlockKey{7, 7})) << ToString(isa) << ", " << bt << "-token blocks";
    }
  }
  for (int bt = 16; bt <= 1024; bt *= 2) {
    Namespace ns = TestNamespace();
    ns.block_tokens = bt;
    PrefixHasher h(ns);
    EXPECT_TRUE(h.Keys(std::vector<TokenId>{}).empty()) << bt;
    // Exactly sized on the heap, so that ASan sees a read past it.
    const auto short_prompt = std::make_unique<TokenId[]>(3);
    EXPECT_TRUE(h.Keys(std::span<const TokenId>(short_prompt.get(), 3)).empty()) << bt;
  }
}

// The bench's per-hash limit is XXH3_128bits itself on each instruction set.
TEST(ChainedHashTest, Xxh3OnEveryInstructionSetIsLibxxhashs) {
  std::mt19937 rng(5);
  std::vector<unsigned char> data(5000);
  for (auto& b : data) b = static_cast<unsigned char>(rng());
  for (ChecksumIsa isa : SupportedChecksumIsas()) {
    for (size_t n = 0; n <= 4200; n += (n < 300 ? 1 : 97)) {
      const XXH128_hash_t want = XXH3_128bits(data.data() + 3, n);
      ASSERT_EQ(Xxh3_128(data.data() + 3, n, isa), (BlockKey{want.high64, want.low64}))
          << ToString(isa) << ", " << n << " bytes";
    }
  }
}

// PrefixHasher chains with the active kernel: the documented chain at every
// block size, and a chain continued from its last key is the same chain.
TEST(PrefixHasherTest, KeysFollowTheDocumentedChainAtEveryBlockSize) {
  std::mt19937 rng(7);
  std::vector<TokenId> tokens(4096);
  for (TokenId& t : tokens) t = static_cast<TokenId>(rng());
  for (int bt : {16, 32, 64, 128, 256, 512, 1024}) {
    Namespace ns = TestNamespace();
    ns.block_tokens = bt;
    PrefixHasher h(ns);
    const auto keys = h.Keys(tokens);
    EXPECT_EQ(keys, ReferenceChain(ns.Seed(), size_t(bt), tokens.data(), tokens.size() / bt))
        << bt << "-token blocks";
    std::vector<BlockKey> continued = h.Keys(std::span<const TokenId>(tokens).first(size_t(bt)));
    h.AppendKeys(continued.back(), std::span<const TokenId>(tokens).subspan(size_t(bt)),
                 &continued);
    EXPECT_EQ(continued, keys) << bt << "-token blocks, continued";
    EXPECT_EQ(h.Next(keys[0], std::span<const TokenId>(tokens).subspan(size_t(bt), size_t(bt))),
              keys[1]);
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
