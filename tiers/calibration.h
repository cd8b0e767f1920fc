// Tier calibration: a tier's read and write bandwidth, measured on a small
// sample when it opens (DESIGN §3), for the cost model's B_t.
//
// The sample is `blocks` blocks of `block_bytes` under reserved keys, written
// as one batch, read back as one batch and erased. The figures are rough by
// nature (a few MiB, on a shared machine): they tell a DRAM tier from a flash
// tier from a cold store, which is what placement needs. An untimed pass runs
// first (page faults, warm-up). A store with a write buffer (RocksDB's
// memtable) serves the timed reads from memory, so its read figure is an
// upper bound; the tier benchmark measures the cold path. A tier that is too
// small for the sample reports 0 (not measured) rather than failing to open.
#pragma once

#include <cstdint>

#include "tiers/tier.h"

namespace kvtier {

struct CalibrationOptions {
  uint64_t block_bytes = 1 << 20;  // bytes per sample block (capped at capacity / 8)
  int blocks = 4;                  // sample blocks
  // The sample blocks' expiry on the tier's clock. A shared tier gives one,
  // so that the blocks of a node that dies mid-calibration do not stay.
  int64_t expiry_ms = kNoExpiry;
};

struct Bandwidth {
  double read_bytes_per_s = 0;   // 0 = not measured
  double write_bytes_per_s = 0;  // 0 = not measured
};

// Measures `tier` (which must be open and usable). Leaves no block behind.
// The sample blocks' keys are drawn at random for each calibration: several
// nodes may calibrate one shared tier at once, and one's clean-up must not
// erase another's samples.
Bandwidth CalibrateTier(Tier& tier, const CalibrationOptions& options = {});

// The configured figures, with any left at 0 measured on `tier`.
Bandwidth ConfiguredOrMeasured(Tier& tier, double read_bytes_per_s, double write_bytes_per_s,
                               const CalibrationOptions& options = {});

// True for the reserved keys calibration writes under.
bool IsCalibrationKey(const BlockKey& key);

}  // namespace kvtier
