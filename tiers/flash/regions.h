// How the flash log's space is laid out and spent (docs/flash-tier.md,
// "Space: who evicts", "Endurance and errors"): where a block's record lies
// (Location), the state of each fixed-size region of the log (Region), and
// the token bucket that bounds device writes (WriteBudget). The tier's
// allocation, sealing and compaction of regions are FlashTier members in
// regions.cc. Private to tiers/flash; none of these types is thread-safe:
// the tier's mutex guards them.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "common/block_key.h"
#include "common/clock.h"
#include "tiers/flash/record_format.h"

namespace kvtier::flash {

// Where a block's record lies, and what its header says.
struct Location {
  uint32_t region = 0;
  uint64_t offset = 0;  // device offset of the header page
  uint64_t seq = 0;
  uint64_t bytes = 0;  // payload
  int64_t expiry_ms = kNoExpiry;
  uint64_t checksum = 0;
  uint64_t record_bytes() const { return RecordBytes(bytes); }
};

// A region is free (nothing live: it may be opened), open (the head, which
// records are appended to) or sealed (full, or cut short by a write error).
struct Region {
  enum class State { kFree, kOpen, kSealed };
  State state = State::kFree;
  uint64_t epoch = 0;
  uint64_t write_end = 0;   // bytes of records appended from the region's start
  uint64_t live_bytes = 0;  // record bytes of indexed blocks
  uint32_t unacked = 0;     // records appended and not yet acknowledged
  std::vector<std::pair<uint64_t, BlockKey>> records;  // (offset in region, key), in log order
};

// Device write budget: a token bucket holding at most one second of budget
// (or one record, if larger). Relocation is charged without refusal, so the
// bucket may go negative. A rate of 0 or less is unlimited.
class WriteBudget {
 public:
  WriteBudget(double bytes_per_s, uint64_t max_record_bytes);
  // Takes `bytes` of budget if the bucket holds them; false (taking nothing) if not.
  bool Take(uint64_t bytes, int64_t now_ms);
  // Takes `bytes` whatever the bucket holds.
  void Charge(uint64_t bytes, int64_t now_ms);
  // Returns `bytes` taken for a write that was then not made.
  void Refund(uint64_t bytes);

 private:
  void Refill(int64_t now_ms);
  double rate_, burst_, tokens_;
  int64_t last_ms_ = -1;
};

}  // namespace kvtier::flash
