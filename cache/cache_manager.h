// CacheManager: the block cache over an ordered stack of tiers.
//
// It owns the BlockIndex, the tiers (tier 0 is the top, the fastest) and one
// EvictionPolicy per tier. New blocks go to the top tier; when a tier is full
// its policy names victims, which are demoted to the next tier down
// (skipping a tier that takes no block that large), or dropped from the last
// (a dropped block is rematerialized by prefill when it is next needed). The
// drain-time placement of DESIGN §4 will replace this simple chain; the
// interface stays.
//
// Thread-safe. Tier I/O runs without the manager's lock; only the policies
// are serialised (under mu_). Races between concurrent operations on the same
// block resolve to a miss, never to wrong bytes: a block is readable only
// after its payload is stored and verified, and every read is checksummed by
// the tier.
//
// Lookup order and leaves: a hit run is touched deepest block first, so the
// root of a prefix is the most recently used and leaves go first; victims with
// cached children are taken only when no leaf is left.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "cache/block_index.h"
#include "cache/eviction_policy.h"
#include "common/clock.h"
#include "tiers/tier.h"

namespace kvtier {

struct TierSlot {
  std::unique_ptr<Tier> tier;
  std::unique_ptr<EvictionPolicy> policy;
};

struct CacheManagerOptions {
  Clock* clock = SystemClock();  // expiry and recency; not owned
  int max_eviction_rounds = 16;  // make-room attempts per write before giving up
};

struct PrefixHit {
  size_t blocks = 0;                // leading blocks present
  std::vector<IndexEntry> entries;  // one per hit block: tier, size, expiry ...
  std::vector<PinHandle> pins;      // one per hit block, when Lookup pinned them
};

struct CacheStats {
  std::vector<TierInfo> tiers;
  uint64_t indexed_blocks = 0;
  uint64_t lookups = 0;
  uint64_t lookup_blocks = 0;      // keys asked about
  uint64_t lookup_hit_blocks = 0;  // keys found in a leading run
  uint64_t reads = 0;
  uint64_t read_hits = 0;
  uint64_t read_misses = 0;
  uint64_t inserts = 0;
  uint64_t refreshes = 0;  // inserts of a cached key: bytes kept, expiry extended
  uint64_t insert_bytes = 0;
  uint64_t insert_failures = 0;
  uint64_t demotions = 0;          // blocks moved one tier down
  uint64_t demotion_failures = 0;  // victims the tier below refused (dropped instead)
  uint64_t drops = 0;              // blocks evicted from the last tier
  uint64_t expired = 0;            // blocks removed because their TTL passed
  uint64_t corruption_misses = 0;  // reads that failed a checksum
};

class CacheManager {
 public:
  // Requires at least one tier, each with a policy. Recovers the blocks that
  // persistent tiers announce into the index.
  static Result<std::unique_ptr<CacheManager>> Open(std::vector<TierSlot> tiers,
                                                    const CacheManagerOptions& options);
  CacheManager(const CacheManager&) = delete;
  CacheManager& operator=(const CacheManager&) = delete;

  // The longest run of keys, from the first, that are cached and unexpired.
  // With `pin`, every hit block is pinned until the returned handles go.
  PrefixHit Lookup(std::span<const BlockKey> keys, bool pin = false);

  // Stores a block with its parent's key (nullopt for the first block of a
  // prefix). A cached block is immutable: inserting a key that is cached and
  // unexpired keeps its bytes (the key names the content) and only extends
  // its expiry to the later of the two, as a read would refresh it. Errors:
  // kInvalidArgument (empty, already expired), kResourceExhausted (larger than
  // a tier accepts, or no room that eviction can make), kRetry (an expired
  // copy is still pinned).
  Status Insert(const BlockKey& key, const std::optional<BlockKey>& parent,
                std::span<const std::byte> payload, int64_t expiry_ms = kNoExpiry);

  // The entry of a cached, unexpired block; kNotFound otherwise.
  Result<IndexEntry> Find(const BlockKey& key) const;
  // Copies a block into dest and returns its size. kNotFound on a miss
  // (including a checksum failure, which also drops the block);
  // kResourceExhausted when dest is smaller than the block.
  Result<uint64_t> Read(const BlockKey& key, std::span<std::byte> dest);
  // Removes a block from the cache. kNotFound if absent, kRetry if pinned.
  Status Erase(const BlockKey& key);

  CacheStats Stats() const;
  size_t tier_count() const { return tiers_.size(); }
  const std::string& tier_name(size_t t) const { return tier_names_[t]; }

 private:
  CacheManager(std::vector<TierSlot> tiers, const CacheManagerOptions& options);

  // Writes into tier t, making room by eviction as needed.
  Status StoreInTier(size_t t, const BlockKey& key, std::span<const std::byte> payload,
                     int64_t expiry_ms);
  // Evicts victims of tier t until at least `bytes` are freed or none is left;
  // returns the bytes freed. Victims of the same size go first (their space
  // is reusable as it is, whatever the tier's allocator), then any leaf, then
  // any unpinned block.
  uint64_t MakeRoom(size_t t, uint64_t bytes);
  // Extends the expiry of a cached block in its tier and the index.
  void Refresh(const BlockKey& key, const IndexEntry& e, int64_t expiry_ms);
  // Moves one victim of tier t to the next tier down that takes a block of
  // its size, or drops it when there is none. Returns false if the block
  // could not be evicted (pinned, gone).
  bool Evict(size_t t, const BlockKey& key);
  // The first tier below t whose max_block_bytes and capacity admit `bytes`.
  std::optional<size_t> TierBelowFor(size_t t, uint64_t bytes) const;
  // Removes a block from the index, its tier and its policy; kRetry if pinned.
  Status Drop(const BlockKey& key);

  const CacheManagerOptions options_;
  std::vector<TierSlot> tiers_;  // the policies are guarded by mu_
  std::vector<std::string> tier_names_;
  BlockIndex index_;
  mutable std::mutex mu_;

  struct Counters {
    std::atomic<uint64_t> lookups{0}, lookup_blocks{0}, lookup_hit_blocks{0};
    std::atomic<uint64_t> reads{0}, read_hits{0}, read_misses{0};
    std::atomic<uint64_t> inserts{0}, refreshes{0}, insert_bytes{0}, insert_failures{0};
    std::atomic<uint64_t> demotions{0}, demotion_failures{0}, drops{0}, expired{0},
        corruption_misses{0};
  };
  Counters counters_;
};

}  // namespace kvtier
