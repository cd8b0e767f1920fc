// CUDA kernel of skinny_gemm.cuh.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "kernels/skinny_gemm.cuh"
#include "kernels/skinny_gemm_internal.h"

namespace kvtier {
namespace {

constexpr int kWarps = 8;  // warps per CUDA block, one output column each at a time

// Grid: x = groups of kWarps outputs (a stride loop over gridDim.x); each warp
// computes one output o for every row: its 32 lanes read w[o] in 16-byte
// pieces (8 bf16) at stride 32 pieces, so a warp reads 512 contiguous bytes
// per step, multiply them with the matching x elements (cached: x is small)
// and reduce over the warp at the end.
//   x [rows][k] f32, w [outs][k] bf16, y [rows][outs] f32
template <int kRows>
__global__ void SkinnyGemmKernel(const float* __restrict__ x, const uint4* __restrict__ w,
                                 int64_t outs, int64_t k, float* __restrict__ y) {
  const int lane = threadIdx.x % 32;
  const int64_t pieces = k / 8;
  for (int64_t o = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32; o < outs;
       o += static_cast<int64_t>(gridDim.x) * kWarps) {
    float acc[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) acc[r] = 0.0f;
    const uint4* row = w + o * pieces;
    for (int64_t p = lane; p < pieces; p += 32) {
      const uint4 packed = __ldg(row + p);
      const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&packed);
      float wf[8];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float2 f = __bfloat1622float2(h[j]);
        wf[2 * j] = f.x;
        wf[2 * j + 1] = f.y;
      }
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const float4* xr = reinterpret_cast<const float4*>(x + r * k + p * 8);
        const float4 a = __ldg(xr), b = __ldg(xr + 1);
        acc[r] += a.x * wf[0] + a.y * wf[1] + a.z * wf[2] + a.w * wf[3] + b.x * wf[4] +
                  b.y * wf[5] + b.z * wf[6] + b.w * wf[7];
      }
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      float v = acc[r];
      for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
      if (lane == 0) y[r * outs + o] = v;
    }
  }
}

template <int kRows>
void Launch(const float* x, const uint16_t* w, int64_t outs, int64_t k, float* y, cudaStream_t st) {
  const int64_t grid = std::min<int64_t>((outs + kWarps - 1) / kWarps, 1 << 20);
  SkinnyGemmKernel<kRows><<<static_cast<unsigned>(grid), kWarps * 32, 0, st>>>(
      x, reinterpret_cast<const uint4*>(w), outs, k, y);
}

}  // namespace

Status SkinnyGemmBf16(const float* x, int rows, const uint16_t* w, int64_t outs, int64_t k,
                      float* y, GpuStream stream) {
  KVTIER_RETURN_IF_ERROR(CheckSkinnyGemmArguments(x, rows, w, outs, k, y));
  if (reinterpret_cast<uintptr_t>(x) % 16 != 0) {
    return Status::InvalidArgument("skinny GEMM activations must be 16-byte aligned on the GPU");
  }
  auto* st = static_cast<cudaStream_t>(stream);
  switch (rows) {
    case 1:
      Launch<1>(x, w, outs, k, y, st);
      break;
    case 2:
      Launch<2>(x, w, outs, k, y, st);
      break;
    case 3:
      Launch<3>(x, w, outs, k, y, st);
      break;
    case 4:
      Launch<4>(x, w, outs, k, y, st);
      break;
    case 5:
      Launch<5>(x, w, outs, k, y, st);
      break;
    case 6:
      Launch<6>(x, w, outs, k, y, st);
      break;
    case 7:
      Launch<7>(x, w, outs, k, y, st);
      break;
    default:
      Launch<8>(x, w, outs, k, y, st);
      break;
  }
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return Status::Unavailable(std::string("skinny GEMM launch failed: ") +
                               cudaGetErrorString(err));
  }
  return Status::Ok();
}

}  // namespace kvtier
