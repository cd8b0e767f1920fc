// Tier: one level of block storage (HBM, DRAM, flash, RocksDB), DESIGN §3.
//
// A tier stores opaque block payloads by BlockKey. It knows nothing of tokens,
// tenants or placement: the CacheManager decides what goes where. Contract:
//  - Thread-safe: any method may be called from any thread concurrently.
//  - Write and Read are asynchronous and batched. Each op in a batch succeeds
//    or fails on its own; the callback gets one IoResult per op, in op order,
//    exactly once, possibly on the calling thread before Write/Read returns.
//    The span of ops need only live for the call (a tier copies what it
//    keeps); the buffers the ops name must stay valid until the callback runs.
//  - A write of an existing key replaces it. A read never returns bytes other
//    than those written: a checksum mismatch is reported as kCorruption (and
//    the caller treats it as a miss) and the destination is zeroed, so no
//    payload byte is left in it. An expired block reads as kNotFound. A read
//    refused for any other reason leaves the destination untouched, but for
//    a flash read whose record was replaced or erased while in flight, which
//    may leave it zeroed (the tier copies and verifies in one pass).
//  - Write fails with kResourceExhausted when the tier has no room; the tier
//    never evicts on its own (eviction is the CacheManager's decision).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "common/block_key.h"
#include "common/clock.h"
#include "common/status.h"

namespace kvtier {

struct TierInfo {
  std::string name;                // "dram", "flash", ...
  uint64_t capacity_bytes = 0;     // bytes the tier may hold
  uint64_t used_bytes = 0;         // bytes of payload held now
  uint64_t allocated_bytes = 0;    // bytes of storage taken (payload + rounding)
  uint64_t blocks = 0;             // blocks held now
  uint64_t max_block_bytes = 0;    // largest payload a write accepts
  double read_bytes_per_s = 0;     // measured (or configured) read bandwidth
  double write_bytes_per_s = 0;    // measured (or configured) write bandwidth
  bool persistent = false;         // survives a process restart
  uint64_t corruption_errors = 0;  // reads that failed their checksum
  uint64_t io_errors = 0;          // device/file system errors
  // Other nodes write this tier too (the cluster tier, DESIGN §10): it may
  // hold blocks this node's index has never seen, which Stat finds.
  bool shared = false;
  // False for a view of other nodes' caches (the peer tier): the cache
  // manager never places or demotes a block there; it only finds blocks
  // there (Stat), reads them, and sends it copies of what it computes.
  bool accepts_placements = true;
};

// What a tier holds of one block (Stat).
struct BlockStat {
  uint64_t bytes = 0;
  int64_t expiry_ms = kNoExpiry;
};

struct WriteOp {
  BlockKey key;
  std::span<const std::byte> payload;  // valid until the callback runs
  int64_t expiry_ms = kNoExpiry;       // absolute, Unix ms; reads after it miss
};

struct ReadOp {
  BlockKey key;
  std::span<std::byte> dest;  // must hold the whole payload (see IoResult::bytes)
};

struct IoResult {
  // Built as {status}, {status, bytes} or {status, bytes, payload_xxh3}.
  IoResult(Status s = Status::Ok(), uint64_t n = 0, std::optional<uint64_t> xxh3 = std::nullopt)
      : status(std::move(s)), bytes(n), payload_xxh3(xxh3) {}

  Status status;
  // Write: bytes stored. Read: the payload size; when dest was too small the
  // status is kResourceExhausted, nothing is copied, and bytes says how many
  // are needed.
  uint64_t bytes = 0;
  // Read: the XXH3-64 the tier checked the payload against as it copied it,
  // when it checks that way (the DRAM tier does), so a caller that must send
  // the payload's checksum need not hash it again.
  std::optional<uint64_t> payload_xxh3;
};

using IoCallback = std::function<void(std::vector<IoResult>)>;

// Receives the blocks a persistent tier finds when it opens (Recover).
class IndexSink {
 public:
  virtual ~IndexSink() = default;
  virtual void Announce(const BlockKey& key, uint64_t bytes, int64_t expiry_ms) = 0;
};

class Tier {
 public:
  virtual ~Tier() = default;

  virtual TierInfo Info() const = 0;
  virtual void Write(std::span<const WriteOp> ops, IoCallback done) = 0;
  virtual void Read(std::span<const ReadOp> ops, IoCallback done) = 0;
  // Removes the keys that are present; absent keys are not an error.
  virtual Status Erase(std::span<const BlockKey> keys) = 0;
  // Sets the expiry of the keys that are present (a TTL refresh); absent keys
  // are not an error.
  virtual Status SetExpiry(std::span<const BlockKey> keys, int64_t expiry_ms) = 0;
  // Announces every live block the tier holds (after a restart, for a
  // persistent tier). Non-persistent tiers announce what they hold now.
  virtual Status Recover(IndexSink& sink) = 0;
  // Which of `keys` the tier holds now (result i for keys[i]; nullopt when
  // absent, expired or unreadable). Only shared tiers answer: a local tier
  // holds nothing its own index does not know, and the default says so.
  virtual std::vector<std::optional<BlockStat>> Stat(std::span<const BlockKey> keys) {
    return std::vector<std::optional<BlockStat>>(keys.size());
  }
};

// For tiers whose operations complete on the calling thread: runs `one` on
// each op in order and calls `done` with the results.
template <typename Op, typename OneOp>
void CompleteInline(std::span<const Op> ops, const IoCallback& done, OneOp&& one) {
  std::vector<IoResult> results;
  results.reserve(ops.size());
  for (const Op& op : ops) results.push_back(one(op));
  done(std::move(results));
}

// Blocking conveniences over the asynchronous interface.
std::vector<IoResult> WriteSync(Tier& tier, std::span<const WriteOp> ops);
std::vector<IoResult> ReadSync(Tier& tier, std::span<const ReadOp> ops);
Status WriteOne(Tier& tier, const BlockKey& key, std::span<const std::byte> payload,
                int64_t expiry_ms = kNoExpiry);
// Reads one block into dest; returns the payload size.
Result<uint64_t> ReadOne(Tier& tier, const BlockKey& key, std::span<std::byte> dest,
                         std::optional<uint64_t>* payload_xxh3 = nullptr);

}  // namespace kvtier
