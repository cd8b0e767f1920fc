// BlockIndex: which blocks are cached, where, and in what state.
//
// Maps a BlockKey to its IndexEntry (tier, size, pins, expiry, last access,
// cached children). Thread-safe: the map is sharded, each shard under its own
// mutex; no call holds two shard locks at once.
//
// Children: a block inserted with its parent's key counts as a cached child of
// the parent while both are present. The count is a hint for eviction order
// (a block with cached children is an inner node and should outlive its
// leaves), not an invariant: a child published before its parent is not
// counted.
//
// Pins: a pinned block may not be removed (Remove answers kRetry). Pins are
// held by move-only PinHandles that unpin in their destructor; the index must
// outlive its handles.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "common/block_key.h"
#include "common/clock.h"
#include "common/status.h"

namespace kvtier {

// Why a block is where it is: the last placement decision taken for it.
enum class DecisionKind : uint8_t {
  kNone = 0,
  kPlaced,     // written on insert to the cheapest tier with room
  kPromoted,   // moved up after a hit, its next use expected sooner
  kDemoted,    // moved down as a victim of a full tier
  kRecovered,  // found in a persistent tier after a restart
  kShared,     // found in a shared tier (another node wrote it) after an index miss
};
const char* DecisionKindName(DecisionKind kind);

struct Decision {
  DecisionKind kind = DecisionKind::kNone;
  uint8_t from_tier = 0;  // the tier it left (promoted, demoted)
  float idle_s = 0;       // the expected idle time T the costs were compared at
  int64_t at_ms = 0;      // when
};

struct IndexEntry {
  uint32_t tier = 0;                     // position in the tier stack (0 = top)
  uint64_t bytes = 0;                    // payload size
  int64_t expiry_ms = kNoExpiry;         // absolute, Unix ms
  int64_t ttl_ms = 0;                    // a read pushes expiry to now + ttl; 0 = fixed expiry
  int64_t last_access_ms = 0;            // last insert, lookup hit or read
  uint32_t pins = 0;                     // running requests using the block
  uint32_t cached_children = 0;          // present blocks whose parent this is
  uint32_t tokens = 0;                   // tokens the block holds; 0 = unknown
  uint64_t stream = 0;                   // namespace fingerprint, for reuse estimates
  double remat_flops = 0;                // prefill FLOPs to recompute it; 0 = unknown
  int64_t queued_expiry_ms = kNoExpiry;  // the expiry the sweep queue holds for it
  Decision decision;                     // the last placement decision
  std::optional<BlockKey> parent;
  // The block's place in its prefix chain as the index saw it: 0 without a
  // parent, the parent's depth + 1 when the parent was present at insert,
  // 1 when it was not (a hint for prefix-aware policies, not an invariant).
  uint32_t depth = 0;
  uint32_t uses = 0;  // lookup hits since it was inserted (saturating)
};

class BlockIndex;

class PinHandle {
 public:
  PinHandle() = default;
  PinHandle(PinHandle&& o) noexcept : index_(o.index_), key_(o.key_) { o.index_ = nullptr; }
  PinHandle& operator=(PinHandle&& o) noexcept;
  PinHandle(const PinHandle&) = delete;
  PinHandle& operator=(const PinHandle&) = delete;
  ~PinHandle() { Reset(); }

  bool valid() const { return index_ != nullptr; }
  const BlockKey& key() const { return key_; }
  void Reset();  // unpins now (the destructor does the same)

 private:
  friend class BlockIndex;
  PinHandle(BlockIndex* index, const BlockKey& key) : index_(index), key_(key) {}
  BlockIndex* index_ = nullptr;
  BlockKey key_;
};

class BlockIndex {
 public:
  explicit BlockIndex(Clock* clock);
  BlockIndex(const BlockIndex&) = delete;
  BlockIndex& operator=(const BlockIndex&) = delete;

  // Inserts `key` or updates where it lives. Pins and children survive an
  // update. Returns the tier the key was in before, nullopt when it is new.
  std::optional<uint32_t> Upsert(const BlockKey& key, const std::optional<BlockKey>& parent,
                                 uint32_t tier, uint64_t bytes, int64_t expiry_ms);
  // The same, taking every field the caller owns from `fields` (tier, bytes,
  // expiry, ttl, tokens, stream, remat_flops, queued_expiry_ms, decision, and
  // parent when the key is new); pins, children and last access are the
  // index's own.
  std::optional<uint32_t> Upsert(const BlockKey& key, const IndexEntry& fields);
  // Runs fn on the entry of a present key under its shard lock; false if
  // absent. fn must not call back into the index.
  bool Modify(const BlockKey& key, const std::function<void(IndexEntry&)>& fn);
  // Sets the expiry of a present block; false if absent.
  bool SetExpiry(const BlockKey& key, int64_t expiry_ms);
  // Moves a present block to another tier; false if absent.
  bool SetTier(const BlockKey& key, uint32_t tier);
  // Removes `key` and returns its entry as it was at that moment (so callers
  // erase the copy from the tier it was really in, even if it moved since they
  // looked): kNotFound if absent, kRetry if pinned. The parent loses a child.
  Result<IndexEntry> Remove(const BlockKey& key);
  // The same, but only while `only_if` holds for the entry (kNotFound if not).
  Result<IndexEntry> RemoveIf(const BlockKey& key,
                              const std::function<bool(const IndexEntry&)>& only_if);

  // A copy of the entry, or nullopt. Expired entries are returned as they are.
  std::optional<IndexEntry> Get(const BlockKey& key) const;
  // The number of leading keys that are present and not expired; their last
  // access becomes now. With `entries`, a copy of each hit entry as it was
  // before this access is appended.
  size_t LongestPrefix(std::span<const BlockKey> keys, std::vector<IndexEntry>* entries = nullptr);
  // Marks a present block as used now.
  void Touch(const BlockKey& key);
  // Pins a present, unexpired block; an invalid handle if it is not.
  PinHandle Pin(const BlockKey& key);
  // True when the block is present, unpinned and (if leaves_only) has no
  // cached children: what an eviction may take.
  bool Evictable(const BlockKey& key, bool leaves_only) const;
  // Every entry that has expired by now and is not pinned (for sweeps).
  std::vector<BlockKey> Expired(size_t limit) const;

  size_t size() const;

 private:
  friend class PinHandle;
  static constexpr size_t kShards = 64;
  struct Shard {
    mutable std::mutex mu;
    std::unordered_map<BlockKey, IndexEntry, BlockKeyHash> map;  // guarded by mu
  };
  // The top bits of the keyed hash pick the shard; the map uses the low bits.
  Shard& ShardOf(const BlockKey& k) { return shards_[(BlockKeyHashValue(k) >> 58) % kShards]; }
  const Shard& ShardOf(const BlockKey& k) const {
    return shards_[(BlockKeyHashValue(k) >> 58) % kShards];
  }
  void Unpin(const BlockKey& key);
  // Returns the parent's depth, nullopt when it is absent.
  std::optional<uint32_t> AdjustChildren(const BlockKey& parent, int delta);
  // Runs fn(entry) under the key's shard lock, entry being null when the key
  // is absent, and returns what fn returns.
  template <typename Fn>
  auto WithEntry(const BlockKey& key, Fn&& fn) {
    Shard& s = ShardOf(key);
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.map.find(key);
    return fn(it == s.map.end() ? nullptr : &it->second);
  }
  template <typename Fn>
  auto WithEntry(const BlockKey& key, Fn&& fn) const {
    const Shard& s = ShardOf(key);
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.map.find(key);
    return fn(it == s.map.end() ? nullptr : &it->second);
  }

  Clock* const clock_;
  std::array<Shard, kShards> shards_;
};

}  // namespace kvtier
