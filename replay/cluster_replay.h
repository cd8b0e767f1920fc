// The multi-tier replay's cluster mode (DESIGN §10, §11): a serving trace
// through N nodes, each with its own copy of the scenario's tier stack under
// its own CacheManager, requests routed to nodes by prefix, and optionally a
// shared cluster tier below every node's local tiers (the scenario's
// "cluster.shared_tier"), to see how hit ratio, network bytes and cost scale
// past the machines we can test on.
//
// What runs is the real thing, as in the single-node replay
// (replay/tier_replay.h, whose scaling of sizes by KV bytes per token, clock,
// sweeps and per-request steps this follows): every node's CacheManager, and
// the shared tier through the same code paths as kvtierd's Redis Cluster
// tier (tiers/cluster/redis_tier.h, docs/scale-out.md):
//  - the shared tier is one store (sizes and expiries, no bytes) that every
//    node's stack holds as its bottom tier through a view of its own, whose
//    TierInfo says `shared`. A node's index miss asks the store for the rest
//    of the prefix (CacheManager::AdoptShared) and adopts the leading run it
//    holds; every block a node inserts into a local tier is copied to the
//    store (write-through, RunSharedWrites after each request's inserts,
//    expiry capped at the scenario's max_ttl_s); the store also takes
//    placements and demotions like any tier, as kvtierd's does;
//  - each node's share of the store is capacity / N: a view refuses a write
//    past the bytes its node wrote (it then evicts its own blocks there, as
//    from any full tier) and erases only blocks its node wrote; another
//    node's block is only forgotten, and ends by its expiry;
//  - routing: rendezvous hashing (common/rendezvous.h) over node names
//    "node0".."node{N-1}" of the key of the request's first block (prefix
//    affinity: a conversation's turns share it), or of its first K blocks'
//    prefix (`prefix:K`: a prompt shared by every conversation does not pull
//    them all to one node); or a deterministic pseudo-random node per
//    request, for comparison.
// Per request: its node's Lookup (the leading run is the hit, per tier),
// promotions, inserts after the run, then the shared writes. Estimates, as
// the single-node replay's, plus the network:
//  - a block fetched from the shared tier costs the scenario's latency plus
//    its bytes over the read bandwidth, of GPU time and of TTFT (blocks one
//    after another, not overlapped);
//  - network bytes are what crosses to and from the shared tier: hit blocks
//    fetched to an engine (its tokens' KV), blocks the managers read from it
//    to move them (promotions), and every write to it (write-through copies,
//    placements, demotions: a whole page, as a tier holds it);
//  - cost: the local tiers provisioned once per node, the shared tier once,
//    and the GPU time of prefill and fetches at P_gpu (CostSummary's
//    semantics: provisioned, and used by the bytes held).
// What it leaves out: queueing (a busy node serves as fast as an idle one:
// the load each node took is reported, not charged), contention in the
// store (every node gets the full bandwidth at once, writes are free of
// TTFT as the product writes them in the background), Redis's own
// maxmemory eviction, peer lookup (--peers), and failures of nodes or of
// the store.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "replay/tier_replay.h"
#include "replay/tier_scenario.h"
#include "replay/trace.h"

namespace kvtier {

inline constexpr int kMaxClusterNodes = 1024;

enum class ClusterRouting { kPrefix, kRandom };

struct ClusterReplayOptions {
  int nodes = 1;  // 1 to kMaxClusterNodes
  ClusterRouting routing = ClusterRouting::kPrefix;
  // Prefix routing: by the key of the request's first `prefix_blocks`
  // blocks (a shorter request: all of its blocks). >= 1.
  int prefix_blocks = 1;
};

// "prefix" (the first block), "prefix:K" (the first K blocks) or "random"
// into `options`; kInvalidArgument saying what is accepted.
Status ParseClusterRouting(std::string_view text, ClusterReplayOptions* options);
// The routing as ParseClusterRouting reads it ("prefix", "prefix:2", "random").
std::string ClusterRoutingName(const ClusterReplayOptions& options);

struct ClusterReplayResult {
  std::string scenario;
  int nodes = 0;
  std::string routing;
  std::string shared_tier;  // its name; empty without one
  double duration_s = 0;
  uint64_t requests = 0;
  uint64_t block_refs = 0;
  uint64_t block_hits = 0;
  uint64_t tokens = 0;
  uint64_t hit_tokens = 0;
  // Block hits per tier, summed over the nodes: the local tiers in the
  // scenario's order, then the shared tier when there is one.
  std::vector<std::string> tier_names;
  std::vector<uint64_t> tier_hit_blocks;
  uint64_t shared_hit_blocks = 0;  // of block_hits: served from the shared tier
  uint64_t shared_hit_tokens = 0;
  // The managers' shared-tier counters (CacheStats), summed over the nodes.
  uint64_t shared_adopted = 0;  // blocks found there after an index miss
  uint64_t shared_writes = 0;   // write-through copies stored
  uint64_t shared_write_failures = 0;
  uint64_t shared_write_skips = 0;
  uint64_t promotions = 0, demotions = 0, remat_drops = 0, drops = 0, expired = 0;
  // Bytes crossing the network, at full size (0 without a shared tier).
  double network_fetch_bytes = 0;         // hit blocks fetched from the shared tier
  double network_copy_bytes = 0;          // read from it by the managers' moves
  double network_write_bytes = 0;         // written to it
  double shared_write_through_bytes = 0;  // of network_write_bytes: the copies
  double network_read_bytes() const { return network_fetch_bytes + network_copy_bytes; }
  double network_bytes() const { return network_read_bytes() + network_write_bytes; }
  // Load: requests and input tokens each node served, and the busiest
  // node's share of the tokens (1/N is an even spread).
  std::vector<uint64_t> node_requests;
  std::vector<uint64_t> node_tokens;
  double busiest_node_token_share = 0;
  // Tier costs over the trace: the local tiers of all nodes, and the shared
  // tier; provisioned and used (CostSummary). Their sums are in `tiered`.
  double local_tier_usd = 0, local_tier_usd_used = 0;
  double shared_tier_usd = 0, shared_tier_usd_used = 0;
  double shared_peak_used_bytes = 0, shared_mean_used_bytes = 0;
  CostSummary tiered, no_cache;
  double ttft_saved_s = 0;  // summed over requests, against no cache
  double seconds = 0;       // wall time of the replay

  double hit_ratio() const {
    return block_refs > 0 ? static_cast<double>(block_hits) / block_refs : 0;
  }
  double token_hit_ratio() const {
    return tokens > 0 ? static_cast<double>(hit_tokens) / tokens : 0;
  }
  double mean_ttft_saved_s() const { return requests > 0 ? ttft_saved_s / requests : 0; }
};

// Whether ReplayCluster would take these: kInvalidArgument for a bad
// scenario or options, or a tier (a node's share of the shared tier
// included) that holds less than one of the trace's blocks.
Status CheckClusterReplay(const Trace& trace, const TierScenario& scenario,
                          const ClusterReplayOptions& options);

// Replays `trace` through `options.nodes` copies of the scenario's stack and
// its shared tier, if any. Errors: CheckClusterReplay's. `progress`, when given, is called now and
// then with the fraction of the requests replayed.
Result<ClusterReplayResult> ReplayCluster(const Trace& trace, const TierScenario& scenario,
                                          const ClusterReplayOptions& options,
                                          const std::function<void(double)>& progress = nullptr);

}  // namespace kvtier
