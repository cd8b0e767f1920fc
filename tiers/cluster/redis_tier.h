// The cluster tier: block payloads in a Redis Cluster shared by every node
// (DESIGN §10, docs/scale-out.md).
//
// A block is one "meta" value and, past the first chunk, chunk values, all
// under one hash tag so they share a slot (one node, one round trip):
//   PREFIX:{<32 hex key>}     header (48 B) + the payload's first chunk
//   PREFIX:{<32 hex key>}:<i> chunk i (i >= 1), value_bytes each (the last shorter)
// The header holds a magic and version, the payload size, its XXH3-64, the
// chunk size, the absolute expiry and an XXH3 of the header itself. A read
// fetches the meta value and the chunks with one MGET and checks everything:
// a missing chunk, a short one, a bad header or a payload that fails its
// checksum is a miss (the last three counted as corruption), never wrong
// bytes. A block's values change together: a write, an expiry change and
// the removal of a damaged block are each one Lua script, which Redis runs
// atomically, so a reader sees a block whole, before or after a replace
// (two nodes may write different bytes under one key), and a change judged
// on a header read earlier is made only if that header is still there.
//
// Expiry is in the store: every value is written with PXAT (Redis's own
// clock; an expiry on this tier's clock is translated by the difference
// between the two), and refreshed with PEXPIREAT. Redis's maxmemory policy
// may also evict any value: a block missing a part is a miss.
//
// Capacity: `capacity_bytes` is this node's share of the store. The tier
// counts the bytes this node wrote (and Recover announced) and refuses a
// write past the share (kResourceExhausted, so the cache evicts its own
// blocks); blocks other nodes wrote count against their writers' shares.
//
// A dead master or a failover is kUnavailable (a miss, counted in
// io_errors) after at most the command timeout; every call has one.
// Thread-safe; operations complete on the calling thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/clock.h"
#include "tiers/cluster/redis_cluster.h"
#include "tiers/tier.h"

namespace kvtier {

struct RedisTierOptions {
  std::string name = "cluster";            // reported in TierInfo
  std::vector<std::string> seeds;          // "host:port" of any cluster nodes; required
  std::string key_prefix = "kvt";          // every key starts with it (one store, many users)
  uint64_t capacity_bytes = 16ull << 30;   // this node's share, bytes
  uint64_t max_block_bytes = 64ull << 20;  // largest payload accepted, bytes
  uint64_t value_bytes = 1ull << 20;       // a block is split into values of at most this
  int connect_timeout_ms = 200;
  int command_timeout_ms = 1000;
  double read_bytes_per_s = 0;   // bandwidth to report; 0 = measure it at open
  double write_bytes_per_s = 0;  // bandwidth to report; 0 = measure it at open
  Clock* clock = SystemClock();  // expiry is judged against it; not owned
};

Result<std::unique_ptr<Tier>> OpenRedisTier(const RedisTierOptions& options);

// What the tier's TierInfo does not say, for metrics. Counters are monotonic.
struct RedisTierStats {
  RedisClusterStats cluster;
  uint64_t read_blocks = 0, read_bytes = 0, read_misses = 0;
  uint64_t write_blocks = 0, write_bytes = 0;
  uint64_t stat_calls = 0, stat_found = 0;
  double read_seconds = 0, write_seconds = 0;  // time in Read and Write calls
};

// The stats of a tier OpenRedisTier returned; InvalidArgument for another tier.
Result<RedisTierStats> RedisTierStatsOf(Tier& tier);

// The Redis keys of a block's values (meta first), for tests and tools.
std::vector<std::string> RedisTierKeysForTesting(Tier& tier, const BlockKey& key,
                                                 uint64_t payload_bytes);

}  // namespace kvtier
