// device.h on the CUDA runtime.
#include <cuda_runtime_api.h>

#include "kernels/device.h"

namespace kvtier {
namespace {

Status FromCuda(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return Status::Ok();
  return Status::Unavailable(std::string(what) + ": " + cudaGetErrorString(err));
}

}  // namespace

bool DeviceAvailable() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

std::string DeviceDescription() {
  int runtime = 0;
  cudaRuntimeGetVersion(&runtime);
  std::string s = "CUDA runtime " + std::to_string(runtime / 1000) + "." +
                  std::to_string((runtime % 1000) / 10);
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) return s + ", no device: " + cudaGetErrorString(err);
  s += ", " + std::to_string(n) + " device(s)";
  if (n > 0) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) s += ": " + std::string(prop.name);
  }
  return s;
}

Result<DeviceBuffer> DeviceBuffer::Allocate(size_t bytes) {
  DeviceBuffer b;
  if (bytes == 0) return b;
  KVTIER_RETURN_IF_ERROR(FromCuda(cudaMalloc(&b.ptr_, bytes), "cudaMalloc"));
  b.bytes_ = bytes;
  return b;
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    if (ptr_) cudaFree(ptr_);
    ptr_ = o.ptr_;
    bytes_ = o.bytes_;
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}

DeviceBuffer::~DeviceBuffer() {
  if (ptr_) cudaFree(ptr_);
}

Status CopyToDevice(void* dst, const void* src, size_t bytes) {
  return FromCuda(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "cudaMemcpy H2D");
}

Status CopyToHost(void* dst, const void* src, size_t bytes) {
  return FromCuda(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
}

Status SynchronizeStream(GpuStream stream) {
  return FromCuda(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)),
                  "cudaStreamSynchronize");
}

Status PinHostMemory(void* p, size_t bytes) {
  if (!DeviceAvailable()) return Status::Unavailable("no CUDA device to pin host memory for");
  // Portable: pinned for every device, not only the current one.
  const cudaError_t err = cudaHostRegister(p, bytes, cudaHostRegisterPortable);
  if (err != cudaSuccess) (void)cudaGetLastError();  // not sticky: clear it for later calls
  return FromCuda(err, "cudaHostRegister");
}

void UnpinHostMemory(void* p) { (void)cudaHostUnregister(p); }

}  // namespace kvtier
