// The DRAM tier: block payloads in one host-memory arena (DESIGN §3).
//
// The arena is one anonymous mapping (transparent huge pages advised; locked
// with mlock when asked, best effort; pinned for the GPU with cudaHostRegister
// when a CUDA device answers, best effort, so the HBM tier copies straight
// from and to it), carved by a SlabAllocator by block
// size. Every payload carries an XXH3-64 checksum, computed while it is copied
// in and verified while it is copied out; a mismatch is kCorruption, counted,
// and the block is dropped. Operations complete inline on the calling thread.
// Thread-safe: the key map is striped under reader/writer locks, so reads of
// different blocks, and reads of the same block, run in parallel.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/clock.h"
#include "tiers/tier.h"

namespace kvtier {

struct DramTierOptions {
  std::string name = "dram";                // reported in TierInfo
  uint64_t capacity_bytes = 1ull << 30;     // arena size, bytes
  uint64_t page_bytes = 64 << 10;           // slab page, bytes (power of two, >= 4 KiB)
  bool lock_memory = false;                 // mlock the arena (best effort, logged)
  bool pin_for_gpu = true;                  // cudaHostRegister the arena when a GPU answers
  uint64_t max_block_bytes = 256ull << 20;  // largest payload accepted, bytes
  double read_bytes_per_s = 0;              // bandwidth to report; 0 = measure it at open
  double write_bytes_per_s = 0;             // bandwidth to report; 0 = measure it at open
  Clock* clock = SystemClock();             // expiry is judged against it; not owned
};

Result<std::unique_ptr<Tier>> OpenDramTier(const DramTierOptions& options);

// Test hook: flips one byte of the stored payload of `key` in place, so that
// tests can check that a corrupt block reads as a miss. NotFound if absent;
// InvalidArgument if `tier` is not a DRAM tier.
Status CorruptDramBlockForTesting(Tier& tier, const BlockKey& key);

}  // namespace kvtier
