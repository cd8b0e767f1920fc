// The peer tier: the other kvtierd nodes' caches, seen as one more shared
// tier at the bottom of this node's stack (DESIGN §10, docs/scale-out.md).
//
// Every block key has one owner among the nodes (this one included), by
// rendezvous hashing over their names (common/rendezvous.h):
//  - Stat and Read ask a key's owner over the Peer service, so a local index
//    miss becomes a hit when the owner has the block (the cache manager
//    adopts it, as from any shared tier); keys this node owns are not asked
//    about (this node would have them);
//  - Write (the cache manager's copy of each block it computes) sends the
//    block to its owner, so whoever asks next finds it there; a block this
//    node owns is already where it belongs;
//  - the cache never places or demotes a block here (accepts_placements is
//    false), and Erase and SetExpiry change nothing: each owner manages its
//    own blocks.
// A peer that fails or times out (`timeout_ms` per call) is skipped for
// `down_ms`: its keys are misses, never an error and never a hang. Payloads
// carry their XXH3-64, checked on arrival: a mismatch is kCorruption (a
// miss), never wrong bytes. Calls carry the cluster's peer token.
// Thread-safe; operations complete on the calling thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tiers/tier.h"

namespace kvtier {

struct PeerTierOptions {
  std::string self;                // this node's name, "host:port" as its peers know it
  std::vector<std::string> peers;  // the other nodes' gRPC addresses
  std::string token;               // CacheSecret::PeerToken of the cluster
  int timeout_ms = 500;            // per call
  int64_t down_ms = 1000;          // a failed peer is skipped this long
  uint64_t max_block_bytes = 64ull << 20;
  double bytes_per_s = 1e9;  // what the cost model is told (the network; not calibrated)
};

Result<std::unique_ptr<Tier>> OpenPeerTier(const PeerTierOptions& options);

// Per peer, for metrics and `kvtier stats`. Counters are monotonic.
struct PeerStats {
  std::string peer;
  uint64_t calls = 0, errors = 0;
  uint64_t found_blocks = 0;  // Stat answers that the peer holds a block
  uint64_t read_blocks = 0, read_bytes = 0;
  uint64_t written_blocks = 0, written_bytes = 0;
  double seconds = 0;  // time in calls to it
  bool down = false;   // being skipped now
};
Result<std::vector<PeerStats>> PeerTierStatsOf(Tier& tier);

}  // namespace kvtier
