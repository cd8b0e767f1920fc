// HbmBackend: what the HBM tier needs from the memory it runs on, so that one
// tier implementation serves both a GPU (CUDA runtime) and a host-memory
// stand-in that CI can run (docs/hbm.md, "Stand-in"). Internal to tiers/hbm.
//
// A backend owns the arena (one allocation), two copy streams (host to device
// and device to host) and hands out pinned host memory for staging and events
// for completion. Pointers are unified virtual addresses: a copy takes any
// mix of host and device pointers. On the stand-in the "device" is host
// memory, every copy runs at once (memcpy), events are always complete, and
// streams are ignored.
//
// Thread-safe: every method may be called from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"
#include "kernels/device.h"

namespace kvtier {

// How a copy may touch a caller's buffer.
enum class MemoryKind {
  kPageable,    // ordinary host memory: copies go through pinned staging
  kPinnedHost,  // page-locked host memory: copies go straight
  kDevice,      // device (or managed) memory: copies go straight
};

class HbmBackend {
 public:
  virtual ~HbmBackend() = default;

  // True for a real GPU, false for the host stand-in.
  virtual bool on_device() const = 0;
  // A line for logs: the device, or why this is the stand-in.
  virtual std::string Describe() const = 0;
  virtual std::byte* arena() const = 0;  // device address of the arena
  virtual uint64_t arena_bytes() const = 0;
  virtual GpuStream h2d_stream() const = 0;  // the tier's host-to-device stream
  virtual GpuStream d2h_stream() const = 0;  // the tier's device-to-host stream

  // The kind of memory [p, p + bytes) is (bytes > 0).
  virtual MemoryKind KindOf(const void* p, size_t bytes) const = 0;
  // Enqueues a copy of `bytes` from src to dst on `stream`; neither may be
  // pageable host memory unless the backend is the stand-in.
  virtual Status CopyAsync(void* dst, const void* src, size_t bytes, GpuStream stream) = 0;
  virtual Status SynchronizeStream(GpuStream stream) = 0;

  // Page-locked host memory, for staging.
  virtual Result<void*> AllocatePinnedHost(size_t bytes) = 0;
  virtual void FreePinnedHost(void* p) = 0;

  // Events: opaque handles (never null once created).
  virtual Result<void*> CreateEvent() = 0;
  virtual void DestroyEvent(void* event) = 0;
  // Marks the point `stream` has reached in the work enqueued on it.
  virtual Status RecordEvent(void* event, GpuStream stream) = 0;
  // Blocks the calling thread until the work before the event's last record
  // is done (at once when it was never recorded).
  virtual Status WaitEvent(void* event) = 0;
  // Makes work enqueued on `stream` from now on wait for the event.
  virtual Status StreamWaitEvent(GpuStream stream, void* event) = 0;
};

// The CUDA backend: an arena of `arena_bytes` from one cudaMalloc on device
// `device`, and two non-blocking streams. Unavailable when this build has no
// CUDA or the device does not answer; ResourceExhausted when the arena does
// not fit the device.
Result<std::unique_ptr<HbmBackend>> NewCudaHbmBackend(int device, uint64_t arena_bytes);

// The host stand-in: an arena of `arena_bytes` in host memory. With
// `host_is_pinned`, every host buffer counts as pinned (copies go straight),
// so tests can drive both the staged and the direct paths.
Result<std::unique_ptr<HbmBackend>> NewHostHbmBackend(uint64_t arena_bytes, bool host_is_pinned,
                                                      std::string reason);

}  // namespace kvtier
