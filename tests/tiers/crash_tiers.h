// The tier configurations crash_writer writes and the crash tests reopen.
#pragma once

#include <string>

#include "tiers/flash/flash_tier.h"
#include "tiers/rocks/rocks_tier.h"

namespace kvtier::testing {

inline RocksTierOptions CrashRocksOptions(const std::string& dir) {
  RocksTierOptions o;
  o.path = dir;
  return o;
}

// Small regions, so a run of a few hundred blocks spans many of them.
inline FlashTierOptions CrashFlashOptions(const std::string& dir) {
  FlashTierOptions o;
  o.path = dir + "/flash.log";
  o.capacity_bytes = 64 << 20;
  o.region_bytes = 1 << 20;
  o.max_block_bytes = 512 << 10;
  o.queue_depth = 32;
  o.staging_bytes = 2 << 20;
  o.read_bytes_per_s = 1e9;  // skip calibration: the kill should land in the writes under test
  o.write_bytes_per_s = 1e9;
  return o;
}

}  // namespace kvtier::testing
