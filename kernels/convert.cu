// CUDA kernel of convert.cuh.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "kernels/convert.cuh"

namespace kvtier {
namespace {

// Grid: a 1-D grid-stride loop, one element per thread per step.
//   in [n] f32, out [n] bf16
__global__ void F32ToBf16Kernel(const float* __restrict__ in, int64_t n,
                                __nv_bfloat16* __restrict__ out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = __float2bfloat16_rn(in[i]);
  }
}

}  // namespace

Status ConvertF32ToBf16(const float* in, int64_t n, uint16_t* out, GpuStream stream) {
  if (n < 0) return Status::InvalidArgument("negative element count");
  if (n == 0) return Status::Ok();
  if (in == nullptr || out == nullptr) return Status::InvalidArgument("null buffer");
  constexpr int kThreads = 256;
  const int64_t grid = std::min<int64_t>((n + kThreads - 1) / kThreads, 65535LL * 8);
  F32ToBf16Kernel<<<grid, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      in, n, reinterpret_cast<__nv_bfloat16*>(out));
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return Status::Unavailable(std::string("f32->bf16 launch failed: ") + cudaGetErrorString(err));
  }
  return Status::Ok();
}

}  // namespace kvtier
