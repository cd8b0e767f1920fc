// What the flash tier's I/O thread works on (docs/flash-tier.md, "Writes,
// durability and crashes"): the per-call Batch that collects results, the
// queued record writes and block reads, and the IoTask each io_uring
// submission carries as its user data. The loop itself (submission,
// completion, acknowledgement in log order) is FlashTier members in
// io_loop.cc. Private to tiers/flash; the tier's mutex guards the queues.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "common/block_key.h"
#include "common/status.h"
#include "tiers/flash/direct_io.h"
#include "tiers/flash/regions.h"
#include "tiers/tier.h"

namespace kvtier::flash {

// The results of one Write or Read call, completed op by op.
struct Batch {
  Batch(size_t n, IoCallback d) : results(n), remaining(n), done(std::move(d)) {}
  std::vector<IoResult> results;
  size_t remaining;
  IoCallback done;
};

struct PendingWrite {
  BlockKey key;
  Location loc;
  uint64_t staging_offset = 0;
  int64_t written_expiry_ms = kNoExpiry;  // the expiry in the header as queued
  std::shared_ptr<Batch> batch;
  size_t op_index = 0;
  bool ready = false;  // copied into staging; may be submitted
  bool submitted = false;
  bool completed = false;
  bool canceled = false;  // erased before it was acknowledged
  Status status;
};

struct PendingRead {
  ReadOp op;
  Location loc;
  std::shared_ptr<Batch> batch;
  size_t op_index = 0;
  int attempts = 0;
  int slot = -1;      // registered read slot, or -1 with `own` holding the record
  AlignedBuffer own;  // for records larger than a slot
};

struct IoTask {
  enum class Kind { kWrite, kRead };
  Kind kind = Kind::kWrite;
  uint64_t first_pos = 0;  // write: queue position of the first record
  uint32_t count = 0;      // write: records in this I/O
  uint64_t bytes = 0;      // bytes transferred when the I/O succeeds
  std::unique_ptr<PendingRead> read;
};

}  // namespace kvtier::flash
