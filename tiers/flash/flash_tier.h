// The flash tier: block payloads in a log of fixed regions on a file or raw
// block device, O_DIRECT, through io_uring (DESIGN §3).
//
// Layout. The device is cut into regions of region_bytes. A region is written
// front to back as a chain of records: a 4 KiB header page (magic, the
// region's epoch, a sequence number, key, payload length, expiry, the
// payload's XXH3-64 and a checksum of the header itself) followed by the
// payload padded to 4 KiB. Nothing else is on the device: after a restart the
// index is rebuilt by walking each region's chain, which ends at the first
// header that is invalid or carries another epoch (left from the region's
// previous use). Records of the newest regions, the only ones a crash can
// have caught mid-write, have their payloads verified during that walk, so a
// torn record is discarded, never announced.
//
// Writes. A write copies each record into a registered staging ring (the
// payload checksum computed in the same pass), appends it to the open region
// and queues it; one I/O thread coalesces queued records that are adjacent on
// the device into writes of up to max_write_bytes and keeps up to
// queue_depth I/Os in flight. Records are acknowledged in log order, once
// they and every record before them are on the device, so an acknowledged
// block survives a process crash (not power loss: there is no fsync). Reads
// are one aligned I/O of the whole record into a registered slot, verified
// (header and payload checksum) while copied out.
//
// Space. The tier never evicts on its own (the CacheManager decides); it
// refuses a write with kResourceExhausted when its live records would pass
// capacity_bytes. Erased and replaced records leave holes; when the open
// region is full and no region is free, the sealed region with the fewest
// live bytes is compacted in place (its live records rewritten at its front
// under a new epoch) and reopened. When the cache evicts in insertion order,
// as a log suggests, that region is the oldest one and holds nothing live,
// so reclaim is FIFO and moves nothing. device_bytes - capacity_bytes is the
// slack that keeps compaction cheap.
//
// Erase, replacement and SetExpiry rewrite the record's header page in place
// (one 4 KiB write), so an erased block never returns after a restart and a
// refreshed one keeps its new expiry. A write budget (bytes/s, token bucket
// over one second) bounds device wear: writes past it fail with kRetry and
// are counted; the block simply stays out of flash.
//
// Thread-safe. One mutex guards the index, the regions and the queues;
// callbacks run on the I/O thread and must not block on this tier.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/clock.h"
#include "tiers/tier.h"

namespace kvtier {

struct FlashTierOptions {
  std::string name = "flash";  // reported in TierInfo
  std::string path;            // file (created) or block device; required
  // Bytes of the log. 0: a block device's size, an existing file's size, or
  // for a new file capacity_bytes plus 1/8 slack and two regions.
  uint64_t device_bytes = 0;
  // Bytes of live records (payload + header page + padding) the tier may
  // hold. 0: device_bytes less its slack (8/9 of it, less two regions).
  uint64_t capacity_bytes = 0;
  uint64_t region_bytes = 16 << 20;             // log region, bytes (multiple of 4 KiB)
  uint64_t max_block_bytes = 4 << 20;           // largest payload accepted, bytes (< region)
  int queue_depth = 32;                         // I/Os in flight at most
  uint64_t staging_bytes = 32 << 20;            // registered write staging ring, bytes
  uint64_t read_slot_bytes = (1 << 20) + 4096;  // registered read slot (one per queue slot)
  uint64_t max_write_bytes = 1 << 20;           // largest coalesced write I/O, bytes
  double write_budget_bytes_per_s = 0;          // device write budget; 0 = unlimited
  bool preallocate = true;       // fallocate a new file (fail now, not on a full disk later)
  double read_bytes_per_s = 0;   // bandwidth to report; 0 = measure it at open
  double write_bytes_per_s = 0;  // bandwidth to report; 0 = measure it at open
  Clock* clock = SystemClock();  // expiry is judged against it; not owned
};

Result<std::unique_ptr<Tier>> OpenFlashTier(const FlashTierOptions& options);

// Counters beyond TierInfo, for stats and tests.
struct FlashTierStats {
  uint64_t device_bytes = 0;        // size of the log
  uint64_t regions = 0;             // regions in the log
  uint64_t free_regions = 0;        // regions holding nothing live
  uint64_t bytes_written = 0;       // bytes written to the device (records, relocation, headers)
  uint64_t relocated_bytes = 0;     // live bytes rewritten by compaction
  uint64_t compactions = 0;         // regions compacted to make room
  uint64_t budget_refusals = 0;     // writes refused by the write budget
  uint64_t discarded_records = 0;   // torn records dropped while recovering
  bool registered_buffers = false;  // staging and read slots registered with io_uring
};

// InvalidArgument if `tier` is not a flash tier.
Result<FlashTierStats> GetFlashTierStats(const Tier& tier);

// Test hooks: where the record of `key` lies on the device (offset, bytes), so
// that tests can tear or flip it with plain file I/O; and a one-byte flip of
// its stored payload. NotFound if absent; InvalidArgument if not a flash tier.
Result<std::pair<uint64_t, uint64_t>> FlashRecordExtentForTesting(Tier& tier, const BlockKey& key);
Status CorruptFlashBlockForTesting(Tier& tier, const BlockKey& key);

}  // namespace kvtier
