// The cold tier: block payloads in RocksDB (DESIGN §3).
//
// Two column families:
//  - "meta":    block key (16 B)             -> expiry, size, XXH3-64 (32 B)
//  - "default": block key + expiry (24 B)    -> payload (a BlobDB blob when
//                                               >= min_blob_bytes)
// Putting the expiry in the payload's key lets the compaction filter drop an
// expired payload from the key alone, so compaction never reads a blob, and
// blob garbage collection then reclaims its space. Recovery scans only the
// small meta records. A TTL refresh (SetExpiry) rewrites the payload under its
// new key: the cold tier is refreshed rarely (a hit promotes a block upward).
//
// Every payload is checked against its XXH3-64 on read; a mismatch, or
// RocksDB's own checksum failure, reads as kCorruption (counted, the
// destination zeroed, the block dropped). With the WAL off a crash may lose
// recent blocks (a miss), never corrupt one. Thread-safe; operations complete
// on the calling thread.
//
// A full disk (docs/operations.md, "Disk full and corruption"):
// writes are refused with kUnavailable "device full: ..." while the
// file system's free space is below min_free_bytes or RocksDB reports ENOSPC;
// reads keep working; writes resume by themselves once space is back (the
// database is Resume()d, no reopen). The reported capacity is capped by the
// free space above the floor. RocksDB's info log goes to kvtier's log, never
// to a file (NewRocksInfoLog): it cannot abort the process.
//
// A corrupt database (RocksDB finds a bad block when opening or scanning the
// records at open) is moved aside to <path>.corrupt-<UTC time> for the
// operator, and the tier starts empty: it is a cache. RocksTierStatsOf says
// so. A bad block found later, by a read, is a miss (kCorruption, counted).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/clock.h"
#include "tiers/tier.h"

namespace kvtier {

enum class RocksCompression { kNone, kLz4 };

struct RocksTierOptions {
  std::string name = "rocks";               // reported in TierInfo
  std::string path;                         // database directory (created); required
  uint64_t capacity_bytes = 64ull << 30;    // payload bytes the tier may hold
  uint64_t max_block_bytes = 256ull << 20;  // largest payload accepted, bytes
  uint64_t min_blob_bytes = 4096;           // payloads at least this large go to blob files
  uint64_t blob_file_bytes = 256ull << 20;  // target blob file size, bytes
  RocksCompression compression = RocksCompression::kNone;  // KV tensors compress poorly
  bool use_wal = true;                                     // log writes: survive a process crash
  bool sync_writes = false;      // fsync the WAL per write: survive power loss
  double read_bytes_per_s = 0;   // bandwidth to report; 0 = measure it at open
  double write_bytes_per_s = 0;  // bandwidth to report; 0 = measure it at open
  Clock* clock = SystemClock();  // expiry is judged against it; not owned
  // Writes that add data are refused below this many free bytes on the file
  // system; UINT64_MAX (kAutoMinFreeBytes): 1/16 of it, at most 1 GiB.
  uint64_t min_free_bytes = UINT64_MAX;
};

Result<std::unique_ptr<Tier>> OpenRocksTier(const RocksTierOptions& options);

// What the tier's TierInfo does not say, for metrics. Counters are monotonic.
struct RocksTierStats {
  uint64_t no_space_errors = 0;     // writes refused or failed: device full
  uint64_t write_errors = 0;        // writes failed for any other reason
  uint64_t recoveries = 0;          // times writes resumed after a device-full stop
  uint64_t quarantined_stores = 0;  // 1 when a corrupt database was moved aside at open
  std::string quarantine_path;      // where it was moved; empty when none was
};

// The stats of a tier OpenRocksTier returned; InvalidArgument for another tier.
Result<RocksTierStats> RocksTierStatsOf(Tier& tier);

// Test hooks. CorruptRocksBlockForTesting rewrites the stored payload of `key`
// with one byte flipped, keeping its recorded checksum, as silent media
// corruption would. CompactRocksTierForTesting runs a full compaction (and the
// expiry filter). RocksRecordCountForTesting counts stored meta and payload
// records. All answer InvalidArgument if `tier` is not a RocksDB tier.
Status CorruptRocksBlockForTesting(Tier& tier, const BlockKey& key);
Status CompactRocksTierForTesting(Tier& tier);
Result<std::pair<uint64_t, uint64_t>> RocksRecordCountForTesting(Tier& tier);

}  // namespace kvtier
