// BlockCopier: moves block payloads between the HBM arena and callers'
// memory, one copy per run of blocks that one copy can move (docs/hbm.md,
// "Coalescing"). Internal to tiers/hbm.
//
// Host copies (Write, Read) run on the backend's stream for their direction:
// straight from or to pinned host and device memory, gathered into or
// scattered from the pinned staging buffers for pageable memory, one copy per
// buffer-full. Device copies (ReadToDevice, WriteFromDevice) run on the
// caller's stream. Every copy issued is counted (stats()).
//
// Thread-safe: any number of threads may copy at once.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "common/status.h"
#include "kernels/device.h"
#include "tiers/hbm/hbm_backend.h"
#include "tiers/hbm/hbm_tier.h"
#include "tiers/hbm/staging_pool.h"
#include "tiers/hbm/stream_events.h"

namespace kvtier {

enum class CopyDirection { kToHbm, kFromHbm };

// One block to copy: where its payload is in the arena and in the caller's
// memory.
struct BlockCopy {
  std::byte* buffer = nullptr;              // the caller's memory (only read when copying to HBM)
  uint64_t arena_offset = 0;                // the block's offset in the arena, bytes
  uint64_t bytes = 0;                       // payload size, bytes
  MemoryKind kind = MemoryKind::kPageable;  // what `buffer` is
};

class BlockCopier {
 public:
  // `backend` and `events` must outlive the copier.
  BlockCopier(HbmBackend& backend, StreamEvents& events, uint64_t staging_buffer_bytes);

  // Allocates `staging_buffers` staging buffers per direction. Once, before use.
  Status Init(int staging_buffers);

  // Enqueues the copies of a host <-> HBM batch (blocks in op order) on the
  // backend's stream for `direction`. Returns one status per block; a block
  // whose copy failed may have been partly copied. Copies through staging
  // from HBM are done when this returns; the others when the stream gets there.
  std::vector<Status> CopyHost(CopyDirection direction, std::span<const BlockCopy> blocks);

  // Enqueues device-to-device copies of `blocks` (every one kDevice, in op
  // order) on `stream`, and none after the first that fails; returns its
  // error.
  Status CopyDevice(CopyDirection direction, std::span<const BlockCopy> blocks, GpuStream stream);

  // Copies issued since the copier was made.
  HbmTierStats stats() const;

 private:
  class RunCursor;

  GpuStream HostStream(CopyDirection direction) const;
  // One copy of a whole run, straight between the arena and the caller's memory.
  Status CopyDirect(CopyDirection direction, std::span<const BlockCopy> run, GpuStream stream);
  // A run of pageable blocks, through the staging buffers a buffer-full at a time.
  Status CopyStaged(CopyDirection direction, std::span<const BlockCopy> run);
  // One buffer-full of a staged run: the next `bytes` of it to `dev`, or from `dev`.
  Status StageToHbm(RunCursor& run, std::byte* dev, uint64_t bytes);
  Status StageFromHbm(const std::byte* dev, uint64_t bytes, RunCursor& run);
  void CountHostCopy(CopyDirection direction, uint64_t bytes, bool staged);

  HbmBackend& backend_;
  StreamEvents& events_;
  std::byte* const arena_;
  StagingPool to_hbm_staging_;
  StagingPool from_hbm_staging_;
  std::atomic<uint64_t> h2d_copies_{0};
  std::atomic<uint64_t> d2h_copies_{0};
  std::atomic<uint64_t> d2d_copies_{0};
  std::atomic<uint64_t> staged_bytes_{0};
  std::atomic<uint64_t> direct_bytes_{0};
};

}  // namespace kvtier
