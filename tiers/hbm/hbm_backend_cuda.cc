// The HBM tier's CUDA backend: one cudaMalloc arena, two non-blocking copy
// streams, cudaHostAlloc staging and blocking-sync events. Compiled only when
// KVTIER_HAVE_CUDA (hbm_backend_none.cc otherwise).
#include <cuda_runtime_api.h>

#include "tiers/hbm/hbm_backend.h"

namespace kvtier {
namespace {

Status FromCuda(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return Status::Ok();
  // Clears a non-sticky error so it is not reported again by the next call.
  (void)cudaGetLastError();
  const std::string msg = std::string(what) + ": " + cudaGetErrorString(err);
  if (err == cudaErrorMemoryAllocation) return Status::ResourceExhausted(msg);
  return Status::IOError(msg);
}

// Makes `device` current for the calling thread for one scope, and restores
// the thread's previous device (an engine thread may use another).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    if (cudaGetDevice(&previous_) != cudaSuccess) {
      (void)cudaGetLastError();
      previous_ = -1;
    }
    if (previous_ != device) {
      (void)cudaSetDevice(device);
    } else {
      previous_ = -1;  // nothing to restore
    }
  }
  ~DeviceGuard() {
    if (previous_ >= 0) (void)cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

cudaStream_t S(GpuStream s) { return static_cast<cudaStream_t>(s); }
cudaEvent_t E(void* e) { return static_cast<cudaEvent_t>(e); }

class CudaHbmBackend final : public HbmBackend {
 public:
  CudaHbmBackend(int device, std::string name, std::byte* arena, uint64_t arena_bytes,
                 cudaStream_t h2d, cudaStream_t d2h)
      : device_(device),
        name_(std::move(name)),
        arena_(arena),
        arena_bytes_(arena_bytes),
        h2d_(h2d),
        d2h_(d2h) {}

  ~CudaHbmBackend() override {
    DeviceGuard g(device_);
    (void)cudaStreamSynchronize(h2d_);
    (void)cudaStreamSynchronize(d2h_);
    (void)cudaStreamDestroy(h2d_);
    (void)cudaStreamDestroy(d2h_);
    (void)cudaFree(arena_);
  }

  bool on_device() const override { return true; }
  std::string Describe() const override {
    return "CUDA device " + std::to_string(device_) + " (" + name_ + ")";
  }
  std::byte* arena() const override { return arena_; }
  uint64_t arena_bytes() const override { return arena_bytes_; }
  GpuStream h2d_stream() const override { return h2d_; }
  GpuStream d2h_stream() const override { return d2h_; }

  MemoryKind KindOf(const void* p, size_t bytes) const override {
    // Both ends: a buffer that starts in a registered range and runs past its
    // end is staged. A pinned classification is only ever an optimisation: a
    // copy from pageable memory would still be correct, only synchronous.
    const MemoryKind first = KindAt(p);
    if (first == MemoryKind::kPageable || bytes <= 1) return first;
    const MemoryKind last = KindAt(static_cast<const std::byte*>(p) + bytes - 1);
    return last == first ? first : MemoryKind::kPageable;
  }

  Status CopyAsync(void* dst, const void* src, size_t bytes, GpuStream stream) override {
    DeviceGuard g(device_);
    return FromCuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, S(stream)),
                    "cudaMemcpyAsync");
  }

  Status SynchronizeStream(GpuStream stream) override {
    DeviceGuard g(device_);
    return FromCuda(cudaStreamSynchronize(S(stream)), "cudaStreamSynchronize");
  }

  Result<void*> AllocatePinnedHost(size_t bytes) override {
    DeviceGuard g(device_);
    void* p = nullptr;
    KVTIER_RETURN_IF_ERROR(
        FromCuda(cudaHostAlloc(&p, bytes, cudaHostAllocPortable), "cudaHostAlloc"));
    return p;
  }
  void FreePinnedHost(void* p) override {
    DeviceGuard g(device_);
    (void)cudaFreeHost(p);
  }

  Result<void*> CreateEvent() override {
    DeviceGuard g(device_);
    cudaEvent_t e = nullptr;
    // Blocking sync: a completion thread waiting on an event sleeps instead
    // of spinning on a core the engine may need.
    KVTIER_RETURN_IF_ERROR(
        FromCuda(cudaEventCreateWithFlags(&e, cudaEventDisableTiming | cudaEventBlockingSync),
                 "cudaEventCreateWithFlags"));
    return static_cast<void*>(e);
  }
  void DestroyEvent(void* event) override {
    DeviceGuard g(device_);
    (void)cudaEventDestroy(E(event));
  }
  Status RecordEvent(void* event, GpuStream stream) override {
    DeviceGuard g(device_);
    return FromCuda(cudaEventRecord(E(event), S(stream)), "cudaEventRecord");
  }
  Status WaitEvent(void* event) override {
    DeviceGuard g(device_);
    return FromCuda(cudaEventSynchronize(E(event)), "cudaEventSynchronize");
  }
  Status StreamWaitEvent(GpuStream stream, void* event) override {
    DeviceGuard g(device_);
    return FromCuda(cudaStreamWaitEvent(S(stream), E(event), 0), "cudaStreamWaitEvent");
  }

 private:
  static MemoryKind KindAt(const void* p) {
    cudaPointerAttributes a{};
    const cudaError_t err = cudaPointerGetAttributes(&a, p);
    if (err != cudaSuccess) {
      // Runtimes before CUDA 11 answered InvalidValue for pageable memory.
      (void)cudaGetLastError();
      return MemoryKind::kPageable;
    }
    switch (a.type) {
      case cudaMemoryTypeHost:
        return MemoryKind::kPinnedHost;
      case cudaMemoryTypeDevice:
      case cudaMemoryTypeManaged:
        return MemoryKind::kDevice;
      default:
        return MemoryKind::kPageable;
    }
  }

  const int device_;
  const std::string name_;
  std::byte* const arena_;
  const uint64_t arena_bytes_;
  const cudaStream_t h2d_;
  const cudaStream_t d2h_;
};

}  // namespace

Result<std::unique_ptr<HbmBackend>> NewCudaHbmBackend(int device, uint64_t arena_bytes) {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    return Status::Unavailable(std::string("no CUDA device: ") + cudaGetErrorString(err));
  }
  if (device < 0 || device >= n) {
    return Status::Unavailable("no CUDA device " + std::to_string(device) + " (" +
                               std::to_string(n) + " present)");
  }
  DeviceGuard g(device);
  cudaDeviceProp prop{};
  std::string name = "unknown";
  if (cudaGetDeviceProperties(&prop, device) == cudaSuccess) name = prop.name;
  void* arena = nullptr;
  KVTIER_RETURN_IF_ERROR(FromCuda(cudaMalloc(&arena, arena_bytes), "cudaMalloc of the HBM arena"));
  cudaStream_t h2d = nullptr, d2h = nullptr;
  Status s = FromCuda(cudaStreamCreateWithFlags(&h2d, cudaStreamNonBlocking), "cudaStreamCreate");
  if (s.ok()) {
    s = FromCuda(cudaStreamCreateWithFlags(&d2h, cudaStreamNonBlocking), "cudaStreamCreate");
  }
  if (!s.ok()) {
    if (h2d != nullptr) (void)cudaStreamDestroy(h2d);
    (void)cudaFree(arena);
    return s;
  }
  return std::unique_ptr<HbmBackend>(std::make_unique<CudaHbmBackend>(
      device, std::move(name), static_cast<std::byte*>(arena), arena_bytes, h2d, d2h));
}

}  // namespace kvtier
