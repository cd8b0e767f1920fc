#include "cache/cache_manager.h"

#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <thread>

#include "cache/prefix_hasher.h"
#include "tests/gated_tier.h"
#include "tiers/dram/dram_tier.h"
#include "tiers/fault_injection_tier.h"

namespace kvtier {
namespace {

constexpr uint64_t kPage = 64 << 10;

std::vector<std::byte> Payload(size_t n, uint8_t seed) {
  std::vector<std::byte> p(n);
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<std::byte>((i * 131 + seed) & 0xff);
  return p;
}

class CacheManagerTest : public ::testing::Test {
 protected:
  // A stack of DRAM tiers, each `pages` slab pages large, each taking blocks
  // up to max_block_bytes[i] (0 or absent: the default), each with the
  // admission filter admission[i] (empty or absent: none).
  void Open(std::vector<uint64_t> pages_per_tier, std::vector<uint64_t> max_block_bytes = {},
            std::vector<std::string> admission = {}) {
    std::vector<TierSlot> slots;
    for (size_t i = 0; i < pages_per_tier.size(); ++i) {
      DramTierOptions o;
      o.name = "t" + std::to_string(i);
      o.capacity_bytes = pages_per_tier[i] * kPage;
      o.page_bytes = kPage;
      o.clock = &clock_;
      o.read_bytes_per_s = o.write_bytes_per_s = 1e9;  // no calibration: placement is by position
      if (i < max_block_bytes.size() && max_block_bytes[i] > 0)
        o.max_block_bytes = max_block_bytes[i];
      auto tier = OpenDramTier(o);
      ASSERT_TRUE(tier.ok()) << tier.status();
      tiers_.push_back(tier->get());
      slots.push_back({std::move(*tier), NewLruPolicy()});
      if (i < admission.size() && !admission[i].empty()) {
        slots.back().admission = NewAdmissionFilter(admission[i], {.capacity_blocks = 2});
        ASSERT_NE(slots.back().admission, nullptr);
      }
    }
    auto m = CacheManager::Open(std::move(slots), Options());
    ASSERT_TRUE(m.ok()) << m.status();
    cache_ = std::move(*m);
  }

  // Deterministic: no background sweep or promotion; tests run them.
  CacheManagerOptions Options() {
    CacheManagerOptions opts;
    opts.clock = &clock_;
    opts.sweep_interval_ms = 0;
    opts.background_promotion = false;
    return opts;
  }

  // Keys of a chain of n blocks.
  std::vector<BlockKey> Chain(size_t n, TokenId start = 0) {
    std::vector<TokenId> tokens(n * 16);
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = start + static_cast<TokenId>(i);
    Namespace ns;
    ns.block_tokens = 16;
    return PrefixHasher(ns).Keys(tokens);
  }

  Status InsertChain(const std::vector<BlockKey>& keys, size_t bytes) {
    for (size_t i = 0; i < keys.size(); ++i) {
      std::optional<BlockKey> parent;
      if (i > 0) parent = keys[i - 1];
      KVTIER_RETURN_IF_ERROR(cache_->Insert(keys[i], parent, Payload(bytes, uint8_t(i))));
    }
    return Status::Ok();
  }

  ManualClock clock_;
  std::vector<Tier*> tiers_;  // owned by cache_
  std::unique_ptr<CacheManager> cache_;
};

TEST_F(CacheManagerTest, InsertedBlocksReadBackAndHitAsAPrefix) {
  Open({64});
  auto keys = Chain(4);
  ASSERT_TRUE(InsertChain({keys.begin(), keys.begin() + 3}, 1000).ok());
  PrefixHit hit = cache_->Lookup(keys);
  EXPECT_EQ(hit.blocks, 3u);
  ASSERT_EQ(hit.entries.size(), 3u);
  EXPECT_EQ(hit.entries[1].bytes, 1000u);
  std::vector<std::byte> buf(2000);
  auto n = cache_->Read(keys[1], buf);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 1000u);
  EXPECT_EQ(std::vector<std::byte>(buf.begin(), buf.begin() + 1000), Payload(1000, 1));
  EXPECT_TRUE(cache_->Read(keys[3], buf).status().IsNotFound());
  CacheStats s = cache_->Stats();
  EXPECT_EQ(s.inserts, 3u);
  EXPECT_EQ(s.read_hits, 1u);
  EXPECT_EQ(s.read_misses, 1u);
  EXPECT_EQ(s.lookup_hit_blocks, 3u);
}

// Probe finds the run as Lookup does, but is not a use: the LRU order, the
// statistics and the expiry stay as they were. Its pins keep blocks from
// eviction as Lookup's do.
TEST_F(CacheManagerTest, ProbeIsNotAUseAndItsPinsHoldBlocks) {
  Open({4});
  const size_t bytes = 60 << 10;
  auto a = Chain(2, 0), b = Chain(2, 1000);
  ASSERT_TRUE(InsertChain(a, bytes).ok());
  ASSERT_TRUE(InsertChain(b, bytes).ok());
  const CacheStats before = cache_->Stats();
  PrefixHit probe = cache_->Probe(a);  // a stays the least recently used
  EXPECT_EQ(probe.blocks, 2u);
  EXPECT_TRUE(probe.pins.empty());
  EXPECT_EQ(cache_->Stats().lookups, before.lookups);
  EXPECT_EQ(cache_->Stats().lookup_hit_blocks, before.lookup_hit_blocks);
  ASSERT_TRUE(InsertChain(Chain(1, 5000), bytes).ok());  // c
  EXPECT_EQ(cache_->Probe(a).blocks, 1u) << "a's leaf was the LRU victim: the probe was no use";
  EXPECT_EQ(cache_->Probe(b).blocks, 2u);

  // Pinned by a probe, b survives two more inserts: the first takes a's root,
  // the second would take b's leaf (the least recent leaf) but takes c.
  PrefixHit pinned = cache_->Probe(b, /*pin=*/true);
  ASSERT_EQ(pinned.pins.size(), 2u);
  ASSERT_TRUE(InsertChain(Chain(1, 6000), bytes).ok());
  ASSERT_TRUE(InsertChain(Chain(1, 7000), bytes).ok());
  EXPECT_EQ(cache_->Probe(b).blocks, 2u);
  EXPECT_EQ(cache_->Probe(Chain(1, 5000)).blocks, 0u);
  EXPECT_EQ(cache_->Erase(b[1]).code(), StatusCode::kRetry) << "a pinned block stays";
  pinned.pins.clear();
  EXPECT_TRUE(cache_->Erase(b[1]).ok());
  // A run stops at the first absent key; nothing is pinned past it.
  PrefixHit partial = cache_->Probe(b, /*pin=*/true);
  EXPECT_EQ(partial.blocks, 1u);
  EXPECT_EQ(partial.pins.size(), 1u);
}

TEST_F(CacheManagerTest, RefusedInsertsChangeNothing) {
  Open({4});
  auto keys = Chain(2);
  ASSERT_TRUE(InsertChain({keys[0]}, 1000).ok());
  EXPECT_EQ(cache_->Insert(keys[1], keys[0], {}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(cache_->Insert(keys[1], keys[0], Payload(10, 0), clock_.NowMs()).code(),
            StatusCode::kInvalidArgument);
  // A block named as its own parent.
  const Status self = cache_->Insert(keys[1], keys[1], Payload(10, 0));
  EXPECT_EQ(self.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(self.message().find("its own parent"), std::string::npos) << self;
  // Larger than the whole tier: refused before anything is evicted.
  EXPECT_EQ(cache_->Insert(keys[1], keys[0], Payload(5 * kPage, 0)).code(),
            StatusCode::kResourceExhausted);
  EXPECT_EQ(cache_->Lookup(keys).blocks, 1u);
  EXPECT_EQ(cache_->Stats().drops, 0u);
}

TEST_F(CacheManagerTest, FullTierEvictsLeastRecentlyUsedLeavesFirst) {
  Open({4});  // 4 pages of 64 KiB; 60 KiB blocks take one page each
  const size_t bytes = 60 << 10;
  auto a = Chain(2, 0), b = Chain(2, 1000);
  ASSERT_TRUE(InsertChain(a, bytes).ok());
  ASSERT_TRUE(InsertChain(b, bytes).ok());
  cache_->Lookup(a);  // a is now more recent than b
  auto c = Chain(1, 5000);
  ASSERT_TRUE(InsertChain(c, bytes).ok());
  // b's leaf goes first, not b's root, and nothing of a.
  EXPECT_EQ(cache_->Lookup(a).blocks, 2u);
  EXPECT_EQ(cache_->Lookup(b).blocks, 1u);
  EXPECT_EQ(cache_->Lookup(c).blocks, 1u);
  EXPECT_EQ(cache_->Stats().drops, 1u);
}

// An insert holds its key's lock while it makes room. A victim whose key
// shares that lock's stripe is this thread's to evict, not "busy": the LRU
// block goes, whatever the process's hash seed put in which stripe.
TEST_F(CacheManagerTest, AVictimSharingTheInsertsLockStripeIsStillTheVictim) {
  Open({2});
  const size_t bytes = 60 << 10;
  auto x = Chain(1, 0), y = Chain(1, 1000);
  ASSERT_TRUE(InsertChain(x, bytes).ok());
  ASSERT_TRUE(InsertChain(y, bytes).ok());  // x is the least recently used
  std::vector<BlockKey> z;
  for (TokenId start = 2000; z.empty(); start += 16) {
    auto k = Chain(1, start);
    if (CacheManager::KeyLockStripe(k[0]) == CacheManager::KeyLockStripe(x[0])) z = k;
  }
  ASSERT_TRUE(InsertChain(z, bytes).ok());
  EXPECT_EQ(cache_->Lookup(x).blocks, 0u);
  EXPECT_EQ(cache_->Lookup(y).blocks, 1u);
  EXPECT_EQ(cache_->Lookup(z).blocks, 1u);
}

// A victim whose key another operation holds (busy) is stepped over and
// keeps its place and state in the policy. (Before, the policy handed it out
// and the manager put it back as a block inserted anew: the most recent
// under LRU, and a return from the ghost history, a reuse, under the
// policies that keep ghosts.)
TEST_F(CacheManagerTest, ABusyVictimKeepsItsPlaceInThePolicy) {
  DramTierOptions o;
  o.capacity_bytes = 4 * kPage;
  o.page_bytes = kPage;
  o.clock = &clock_;
  o.read_bytes_per_s = o.write_bytes_per_s = 1e9;
  auto dram = OpenDramTier(o);
  ASSERT_TRUE(dram.ok()) << dram.status();
  auto gated = std::make_unique<testing::GatedTier>(std::move(*dram));
  testing::GatedTier* gate = gated.get();
  std::vector<TierSlot> slots;
  slots.push_back({std::move(gated), NewLruPolicy()});
  auto m = CacheManager::Open(std::move(slots), Options());
  ASSERT_TRUE(m.ok()) << m.status();
  cache_ = std::move(*m);
  const size_t bytes = 60 << 10;
  const BlockKey x{1, 1}, y{1, 2}, z{1, 3}, v{1, 4}, u{1, 5};
  for (const BlockKey& k : {x, y, z})
    ASSERT_TRUE(cache_->Insert(k, std::nullopt, Payload(bytes, 1)).ok());
  // w shares x's lock stripe: while w's write waits at the gate, x is busy.
  BlockKey w{2, 0};
  while (CacheManager::KeyLockStripe(w) != CacheManager::KeyLockStripe(x)) ++w.lo;
  gate->HoldWritesOf(w);
  gate->SetOpen(false);
  std::thread writer([&] { EXPECT_TRUE(cache_->Insert(w, std::nullopt, Payload(bytes, 2)).ok()); });
  gate->AwaitHeld();
  ASSERT_TRUE(cache_->Insert(v, std::nullopt, Payload(bytes, 3)).ok());  // the last free page
  ASSERT_TRUE(cache_->Insert(u, std::nullopt, Payload(bytes, 4)).ok());  // full: x is busy, y goes
  EXPECT_TRUE(cache_->Find(x).ok());
  EXPECT_TRUE(cache_->Find(y).status().IsNotFound());
  gate->SetOpen(true);
  writer.join();
  // w's write found the tier full (x, z, v, u): the least recently used
  // goes, and that is still x.
  EXPECT_TRUE(cache_->Find(x).status().IsNotFound());
  EXPECT_TRUE(cache_->Find(z).ok());
  EXPECT_TRUE(cache_->Find(w).ok());
  EXPECT_EQ(cache_->Stats().drops, 2u);
}

TEST_F(CacheManagerTest, PinnedBlocksAreNeverEvicted) {
  Open({2});
  const size_t bytes = 60 << 10;
  auto a = Chain(2, 0);
  ASSERT_TRUE(InsertChain(a, bytes).ok());
  PrefixHit pinned = cache_->Lookup(a, /*pin=*/true);
  ASSERT_EQ(pinned.pins.size(), 2u);
  auto c = Chain(1, 5000);
  EXPECT_EQ(InsertChain(c, bytes).code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(cache_->Erase(a[1]).code(), StatusCode::kRetry);
  EXPECT_EQ(cache_->Lookup(a).blocks, 2u);
  pinned = PrefixHit{};  // the request ends: its pins go
  EXPECT_TRUE(InsertChain(c, bytes).ok());
  EXPECT_EQ(cache_->Lookup(a).blocks, 1u);
}

TEST_F(CacheManagerTest, VictimsOfAFullTierAreDemotedToTheNext) {
  Open({2, 8});
  const size_t bytes = 60 << 10;
  auto a = Chain(4, 0);
  ASSERT_TRUE(InsertChain(a, bytes).ok());
  PrefixHit hit = cache_->Lookup(a);
  ASSERT_EQ(hit.blocks, 4u);
  EXPECT_EQ(cache_->Stats().demotions, 2u);
  int in_top = 0;
  for (const IndexEntry& e : hit.entries) in_top += e.tier == 0;
  EXPECT_EQ(in_top, 2);
  for (size_t i = 0; i < a.size(); ++i) {
    std::vector<std::byte> buf(bytes);
    ASSERT_TRUE(cache_->Read(a[i], buf).ok()) << i;
    EXPECT_EQ(buf, Payload(bytes, uint8_t(i))) << i;
  }
}

// A full tier's admission filter keeps a new block out of it ("ghost": not
// before its second sight); the block goes to the next tier, and displaces a
// victim of the full one only once it has been seen before.
TEST_F(CacheManagerTest, AFullTiersAdmissionFilterSendsANewBlockToTheNextTier) {
  Open({2, 8}, {}, {"ghost", ""});
  const size_t bytes = 60 << 10;
  const BlockKey k1{1, 1}, k2{1, 2}, k3{1, 3};
  ASSERT_TRUE(cache_->Insert(k1, std::nullopt, Payload(bytes, 1)).ok());
  ASSERT_TRUE(cache_->Insert(k2, std::nullopt, Payload(bytes, 2)).ok());
  ASSERT_TRUE(cache_->Insert(k3, std::nullopt, Payload(bytes, 3)).ok());
  EXPECT_EQ(cache_->Find(k1)->tier, 0u) << "room: no question asked";
  EXPECT_EQ(cache_->Find(k2)->tier, 0u);
  EXPECT_EQ(cache_->Find(k3)->tier, 1u) << "refused by the full top tier";
  EXPECT_EQ(cache_->Stats().demotions, 0u);
  // Seen again, k3 is welcome at the top: the LRU victim k1 goes down.
  ASSERT_EQ(cache_->Lookup(std::vector<BlockKey>{k3}).blocks, 1u);
  ASSERT_TRUE(cache_->Erase(k3).ok());
  ASSERT_TRUE(cache_->Insert(k3, std::nullopt, Payload(bytes, 3)).ok());
  EXPECT_EQ(cache_->Find(k3)->tier, 0u);
  EXPECT_EQ(cache_->Find(k1)->tier, 1u);
  const CacheStats s = cache_->Stats();
  EXPECT_EQ(s.demotions, 1u);
  EXPECT_EQ(s.admission_refusals, 0u);
  for (const auto& [k, seed] : {std::pair{k1, 1}, std::pair{k2, 2}, std::pair{k3, 3}}) {
    std::vector<std::byte> buf(bytes);
    ASSERT_TRUE(cache_->Read(k, buf).ok());
    EXPECT_EQ(buf, Payload(bytes, uint8_t(seed)));
  }
}

// A block every tier refuses is not stored: the insert succeeds (a cache may
// decline a block) and it is counted.
TEST_F(CacheManagerTest, ABlockEveryTierRefusesIsNotStored) {
  Open({2}, {}, {"ghost"});
  const size_t bytes = 60 << 10;
  ASSERT_TRUE(cache_->Insert(BlockKey{1, 1}, std::nullopt, Payload(bytes, 1)).ok());
  ASSERT_TRUE(cache_->Insert(BlockKey{1, 2}, std::nullopt, Payload(bytes, 2)).ok());
  ASSERT_TRUE(cache_->Insert(BlockKey{1, 3}, std::nullopt, Payload(bytes, 3)).ok());
  EXPECT_FALSE(cache_->Find(BlockKey{1, 3}).ok());
  EXPECT_TRUE(cache_->Find(BlockKey{1, 1}).ok()) << "nothing displaced";
  EXPECT_TRUE(cache_->Find(BlockKey{1, 2}).ok());
  const CacheStats s = cache_->Stats();
  EXPECT_EQ(s.admission_refusals, 1u);
  EXPECT_EQ(s.inserts, 2u);
  EXPECT_EQ(s.insert_failures, 0u);
}

// A tier that takes no block that large is skipped: the victims go on down
// (as large blocks skip flash for RocksDB in kvtierd).
TEST_F(CacheManagerTest, DemotionSkipsATierThatTakesNoBlockThatLarge) {
  Open({2, 8, 8}, {0, 32 << 10, 0});
  const size_t bytes = 60 << 10;
  auto a = Chain(4, 0);
  ASSERT_TRUE(InsertChain(a, bytes).ok());
  PrefixHit hit = cache_->Lookup(a);
  ASSERT_EQ(hit.blocks, 4u);
  std::vector<int> per_tier(3);
  for (const IndexEntry& e : hit.entries) ++per_tier[e.tier];
  EXPECT_EQ(per_tier, (std::vector<int>{2, 0, 2}));
  EXPECT_EQ(cache_->Stats().demotions, 2u);
  EXPECT_EQ(cache_->Stats().demotion_failures, 0u);
  EXPECT_EQ(tiers_[1]->Info().blocks, 0u);
  for (size_t i = 0; i < a.size(); ++i) {
    std::vector<std::byte> buf(bytes);
    ASSERT_TRUE(cache_->Read(a[i], buf).ok()) << i;
    EXPECT_EQ(buf, Payload(bytes, uint8_t(i))) << i;
  }
}

TEST_F(CacheManagerTest, CorruptBlockReadsAsAMissAndIsDropped) {
  Open({8});
  auto keys = Chain(1);
  ASSERT_TRUE(InsertChain(keys, 4096).ok());
  ASSERT_TRUE(CorruptDramBlockForTesting(*tiers_[0], keys[0]).ok());
  std::vector<std::byte> buf(4096);
  auto r = cache_->Read(keys[0], buf);
  EXPECT_TRUE(r.status().IsNotFound()) << r.status();
  EXPECT_EQ(cache_->Stats().corruption_misses, 1u);
  EXPECT_EQ(cache_->Stats().tiers[0].corruption_errors, 1u);
  EXPECT_EQ(cache_->Lookup(keys).blocks, 0u);
}

// ReadBatch reads every tier's blocks in one batch and answers each block as
// Read would: bytes for a hit in either tier, a miss for an absent or a
// corrupt block (dropped), ResourceExhausted for a buffer too small.
TEST_F(CacheManagerTest, ReadBatchAnswersEachBlockAsReadWould) {
  Open({64, 64}, {2000, 0});  // blocks of up to 2000 bytes in t0, larger ones in t1
  auto keys = Chain(5);
  ASSERT_TRUE(cache_->Insert(keys[0], std::nullopt, Payload(1000, 0)).ok());
  ASSERT_TRUE(cache_->Insert(keys[1], keys[0], Payload(5000, 1)).ok());
  ASSERT_TRUE(cache_->Insert(keys[2], keys[1], Payload(1500, 2)).ok());
  ASSERT_TRUE(cache_->Insert(keys[3], keys[2], Payload(1200, 3)).ok());
  ASSERT_EQ(cache_->Find(keys[0])->tier, 0u);
  ASSERT_EQ(cache_->Find(keys[1])->tier, 1u);
  ASSERT_TRUE(CorruptDramBlockForTesting(*tiers_[0], keys[2]).ok());
  const BlockKey absent = Chain(1, 999)[0];
  std::vector<std::vector<std::byte>> bufs = {
      std::vector<std::byte>(1000), std::vector<std::byte>(6000), std::vector<std::byte>(1500),
      std::vector<std::byte>(100), std::vector<std::byte>(100)};
  std::vector<std::span<std::byte>> dests(bufs.begin(), bufs.end());
  const std::vector<BlockKey> batch = {keys[0], keys[1], keys[2], keys[3], absent};
  std::vector<Result<uint64_t>> r = cache_->ReadBatch(batch, dests);
  ASSERT_EQ(r.size(), 5u);
  ASSERT_TRUE(r[0].ok()) << r[0].status();
  EXPECT_EQ(*r[0], 1000u);
  EXPECT_EQ(bufs[0], Payload(1000, 0));
  ASSERT_TRUE(r[1].ok()) << r[1].status();
  EXPECT_EQ(*r[1], 5000u);
  EXPECT_EQ(std::vector<std::byte>(bufs[1].begin(), bufs[1].begin() + 5000), Payload(5000, 1));
  EXPECT_TRUE(r[2].status().IsNotFound()) << r[2].status();
  EXPECT_TRUE(r[3].status().IsResourceExhausted()) << r[3].status();
  EXPECT_TRUE(r[4].status().IsNotFound()) << r[4].status();
  const CacheStats s = cache_->Stats();
  EXPECT_EQ(s.reads, 5u);
  EXPECT_EQ(s.read_hits, 2u);
  EXPECT_EQ(s.read_misses, 2u);
  EXPECT_EQ(s.corruption_misses, 1u);
  EXPECT_FALSE(cache_->Find(keys[2]).ok()) << "the corrupt block is dropped";
  EXPECT_TRUE(cache_->Find(keys[3]).ok()) << "a buffer too small changes nothing";
}

TEST_F(CacheManagerTest, ExpiredBlocksMissAndAreFreed) {
  Open({8});
  auto keys = Chain(2);
  ASSERT_TRUE(cache_->Insert(keys[0], std::nullopt, Payload(100, 0), clock_.NowMs() + 60'000).ok());
  ASSERT_TRUE(cache_->Insert(keys[1], keys[0], Payload(100, 1)).ok());
  EXPECT_EQ(cache_->Lookup(keys).blocks, 2u);
  clock_.AdvanceMs(60'000);
  EXPECT_EQ(cache_->Lookup(keys).blocks, 0u);
  EXPECT_EQ(cache_->Stats().expired, 1u);
  std::vector<std::byte> buf(100);
  EXPECT_TRUE(cache_->Read(keys[0], buf).status().IsNotFound());
  EXPECT_EQ(cache_->Stats().tiers[0].blocks, 1u);  // only the unexpired child is stored
}

TEST_F(CacheManagerTest, CachedBlocksAreImmutableAndAPutRefreshesThem) {
  Open({8});
  auto keys = Chain(1);
  const int64_t t0 = clock_.NowMs();
  ASSERT_TRUE(cache_->Insert(keys[0], std::nullopt, Payload(5000, 1), t0 + 60'000).ok());
  // Other bytes under the same key: kept out; the later expiry is taken.
  ASSERT_TRUE(cache_->Insert(keys[0], std::nullopt, Payload(5000, 2), t0 + 120'000).ok());
  // A shorter expiry never shortens a cached block's life.
  ASSERT_TRUE(cache_->Insert(keys[0], std::nullopt, Payload(5000, 3), t0 + 1'000).ok());
  EXPECT_EQ(cache_->Stats().refreshes, 2u);
  EXPECT_EQ(cache_->Stats().inserts, 1u);
  clock_.AdvanceMs(90'000);  // past the first expiry, before the refreshed one
  std::vector<std::byte> buf(5000);
  auto n = cache_->Read(keys[0], buf);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(buf, Payload(5000, 1));
  clock_.AdvanceMs(30'000);
  EXPECT_TRUE(cache_->Read(keys[0], buf).status().IsNotFound());
  // Once expired, the key takes new bytes.
  ASSERT_TRUE(cache_->Insert(keys[0], std::nullopt, Payload(5000, 4)).ok());
  ASSERT_TRUE(cache_->Read(keys[0], buf).ok());
  EXPECT_EQ(buf, Payload(5000, 4));
}

TEST_F(CacheManagerTest, VictimsOfTheSameSizeGoFirst) {
  Open({4});  // four 64 KiB pages, one page per slab
  auto k = Chain(6, 0);
  const size_t small = 30 << 10, big = 60 << 10;
  // Oldest first: a (small), b (big), c (small, shares a's page), d, e (big).
  ASSERT_TRUE(cache_->Insert(k[0], std::nullopt, Payload(small, 0)).ok());
  ASSERT_TRUE(cache_->Insert(k[1], std::nullopt, Payload(big, 1)).ok());
  ASSERT_TRUE(cache_->Insert(k[2], std::nullopt, Payload(small, 2)).ok());
  ASSERT_TRUE(cache_->Insert(k[3], std::nullopt, Payload(big, 3)).ok());
  ASSERT_TRUE(cache_->Insert(k[4], std::nullopt, Payload(big, 4)).ok());
  // A big block evicts the oldest big one (b), not the older small a, whose
  // freed half page could not hold it.
  ASSERT_TRUE(cache_->Insert(k[5], std::nullopt, Payload(big, 5)).ok());
  EXPECT_EQ(cache_->Stats().drops, 1u);
  EXPECT_TRUE(cache_->Find(k[0]).ok());
  EXPECT_FALSE(cache_->Find(k[1]).ok());
}

TEST_F(CacheManagerTest, ConcurrentUseNeverReturnsWrongBytesOrLeaksCopies) {
  Open({6, 12});  // small tiers: constant demotion and eviction
  std::vector<BlockKey> keys = Chain(64, 0);
  auto payload_of = [&](size_t i) { return Payload(20'000 + (i % 3) * 20'000, uint8_t(i)); };
  std::atomic<bool> wrong{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<uint32_t>(t));
      std::vector<std::byte> buf(60'000);
      for (int step = 0; step < 3000; ++step) {
        const size_t i = rng() % keys.size();
        switch (rng() % 4) {
          case 0:
          case 1:
            (void)cache_->Insert(keys[i], std::nullopt, payload_of(i));
            break;
          case 2: {
            auto n = cache_->Read(keys[i], buf);
            if (n.ok() && std::vector<std::byte>(buf.begin(), buf.begin() + *n) != payload_of(i)) {
              wrong = true;
            }
            break;
          }
          case 3:
            (void)cache_->Erase(keys[i]);
            break;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_FALSE(wrong.load());
  // At rest every stored copy is indexed and every indexed block is stored once.
  CacheStats s = cache_->Stats();
  EXPECT_EQ(s.tiers[0].blocks + s.tiers[1].blocks, s.indexed_blocks);
  for (size_t i = 0; i < keys.size(); ++i) {
    std::vector<std::byte> buf(60'000);
    auto n = cache_->Read(keys[i], buf);
    if (n.ok()) {
      EXPECT_EQ(std::vector<std::byte>(buf.begin(), buf.begin() + *n), payload_of(i)) << i;
    }
  }
}

// Faults below the cache: a clear error and a counter, no crash, and the rest
// of the cache keeps serving.
class CacheManagerFaultTest : public CacheManagerTest {
 protected:
  // DRAM tiers of the given sizes (in pages); tier `faulty` sits behind a
  // fault injector.
  void OpenFaulty(std::vector<uint64_t> pages_per_tier, size_t faulty) {
    std::vector<TierSlot> slots;
    for (uint64_t pages : pages_per_tier) {
      DramTierOptions o;
      o.capacity_bytes = pages * kPage;
      o.page_bytes = kPage;
      o.clock = &clock_;
      o.read_bytes_per_s = o.write_bytes_per_s = 1e9;
      auto tier = OpenDramTier(o);
      ASSERT_TRUE(tier.ok());
      slots.push_back({std::move(*tier), NewLruPolicy()});
    }
    auto injector = std::make_unique<FaultInjectionTier>(std::move(slots[faulty].tier));
    faults_ = injector.get();
    slots[faulty].tier = std::move(injector);
    auto m = CacheManager::Open(std::move(slots), Options());
    ASSERT_TRUE(m.ok());
    cache_ = std::move(*m);
  }
  FaultInjectionTier* faults_ = nullptr;  // owned by cache_
};

TEST_F(CacheManagerFaultTest, AFullDeviceBelowMeansDropsNotFailures) {
  OpenFaulty({2, 16}, 1);
  faults_->FailWrites(Status::ResourceExhausted("device full (injected)"));
  auto keys = Chain(5);
  ASSERT_TRUE(InsertChain(keys, 60 << 10).ok()) << "inserts keep working";
  CacheStats s = cache_->Stats();
  EXPECT_EQ(s.demotion_failures, 3u);
  EXPECT_EQ(s.drops, 3u);
  EXPECT_EQ(s.tiers[1].blocks, 0u);
  EXPECT_EQ(s.tiers[1].io_errors, 3u);
  std::vector<std::byte> buf(60 << 10);
  ASSERT_TRUE(cache_->Read(keys[4], buf).ok());
  EXPECT_EQ(buf, Payload(60 << 10, 4));
  faults_->Clear();  // the device has room again: demotion resumes
  auto more = Chain(1, 9000);
  ASSERT_TRUE(InsertChain(more, 60 << 10).ok());
  EXPECT_EQ(cache_->Stats().demotions, 1u);
}

TEST_F(CacheManagerFaultTest, AReadErrorIsReportedWithNoBytesAndTheBlockStays) {
  OpenFaulty({2, 16}, 1);
  auto keys = Chain(3);
  ASSERT_TRUE(InsertChain(keys, 60 << 10).ok());
  // Leaves go first: the oldest leaf, block 1, was demoted (the root stays).
  ASSERT_EQ(cache_->Find(keys[1])->tier, 1u);
  ASSERT_EQ(cache_->Find(keys[0])->tier, 0u);
  faults_->FailReads(Status::IOError("read error (injected)"), 1);
  std::vector<std::byte> buf(60 << 10, std::byte{0xee});
  auto r = cache_->Read(keys[1], buf);
  EXPECT_EQ(r.status().code(), StatusCode::kIOError) << r.status();
  EXPECT_EQ(buf, std::vector<std::byte>(60 << 10, std::byte{0xee})) << "no bytes on an error";
  // A transient error keeps the block; the next read succeeds.
  auto again = cache_->Read(keys[1], buf);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(buf, Payload(60 << 10, 1));
}

TEST_F(CacheManagerFaultTest, AWriteErrorOnTopFailsTheInsertAndIndexesNothing) {
  OpenFaulty({4}, 0);
  auto keys = Chain(2);
  ASSERT_TRUE(InsertChain({keys[0]}, 1000).ok());
  faults_->FailWrites(Status::IOError("write error (injected)"), 1);
  Status s = cache_->Insert(keys[1], keys[0], Payload(1000, 1));
  EXPECT_EQ(s.code(), StatusCode::kIOError) << s;
  EXPECT_NE(s.message().find("injected"), std::string::npos);
  EXPECT_TRUE(cache_->Find(keys[1]).status().IsNotFound());
  EXPECT_EQ(cache_->Stats().insert_failures, 1u);
  EXPECT_EQ(cache_->Lookup(keys).blocks, 1u);
  EXPECT_TRUE(cache_->Insert(keys[1], keys[0], Payload(1000, 1)).ok());  // the fault passed
  EXPECT_EQ(cache_->Lookup(keys).blocks, 2u);
}

// A tier whose disk is full answers kUnavailable ("device full", it takes
// writes again by itself): the block goes to the next tier instead, while a
// failing tier (kIOError) fails the insert.
TEST_F(CacheManagerFaultTest, AnUnavailableTierPassesTheBlockToTheNext) {
  OpenFaulty({4, 16}, 0);
  auto keys = Chain(3);
  faults_->FailWrites(Status::IOError("write error (injected)"), 1);
  EXPECT_EQ(cache_->Insert(keys[0], std::nullopt, Payload(1000, 0)).code(), StatusCode::kIOError)
      << "the first tier is the one tried first";
  faults_->FailWrites(Status::Unavailable("device full (injected)"));
  ASSERT_TRUE(cache_->Insert(keys[0], std::nullopt, Payload(1000, 0)).ok());
  EXPECT_EQ(cache_->Find(keys[0])->tier, 1u);
  std::vector<std::byte> buf(1000);
  ASSERT_TRUE(cache_->Read(keys[0], buf).ok());
  EXPECT_EQ(buf, Payload(1000, 0));
  faults_->Clear();
  ASSERT_TRUE(cache_->Insert(keys[1], keys[0], Payload(1000, 1)).ok());
  EXPECT_EQ(cache_->Find(keys[1])->tier, 0u) << "the tier takes blocks again once it can";
}

TEST_F(CacheManagerTest, SmallBufferIsRefusedWithTheNeededSize) {
  Open({8});
  auto keys = Chain(1);
  ASSERT_TRUE(InsertChain(keys, 1000).ok());
  std::vector<std::byte> buf(999);
  auto r = cache_->Read(keys[0], buf);
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(r.status().message().find("1000"), std::string::npos);
}

}  // namespace
}  // namespace kvtier
