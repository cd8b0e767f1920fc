// The HBM tier: block payloads in GPU memory (DESIGN §3, docs/hbm.md).
//
// One arena from a single cudaMalloc, carved by an ExtentAllocator. Host
// copies run on two dedicated non-blocking streams (host to device for Write,
// device to host for Read): straight from and to pinned host memory (the
// DRAM tier's arena is pinned), through pinned staging buffers for pageable
// memory. A batch places its blocks back to back in the arena and moves runs
// of blocks that are contiguous on both sides with one copy. A completion
// thread per stream waits for each batch's CUDA event and then runs the Tier
// callback; user callbacks never run inside CUDA host callbacks.
//
// The GPU engine moves blocks between HBM and its own pages on its own stream
// with ReadToDevice and WriteFromDevice (device to device, no host copy).
//
// Without CUDA, without a device that answers, or when forced, the same class
// runs on a host-memory stand-in (copies are memcpy), so everything above it
// is tested in CI; on_device() tells which.
//
// Not persistent: Recover announces the blocks held now. No checksums (DESIGN:
// below HBM only); a failed copy is an I/O error and never leaves payload
// bytes in a reader's buffer. Never evicts: a full tier refuses writes with
// kResourceExhausted.
//
// Thread-safe, as the Tier contract says. Visibility: a block written with
// Write becomes readable when its copy is done, just before the callback
// runs; one written with WriteFromDevice is readable at once (readers on
// other streams wait for the copy on the GPU). Callbacks run on the tier's
// completion threads and must not block on this tier's own completions
// (e.g. call WriteSync on it).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "common/clock.h"
#include "kernels/device.h"
#include "tiers/tier.h"

namespace kvtier {

struct HbmTierOptions {
  std::string name = "hbm";                 // reported in TierInfo
  uint64_t capacity_bytes = 1ull << 30;     // arena size, bytes (rounded down to 256)
  uint64_t max_block_bytes = 64ull << 20;   // largest payload accepted, bytes
  int device = 0;                           // CUDA device ordinal
  bool force_host_standin = false;          // run on host memory even when a GPU answers
  bool standin_host_is_pinned = false;      // stand-in only: treat every host buffer as pinned
  uint64_t staging_buffer_bytes = 4 << 20;  // bytes per pinned staging buffer (>= 128 KiB)
  int staging_buffers = 4;                  // pinned staging buffers per direction (>= 1)
  double read_bytes_per_s = 0;              // bandwidth to report; 0 = measure it at open
  double write_bytes_per_s = 0;             // bandwidth to report; 0 = measure it at open
  Clock* clock = SystemClock();             // expiry is judged against it; not owned
};

// A copy of a block from HBM into device memory the caller owns (an engine
// page).
struct DeviceReadOp {
  BlockKey key;
  void* dest = nullptr;     // device address (a host address on the stand-in)
  uint64_t dest_bytes = 0;  // room at dest, bytes; must hold the whole payload
};

// A block stored in HBM from device memory the caller owns.
struct DeviceWriteOp {
  BlockKey key;
  const void* src = nullptr;  // device address (a host address on the stand-in)
  uint64_t bytes = 0;         // payload size, bytes
  int64_t expiry_ms = kNoExpiry;
};

// Copy counters since the tier opened (calibration included). One copy is
// one cudaMemcpyAsync (one memcpy on the stand-in).
struct HbmTierStats {
  uint64_t copies_issued = 0;  // h2d + d2h + d2d
  uint64_t h2d_copies = 0;     // host to HBM (Write)
  uint64_t d2h_copies = 0;     // HBM to host (Read)
  uint64_t d2d_copies = 0;     // ReadToDevice and WriteFromDevice
  uint64_t staged_bytes = 0;   // bytes that went through the pinned staging buffers
  uint64_t direct_bytes = 0;   // bytes copied straight from or to the caller's memory
};

class HbmTier : public Tier {
 public:
  // Opens the tier on options.device, or on the host stand-in when this build
  // has no CUDA, no device answers or options.force_host_standin. A device
  // that answers but has no room for the arena is an error (kResourceExhausted),
  // not a reason to fall back.
  static Result<std::unique_ptr<HbmTier>> Open(const HbmTierOptions& options);

  // True when the arena is GPU memory; false on the host stand-in.
  virtual bool on_device() const = 0;

  // Enqueues on `stream` a copy of each block into op.dest (device to
  // device). All or nothing: when a block is absent or expired (kNotFound) or
  // larger than dest_bytes (kResourceExhausted), nothing is enqueued. On OK
  // the bytes are in place when `stream` reaches this point; the blocks'
  // memory is kept (even if they are erased or replaced meanwhile) until then:
  // the tier records an event on `stream` and frees nothing before it
  // completes. Runs of blocks contiguous in HBM and at dest take one copy.
  virtual Status ReadToDevice(std::span<const DeviceReadOp> ops, GpuStream stream) = 0;

  // Stores each op's device bytes as a block, copied on `stream` (device to
  // device); a key already present is replaced. All or nothing: an empty or
  // null source (kInvalidArgument), a block over max_block_bytes or no room
  // (kResourceExhausted) changes nothing. The blocks are readable at once:
  // Read, ReadToDevice and the tier's own copies wait on the GPU for the
  // copy enqueued here. `src` must stay valid until `stream` reaches it.
  virtual Status WriteFromDevice(std::span<const DeviceWriteOp> ops, GpuStream stream) = 0;

  virtual HbmTierStats stats() const = 0;

  // Blocks until every copy the tier has enqueued so far is done, every
  // callback for it has run and every deferred free has happened (including
  // those behind callers' streams). Not from inside a callback.
  virtual void WaitIdle() = 0;
};

// HbmTier::Open, as a plain Tier.
Result<std::unique_ptr<Tier>> OpenHbmTier(const HbmTierOptions& options);

}  // namespace kvtier
