// CacheManager: the block cache over an ordered stack of tiers, placing each
// block with the drain-time cost model (DESIGN §4).
//
// It owns the BlockIndex, the tiers (tier 0 is the top, the fastest), one
// EvictionPolicy per tier and the cost model built from the tiers' capacity,
// measured bandwidth and configured cost rate. Decisions:
//  - insert: the block goes to the tier of least expected cost for its
//    expected idle time T (cache/placement.h) among the tiers that take a
//    block of its size and return it within the fetch budget; a tier that
//    cannot make room (everything pinned) passes it to the next cheapest.
//    An insert never drops a block for being cheap to recompute: a writer
//    that stores a block wants it, and the top tiers hold it while it is hot.
//  - pressure: a full tier first frees expired blocks, then asks its policy
//    for victims (leaves first, see below) and re-places each: demoted to the
//    cheapest tier below that takes it, or dropped when recomputing it is
//    cheaper than any of them ("dropped for remat"), or when no tier below
//    takes it.
//  - hit: a lookup hit is a use. It feeds the namespace's reuse estimate,
//    refreshes a block's TTL, and a block whose cheapest home for its next
//    idle time is now a higher tier is promoted there, in the background
//    (copy, switch the index, free the old copy).
//  - expiry: a background sweep frees expired blocks in every tier, a few at
//    a time, without holding any lock across tier I/O.
//  - age: the same sweep moves a block down, or drops it for recompute, once
//    it has waited long enough since its last use that waiting there costs
//    more than the move would save (ReviewIdle, the ski-rental rule; "aged
//    out"). Holding a block that is not read again stops costing, without a
//    TTL and without a full tier to push it out.
// Every block remembers its last decision; Explain recomputes the costs that
// decision compared.
//
// Thread-safe. Tier I/O runs without the manager's locks; the policies are
// serialised under mu_, the sweep queue under expiry_mu_, the promotion queue
// under promote_mu_. Races between concurrent operations on the same block
// resolve to a miss, never to wrong bytes: a block is readable only after its
// payload is stored and verified, and every read is checksummed by the tier.
// A block moves (promotion, demotion) by copy, index switch, then erase, and
// a reader that finds the old copy gone retries at the new one; pinned
// blocks are never demoted, dropped or expired under a running request.
//
// Lookup order and leaves: a hit run is touched deepest block first, so the
// root of a prefix is the most recently used and leaves go first; victims with
// cached children are taken only when no leaf is left.
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <queue>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "cache/admission.h"
#include "cache/block_index.h"
#include "cache/eviction_policy.h"
#include "cache/mrc.h"
#include "cache/placement.h"
#include "common/clock.h"
#include "tiers/tier.h"

namespace kvtier {

struct TierSlot {
  std::unique_ptr<Tier> tier;
  std::unique_ptr<EvictionPolicy> policy;
  double cost_per_s = 0;  // P_t: $/s for the whole tier (0 = free: placement by position)
  // Whether a new block may take a resident block's place in this tier when
  // it is full (cache/admission.h); null admits every block. A block a tier
  // refuses goes to the next cheapest tier; one every tier refuses is not
  // stored (CacheStats::admission_refusals), which is not an error.
  std::unique_ptr<AdmissionFilter> admission = nullptr;
};

struct CacheManagerOptions {
  Clock* clock = SystemClock();  // expiry and recency; not owned
  int max_eviction_rounds = 16;  // make-room attempts per write before giving up
  PlacementOptions placement;    // cost model figures and reuse estimation
  // Background work. With 0 / false nothing runs on its own thread: tests
  // call SweepExpired and RunPromotions themselves.
  int64_t sweep_interval_ms = 1000;     // period of the expiry sweep
  bool background_promotion = true;     // promote hits on a worker thread
  size_t max_queued_promotions = 4096;  // more are not promoted (counted as skipped)
  // A shared tier (DESIGN §10) gets a copy of every block inserted into a
  // local tier, so other nodes find it: on a worker thread, or with false,
  // only when RunSharedWrites is called (tests).
  bool background_shared_writes = true;
  size_t max_queued_shared_writes = 1024;  // more are not shared (counted as skipped)
  // The longest a shared copy lives (its expiry is the block's, capped at
  // this from the write): a block without an expiry must not stay forever
  // in a store no one node manages. 0: no cap.
  int64_t shared_max_ttl_ms = 3'600'000;
  MrcOptions mrc;  // the miss-ratio curve's sample (MissRatioCurve)
};

// What a writer knows of a block besides its bytes.
struct BlockMeta {
  std::optional<BlockKey> parent;  // the previous block of the prefix; nullopt for the first
  int64_t ttl_ms = 0;              // > 0: expires ttl after the last use (reads refresh it)
  // Unix ms. With ttl_ms == 0: a fixed expiry. With a TTL: the end of the
  // first lifetime when the writer dates it (else now + ttl_ms).
  int64_t expiry_ms = kNoExpiry;
  uint32_t tokens = 0;     // tokens the block holds; 0 = unknown
  uint64_t stream = 0;     // namespace fingerprint: blocks sharing reuse statistics
  double remat_flops = 0;  // prefill FLOPs to recompute it; 0 = unknown (never dropped)
};

struct PrefixHit {
  size_t blocks = 0;                // leading blocks present
  std::vector<IndexEntry> entries;  // one per hit block: tier, size, expiry ...
  std::vector<PinHandle> pins;      // one per hit block, when Lookup pinned them
};

// What one tier served and lost, for the per-tier metrics. Tokens count
// only blocks written with their token count (IndexEntry::tokens).
struct TierTraffic {
  uint64_t hit_blocks = 0;  // blocks of lookups' leading runs found in this tier
  uint64_t hit_tokens = 0;
  uint64_t read_blocks = 0;  // blocks read from this tier
  uint64_t read_bytes = 0;
  uint64_t read_tokens = 0;
  // Blocks that left this tier, by why (CacheStats's totals of the same).
  uint64_t demoted = 0;
  uint64_t dropped_for_remat = 0;
  uint64_t dropped = 0;
  uint64_t expired = 0;
};

// The TTL a block was written with, as the expiry metrics group them: the
// two cache_control durations, any other sliding TTL, and a fixed expiry.
enum class ExpiryClass { k5m, k1h, kOther, kFixed };
inline constexpr size_t kNumExpiryClasses = 4;
ExpiryClass ExpiryClassOf(int64_t ttl_ms);
std::string_view ExpiryClassName(ExpiryClass c);  // "5m", "1h", "other", "fixed"

struct CacheStats {
  std::vector<TierInfo> tiers;
  std::vector<TierTraffic> traffic;                          // per tier, in the order of `tiers`
  std::array<uint64_t, kNumExpiryClasses> expired_by_ttl{};  // indexed by ExpiryClass
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
  // Inserts no tier's admission filter took (not stored; not failures).
  uint64_t admission_refusals = 0;
  // Placement decisions by kind.
  uint64_t placed = 0;             // inserts, each to its cheapest tier with room
  uint64_t promotions = 0;         // blocks moved up after a hit
  uint64_t promotion_skips = 0;    // promotions not done (gone, moved, no room, queue full)
  uint64_t demotions = 0;          // victims moved down
  uint64_t demotion_failures = 0;  // victims no tier below would take (dropped instead)
  uint64_t drops = 0;              // victims dropped with no tier below taking them (none, or
                                   // its demotion failed: also in demotion_failures)
  uint64_t remat_drops = 0;        // victims dropped because recomputing is cheaper
  // Of demotions and remat_drops: blocks moved down or dropped by the idle
  // review, their wait having made a lower tier or recompute the cheaper home.
  uint64_t aged_out = 0;
  uint64_t expired = 0;            // blocks removed because their TTL passed
  uint64_t corruption_misses = 0;  // reads that failed a checksum
  // Shared tiers (DESIGN §10): look-ups that asked them past the index, and
  // blocks found there that another node wrote (joined the index).
  uint64_t shared_stats = 0;
  uint64_t shared_adopted = 0;
  uint64_t shared_writes = 0;          // copies written to a shared tier
  uint64_t shared_write_failures = 0;  // copies a shared tier refused or failed
  uint64_t shared_write_skips = 0;     // copies not made: the queue was full
};

// Where a block is and why (kvtier explain).
struct BlockExplanation {
  IndexEntry entry;
  std::string tier_name;
  PlacementCosts decision_costs;           // the costs its last decision compared (at its T)
  std::optional<double> reuse_estimate_s;  // of its namespace and depth, now
  double reuse_probability = 1;            // that it is used again, now
  double expected_idle_s = 0;              // T if it were decided now
  PlacementCosts costs_now;                // the costs at that T
  std::vector<std::string> tier_names;
  std::vector<double> drain_time_s;  // D_t per tier
};

class CacheManager {
 public:
  // Requires at least one tier, each with a policy. Recovers the blocks that
  // persistent tiers announce into the index, and starts the background work.
  static Result<std::unique_ptr<CacheManager>> Open(std::vector<TierSlot> tiers,
                                                    const CacheManagerOptions& options);
  ~CacheManager();
  CacheManager(const CacheManager&) = delete;
  CacheManager& operator=(const CacheManager&) = delete;

  // The longest run of keys, from the first, that are cached and unexpired.
  // A hit is a use (see above). With `pin`, every hit block is pinned until
  // the returned handles go.
  PrefixHit Lookup(std::span<const BlockKey> keys, bool pin = false);
  // The same run, without using it: no recency, no TTL refresh, no policy or
  // statistics update (an engine's connector asking what is there). With
  // `pin`, as Lookup.
  PrefixHit Probe(std::span<const BlockKey> keys, bool pin = false);

  // Stores a block. A cached block is immutable: inserting a key that is
  // cached and unexpired keeps its bytes (the key names the content) and only
  // extends its expiry, as a read would. Errors: kInvalidArgument (empty,
  // already expired), kResourceExhausted (larger than any tier accepts, or no
  // room that eviction can make), kRetry (an expired copy is still pinned).
  Status Insert(const BlockKey& key, std::span<const std::byte> payload, const BlockMeta& meta);
  // Shorthand: a block with a fixed expiry and nothing else known.
  Status Insert(const BlockKey& key, const std::optional<BlockKey>& parent,
                std::span<const std::byte> payload, int64_t expiry_ms = kNoExpiry);

  // The entry of a cached, unexpired block; kNotFound otherwise.
  Result<IndexEntry> Find(const BlockKey& key) const;
  // Find, and when the index misses, the shared tiers too (DESIGN §10): a
  // block another node wrote there joins the index. The block API's reads
  // and existence checks use it; Lookup and Probe do the same for a run.
  Result<IndexEntry> FindAnywhere(const BlockKey& key);
  // True when a tier is shared (DESIGN §10): a look-up may then ask other
  // nodes (network I/O) past this node's index.
  bool has_shared_tiers() const { return !shared_tiers_.empty(); }
  // Copies a block into dest and returns its size; refreshes its TTL.
  // kNotFound on a miss (including a checksum failure, which also drops the
  // block); kResourceExhausted when dest is smaller than the block.
  // `is_use`: this read is the block's use (an engine's load after a Probe,
  // which is not one), so the time since its last use feeds the reuse
  // estimate, as a Lookup's hit does; otherwise a read is only data movement
  // after a Lookup that already counted.
  // With `payload_xxh3`, also the payload's XXH3-64 (the one its tier checked
  // it against where the tier gives it, else hashed here).
  Result<uint64_t> Read(const BlockKey& key, std::span<std::byte> dest, bool is_use = false,
                        uint64_t* payload_xxh3 = nullptr);
  // Read of many blocks at once: each tier gets its blocks in one batched
  // Read, so a flash tier has them all in flight together instead of one
  // after another. Result i is what Read(keys[i], dests[i], is_use) would
  // answer (a block found moved is read again where it went).
  std::vector<Result<uint64_t>> ReadBatch(std::span<const BlockKey> keys,
                                          std::span<const std::span<std::byte>> dests,
                                          bool is_use = false);
  // Removes a block from the cache. kNotFound if absent, kRetry if pinned.
  Status Erase(const BlockKey& key);

  // Frees up to `limit` expired, unpinned blocks in every tier; returns how
  // many. The background sweep calls it; so does a full tier.
  size_t SweepExpired(size_t limit = 1024);
  // Looks again at up to `limit` blocks whose wait since their last use has
  // reached the point where a tier below, or dropping them for recompute,
  // would be cheaper than where they are (rent or buy: a block that has
  // waited T is priced as if it waits T more and comes back; the crossings
  // of those cost lines are computed when a block is placed or looked at,
  // so a block is looked at about once per move). Each such block is
  // demoted, or dropped if it is a leaf without an expiry (a TTL is its
  // writer's promise; the expiry sweep ends it). Pinned or busy blocks are looked at
  // again later. Returns how many blocks it moved or dropped; `looked_at`,
  // how many it looked at. The background sweep calls it.
  size_t ReviewIdle(size_t limit = 1024, size_t* looked_at = nullptr);
  // Runs the queued promotions on the calling thread; returns how many moved.
  size_t RunPromotions();
  // Writes the queued shared copies on the calling thread; returns how many
  // were stored.
  size_t RunSharedWrites();

  // Where a cached block is, and the costs behind it. kNotFound if absent.
  Result<BlockExplanation> Explain(const BlockKey& key) const;

  CacheStats Stats() const;
  // The LRU miss-ratio curve of the block uses so far (cache/mrc.h): a
  // lookup's hit, a read that is a use, and an insert (a lookup's miss is
  // counted when its block is stored, so the two count once). Sizes are
  // bytes of the whole stack: the hit ratio at the capacity of tiers 0..t
  // together is what an LRU cache of that size would give.
  MrcSnapshot MissRatioCurve() const { return mrc_.Snapshot(); }

  // Keys share their locks in stripes; a key's stripe (for tests).
  static constexpr size_t kKeyLockStripes = 1024;
  static size_t KeyLockStripe(const BlockKey& key) {
    return BlockKeyHashValue(key) % kKeyLockStripes;
  }
  size_t tier_count() const { return tiers_.size(); }
  const std::string& tier_name(size_t t) const { return tier_names_[t]; }
  const CostModel& cost_model() const { return model_; }

 private:
  CacheManager(std::vector<TierSlot> tiers, const CacheManagerOptions& options);
  void StartBackground();
  void StopBackground();

  // Can tier t hold a block of `bytes` and return it within the fetch budget?
  bool TierTakes(size_t t, uint64_t bytes) const;
  // T for a block, now: its namespace's reuse estimate capped by its TTL and
  // by the time it has left to live.
  double IdleFor(const IndexEntry& e, int64_t now_ms) const;
  // The costs of the tiers in [first, last) that take a block of e's size.
  PlacementCosts CostsFor(const IndexEntry& e, double idle_s, size_t first, size_t last) const;
  // The probability that the block is used again (its reuse class's, now).
  double ReuseProbabilityOf(const IndexEntry& e) const;
  // The tiers in [first, last) that take a block of `bytes`, cheapest first;
  // in stack order when any of them has no known cost.
  std::vector<size_t> Candidates(const PlacementCosts& costs, uint64_t bytes, size_t first,
                                 size_t last) const;
  // The policy's view of a block in tier t: its miss cost is what its best
  // home below t (or its recompute) would cost.
  PolicyBlock PolicyBlockFor(size_t t, const IndexEntry& e, int64_t now_ms) const;
  // What an admission filter is told of a block: its size and place in its chain.
  static PolicyBlock ChainBlockOf(const IndexEntry& e);

  // Writes into tier t, making room by eviction as needed. With `admit` (a
  // new block's reference), a full tier's admission filter decides first
  // whether the block may take a victim's place; `refused` tells when it
  // may not (and nothing was written).
  Status StoreInTier(size_t t, const BlockKey& key, std::span<const std::byte> payload,
                     int64_t expiry_ms, const BlockRef* admit = nullptr, bool* refused = nullptr);
  // Tells every tier's admission filter of a reference to a block (mu_ held);
  // `in_tier`: the tier holding it (a hit there), or SIZE_MAX for a miss.
  void RecordReferenceLocked(const BlockRef& ref, size_t in_tier);
  // A block left tier t: its policy and admission filter forget it (mu_ held).
  void ForgetLocked(size_t t, const BlockKey& key);
  // Frees expired blocks, then evicts victims of tier t until at least
  // `bytes` are freed or none is left; returns the bytes freed. Victims of the
  // same size go first (their space is reusable as it is, whatever the tier's
  // allocator), then any leaf, then any unpinned block. The first two passes
  // look only so far down the policy's order (a bounded search per victim).
  uint64_t MakeRoom(size_t t, uint64_t bytes, const BlockKey& incoming);
  // Re-places one victim of tier t (demote or drop); the caller holds the
  // key's lock. False if the block could not be evicted (pinned, gone).
  bool Evict(size_t t, const BlockKey& key);
  // A victim tier t's policy handed out that could not be taken goes back
  // into the policy, as a block used now.
  void ReinstateVictim(size_t t, const BlockKey& key, int64_t now_ms);
  // Copies a block from its tier `from` to tier `to` and switches the index;
  // the old copy is erased. False if it could not (gone, unreadable, no room).
  bool Move(const BlockKey& key, const IndexEntry& e, size_t to, DecisionKind kind, double idle_s);
  // A hit on a block: observe its reuse, refresh its TTL, queue a promotion.
  void OnUse(const BlockKey& key, const IndexEntry& before, int64_t now_ms, bool observe);
  // Extends the expiry of a cached block in its tier, the index and policy.
  void Refresh(const BlockKey& key, const IndexEntry& e, int64_t expiry_ms);
  // Removes a block from the index, its tier and its policy; kRetry if pinned.
  Status Drop(const BlockKey& key);
  Status DropLocked(const BlockKey& key);  // the same, the key's lock held
  // Read's steps around the tier's read: whether dest holds block `e`, and
  // the bookkeeping of the tier's answer `n` (a hit touches the block and
  // counts; a checksum failure drops it; a stale index entry is dropped);
  // nullopt when the block has moved to another tier since the look-up.
  static Status FitsIn(const BlockKey& key, const IndexEntry& e, std::span<const std::byte> dest);
  std::optional<Result<uint64_t>> FinishRead(const BlockKey& key, const IndexEntry& e,
                                             const Result<uint64_t>& n, bool is_use);
  // Schedules the sweep to look at a block when it would expire.
  void QueueExpiry(const BlockKey& key, int64_t expiry_ms);
  // The wait since its last use, at least `from_s`, at which a block would
  // be cheaper in a tier below its own or dropped than where it is (the
  // first crossing of the cost lines ReviewOne compares); infinite if never.
  double NextReviewAgeS(const IndexEntry& e, double from_s) const;
  // Whether the age review may drop a block (not only move it down).
  static bool AgingMayDrop(const IndexEntry& e);
  // The age below which the review never drops a block (it may move it):
  // its expected idle time, and at least the default idle time.
  double DropFloorS(const IndexEntry& e) const;
  // The reuse probability the age review prices a block with: its class's,
  // once settled (ReuseEstimator::SettledReuseProbability), else 1.
  double ReviewProbability(const IndexEntry& e) const;
  // A block the review dropped is remembered (a bounded FIFO of keys): if
  // it is written again, that was the use it would have had, and its class
  // observes it, so dropping blocks cannot teach the estimate that blocks
  // are not reused. Returns the ghost of `key`, forgetting it.
  struct AgedGhost {
    int64_t last_access_ms;
    uint64_t reuse_class;
    bool reused;
  };
  void RememberAgedOut(const BlockKey& key, const IndexEntry& e);
  std::optional<AgedGhost> TakeAgedGhost(const BlockKey& key);
  // Schedules ReviewIdle to look at a block at its next crossing, not before
  // `not_before_ms` (nor before kFirstReviewAgeMs after its last use).
  void QueueReview(const BlockKey& key, const IndexEntry& e, int64_t not_before_ms);
  // ReviewIdle's decision for one block: true when it moved or dropped it.
  bool ReviewOne(const BlockKey& key, int64_t now_ms);
  void QueuePromotion(const BlockKey& key, size_t to);
  // Enters a block found in tier `t` (not written through this manager)
  // into the index and the tier's policy.
  void Adopt(size_t t, const BlockKey& key, uint64_t bytes, int64_t expiry_ms, DecisionKind kind,
             int64_t now);
  // Asks the shared tiers about `keys` (at most kMaxSharedStat of them) and
  // adopts the leading run each holds; returns how many joined the index.
  size_t AdoptShared(std::span<const BlockKey> keys);
  static constexpr size_t kMaxSharedStat = 1024;
  std::vector<size_t> shared_tiers_;      // tiers whose TierInfo says shared, top first
  std::vector<bool> accepts_placements_;  // per tier, from its TierInfo

  // Every change to a key's index entry or its stored copies (insert, move,
  // refresh, drop, expiry) holds that key's lock, from a striped set; reads
  // take none. A thread holding one key's lock only try-locks another (a
  // victim), so no two threads wait on each other. Lock order: key lock,
  // then mu_ or expiry_mu_, then the index's shard locks.
  std::mutex& KeyLock(const BlockKey& key) { return key_locks_[KeyLockStripe(key)]; }
  std::array<std::mutex, kKeyLockStripes> key_locks_;

  const CacheManagerOptions options_;
  std::vector<TierSlot> tiers_;  // the policies are guarded by mu_
  std::vector<std::string> tier_names_;
  std::vector<uint64_t> max_block_bytes_;  // per tier, fixed when it opened
  std::vector<uint64_t> capacity_bytes_;   // per tier
  CostModel model_;
  ReuseEstimator reuse_;
  BlockIndex index_;
  MrcEstimator mrc_;  // thread-safe on its own
  mutable std::mutex mu_;

  // A block due at a time: the sweep's queues are min-heaps of these.
  struct TimedKey {
    int64_t at_ms;
    BlockKey key;
    bool operator>(const TimedKey& o) const { return at_ms > o.at_ms; }
  };
  using TimedKeyQueue = std::priority_queue<TimedKey, std::vector<TimedKey>, std::greater<>>;
  // Items of blocks that left early pile up in a queue: when they outnumber
  // the blocks, keeps only the items `live` accepts (the queue's lock held).
  void KeepLiveItems(TimedKeyQueue& queue, const std::function<bool(const TimedKey&)>& live) const;
  // Sweep queue: the earliest expiry first. A block has one live entry (the
  // one matching its queued_expiry_ms); others are stale and skipped.
  std::mutex expiry_mu_;
  TimedKeyQueue expiry_queue_;
  // Review queue (ReviewIdle): the earliest due first, under review_mu_. An
  // item for a block that has gone since is skipped; a block re-inserted may
  // have two, which only costs a second look.
  std::mutex review_mu_;
  TimedKeyQueue review_queue_;
  static constexpr size_t kMaxAgedGhosts = 1 << 16;
  std::mutex ghost_mu_;
  std::unordered_map<BlockKey, AgedGhost, BlockKeyHash> aged_ghosts_;  // guarded by ghost_mu_
  std::deque<BlockKey> aged_ghost_order_;  // oldest first, guarded by ghost_mu_

  struct Promotion {
    BlockKey key;
    size_t to;
  };
  std::mutex promote_mu_;
  std::condition_variable promote_cv_;
  std::deque<Promotion> promotions_;                      // guarded by promote_mu_
  std::unordered_set<BlockKey, BlockKeyHash> promoting_;  // queued keys, guarded by promote_mu_

  struct SharedWrite {
    BlockKey key;
    std::vector<std::byte> payload;
    int64_t expiry_ms;
  };
  void QueueSharedWrite(const BlockKey& key, std::span<const std::byte> payload, int64_t expiry_ms);
  std::mutex share_mu_;
  std::condition_variable share_cv_;
  std::deque<SharedWrite> shared_writes_;  // guarded by share_mu_
  std::thread sharer_;

  std::mutex bg_mu_;  // with bg_cv_, wakes the sweeper to stop
  std::condition_variable bg_cv_;
  std::atomic<bool> stop_{false};
  std::thread sweeper_, promoter_;

  struct Counters {
    std::atomic<uint64_t> lookups{0}, lookup_blocks{0}, lookup_hit_blocks{0};
    std::atomic<uint64_t> reads{0}, read_hits{0}, read_misses{0};
    std::atomic<uint64_t> inserts{0}, refreshes{0}, insert_bytes{0}, insert_failures{0},
        admission_refusals{0};
    std::atomic<uint64_t> placed{0}, promotions{0}, promotion_skips{0}, demotions{0},
        demotion_failures{0}, drops{0}, remat_drops{0}, aged_out{0}, expired{0},
        corruption_misses{0}, shared_stats{0}, shared_adopted{0}, shared_writes{0},
        shared_write_failures{0}, shared_write_skips{0};
  };
  Counters counters_;
  struct TierCounters {
    std::atomic<uint64_t> hit_blocks{0}, hit_tokens{0}, read_blocks{0}, read_bytes{0},
        read_tokens{0}, demoted{0}, dropped_for_remat{0}, dropped{0}, expired{0};
  };
  std::vector<TierCounters> tier_counters_;  // one per tier, sized once
  std::array<std::atomic<uint64_t>, kNumExpiryClasses> expired_by_ttl_{};
  // Counts a block removed because its TTL passed.
  void CountExpired(const IndexEntry& e);
};

}  // namespace kvtier
