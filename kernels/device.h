// Minimal CUDA device access for kernels/ users and tests, compiled with or
// without the CUDA toolkit. Without CUDA (or without a GPU) every call answers
// Unavailable and DeviceAvailable() is false, so callers and tests can skip.
//
// GpuStream is an opaque cudaStream_t (nullptr = the default stream), so that
// headers of kernels/ never include CUDA headers and CPU twins share the
// launchers' signatures.
#pragma once

#include <cstddef>
#include <string>

#include "common/status.h"

namespace kvtier {

using GpuStream = void*;

// True when this build has CUDA and at least one device answers.
bool DeviceAvailable();
// A line for logs and skip messages: "CUDA 13.0, 1 device(s): NVIDIA H100 ..."
// or why there is none.
std::string DeviceDescription();

// Device memory owned by one move-only handle; freed in the destructor.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  static Result<DeviceBuffer> Allocate(size_t bytes);
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) {
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer();

  void* data() const { return ptr_; }
  size_t size() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

Status CopyToDevice(void* dst_device, const void* src_host, size_t bytes);
Status CopyToHost(void* dst_host, const void* src_device, size_t bytes);
Status SynchronizeStream(GpuStream stream);

// Page-locks host memory [p, p + bytes) (cudaHostRegister) so that copies
// from and to it run asynchronously, straight over the bus (the DRAM tier's
// arena, DESIGN §3). Unavailable without CUDA or a device; an error when the
// range cannot be pinned (e.g. past the locked-memory limit).
Status PinHostMemory(void* p, size_t bytes);
// Undoes PinHostMemory(p, ...). Requires that no copy uses the range any more.
// Does nothing without CUDA.
void UnpinHostMemory(void* p);

}  // namespace kvtier
