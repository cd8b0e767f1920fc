// The storage under the multi-tier replays (replay/tier_replay.h,
// replay/cluster_replay.h): a tier that keeps each block's size and expiry,
// not its bytes, and the ledger of what moved between a stack's tiers; the
// cluster replay's shared tier, one store and a view of it per node; and
// the scenario's local tiers as the CacheManager's slots, with the options
// the replays run the CacheManager under.
//
// Sizes are in tokens: the replays scale bytes by the model's KV bytes per
// token (tier_replay.h says why the decisions do not change). The tiers and
// the store are thread-safe, as the Tier contract asks, but the replays
// drive everything from one thread (the ledger and the traffic tallies
// assume it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <queue>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "cache/cache_manager.h"
#include "common/clock.h"
#include "common/status.h"
#include "replay/tier_scenario.h"
#include "replay/trace.h"
#include "tiers/tier.h"

namespace kvtier {

// What a stack's replay tiers saw move: a block read from one tier and then
// written to another (a CacheManager promotion or demotion: copy, then
// switch) is a move; a write with no read before it is a placement. Units
// are tokens. Not thread-safe: the tiers that share one are driven by one
// thread.
struct MoveLedger {
  explicit MoveLedger(size_t tiers)
      : moved(tiers, std::vector<double>(tiers, 0)),
        placed_blocks(tiers, 0),
        placed_units(tiers, 0) {}
  std::unordered_map<BlockKey, size_t, BlockKeyHash> read_from;
  std::vector<std::vector<double>> moved;  // units (tokens), [from][to]
  std::vector<uint64_t> placed_blocks;
  std::vector<double> placed_units;
};

// A tier of `capacity_units` that keeps sizes and expiries (reads fill the
// destination with zeros), reporting `read_units_per_s` as its bandwidth.
// It is tier `index` of its stack: its reads and writes go to `ledger`
// under that index. Expiry is judged on `clock`. The ledger and the clock
// must outlive it.
std::unique_ptr<Tier> NewReplayTier(std::string name, uint64_t capacity_units,
                                    double read_units_per_s, size_t index, MoveLedger* ledger,
                                    const Clock* clock);

// The shared tier's store: every node's blocks, by key, with their sizes
// and expiries, as the Redis Cluster holds them. Expired blocks read as
// absent, and DropExpired frees them as Redis's active expiry does.
class SharedReplayStore {
 public:
  explicit SharedReplayStore(const Clock* clock) : clock_(clock) {}

  // The block, when present and unexpired.
  std::optional<BlockStat> Find(const BlockKey& key) const;
  // Stores a block; a write of a key present replaces it (two writers of
  // one key write the same bytes).
  void Put(const BlockKey& key, uint64_t units, int64_t expiry_ms);
  void Remove(const BlockKey& key);
  // Sets a present block's expiry; nothing for an absent one.
  void SetExpiry(const BlockKey& key, int64_t expiry_ms);
  // Frees the blocks whose expiry has passed.
  void DropExpired();
  uint64_t used_units() const;

 private:
  struct Due {
    int64_t at_ms;
    BlockKey key;
    bool operator>(const Due& o) const { return at_ms > o.at_ms; }
  };
  const Clock* const clock_;
  mutable std::mutex mu_;
  std::unordered_map<BlockKey, BlockStat, BlockKeyHash> blocks_;  // guarded by mu_
  uint64_t used_ = 0;                                             // guarded by mu_
  // Expiries to free, earliest first; an item of a block refreshed or
  // rewritten since is stale. Guarded by mu_.
  std::priority_queue<Due, std::vector<Due>, std::greater<>> expiries_;
};

// What one node's view of the shared tier carried, in units (tokens). The
// replay sets `writing_through` around the node's RunSharedWrites, so the
// view tells the write-through copies from placements and moves.
struct SharedTraffic {
  bool writing_through = false;
  double read_units = 0;   // the manager's reads (moves out of the shared tier)
  double write_units = 0;  // every write
  double write_through_units = 0;
};

// One node's view of the shared store, behaving as kvtierd's Redis tier
// (tiers/cluster/redis_tier.h): its TierInfo says `shared`; it reads and
// finds (Stat) any node's blocks; its capacity is this node's share,
// `share_units`, counted over the blocks this node wrote, and a write past
// it is refused (after forgetting the node's expired writes); it erases
// only blocks this node wrote (another node's are only forgotten by this
// node's manager); an expiry refresh reaches any block. It is tier `index`
// of its node's stack for `ledger` (moves and placements, as a replay
// tier's), and tallies its traffic in `traffic`. The store, ledger, traffic
// and clock must outlive it.
std::unique_ptr<Tier> NewSharedTierView(std::string name, SharedReplayStore* store,
                                        uint64_t share_units, double read_units_per_s, size_t index,
                                        MoveLedger* ledger, SharedTraffic* traffic,
                                        const Clock* clock);

// The CacheManager as a replay drives it: on the replay's clock, with the
// sweeps and promotions run by the replay loop, and the scenario's costs.
CacheManagerOptions ReplayCacheOptions(const TierScenario& sc, Clock* clock);

// Inserts every block of `req` (`keys`, its chained keys) after its leading
// cached run of `hit_blocks`, as a writer would: a cached one is refreshed,
// and a full stack refusing a block is part of the replay, not an error.
// `payload` is a block's worth of units; `ledger` is the stack's.
Status InsertAfterHit(CacheManager& cache, MoveLedger& ledger, const Trace& trace,
                      const TierScenario& sc, const TraceRequest& req,
                      const std::vector<BlockKey>& keys, size_t hit_blocks,
                      std::span<const std::byte> payload);

// The scenario's tiers as slots, tier i writing to `ledger` as index i:
// replay tiers of the scaled capacities and bandwidths, the scenario's
// policies and admission filters, the tiers' full-size $/s. kInvalidArgument
// for a tier that holds less than one of the trace's blocks.
Result<std::vector<TierSlot>> ReplayTierSlots(const Trace& trace, const TierScenario& sc,
                                              MoveLedger* ledger, const Clock* clock);

}  // namespace kvtier
