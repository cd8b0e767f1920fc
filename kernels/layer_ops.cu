// CUDA kernels of the per-token layer operations (declared in layer_ops.cuh).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "kernels/layer_ops.cuh"
#include "kernels/layer_ops_internal.h"

namespace kvtier {
namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 1 << 20;  // grid-stride loops cover the rest

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

// The block's sum of v, in a fixed order (warp trees, then warp 0 over the
// warps' sums), returned to every thread. All threads must call it.
// shared: [33] floats.
__device__ float BlockSum(float v, float* shared) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  v = WarpSum(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < static_cast<int>(blockDim.x >> 5) ? shared[lane] : 0.0f;
    v = WarpSum(v);
    if (lane == 0) shared[32] = v;
  }
  __syncthreads();
  return shared[32];
}

// Grid: a stride loop of blocks over rows, one row per block at a time.
// Block: 256 threads, strided over the row for the sum of squares (one block
// reduction), then over it again to scale.
//   x, out [rows][n] (out may alias x); weight [n]
__global__ void RmsNormKernel(const float* x, const float* __restrict__ weight, int64_t rows, int n,
                              float eps, float* out) {
  __shared__ float shared[33];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * n;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) ss += xr[i] * xr[i];
    ss = BlockSum(ss, shared);
    const float inv = 1.0f / sqrtf(ss / static_cast<float>(n) + eps);
    float* outr = out + r * n;
    for (int i = threadIdx.x; i < n; i += blockDim.x) outr[i] = weight[i] * (xr[i] * inv);
    __syncthreads();  // every thread has read shared[32] before the next row's sum
  }
}

// Grid: a 1-D stride loop over the rows * width / 2 pairs, one pair per
// thread, so consecutive threads touch consecutive pairs of a row. A row whose
// position is outside [0, max_pos) is left as it is (the CPU twin refuses it).
//   x [rows][width]; positions [rows]; cos_table, sin_table [max_pos][head_dim / 2]
__global__ void RopeKernel(float* x, int64_t rows, int width, int head_dim,
                           const int32_t* __restrict__ positions,
                           const float* __restrict__ cos_table, const float* __restrict__ sin_table,
                           int max_pos) {
  const int pairs_per_row = width / 2;
  const int half = head_dim / 2;
  const int64_t total = rows * pairs_per_row;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = idx / pairs_per_row;
    const int pair = static_cast<int>(idx - r * pairs_per_row);
    const int32_t pos = positions[r];
    if (pos < 0 || pos >= max_pos) continue;
    const int j = pair % half;
    const float c = cos_table[static_cast<int64_t>(pos) * half + j];
    const float s = sin_table[static_cast<int64_t>(pos) * half + j];
    float* p = x + r * width + 2 * pair;
    const float x0 = p[0], x1 = p[1];
    p[0] = x0 * c - x1 * s;
    p[1] = x0 * s + x1 * c;
  }
}

// Grid: a 1-D stride loop over the n elements.
//   gate, up, out [n] (out may alias gate or up)
__global__ void SwiGluKernel(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = gate[i];
    out[i] = g * (1.0f / (1.0f + expf(-g))) * up[i];
  }
}

// Grid: a 1-D stride loop over the n elements.
//   y, x [n]
__global__ void AddKernel(float* y, const float* x, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    y[i] += x[i];
  }
}

// Grid: a stride loop of blocks over output rows; threads over the row's
// width. A row whose id is outside [0, table_rows) is skipped and left
// untouched, never clamped (the CPU twin refuses such ids with InvalidArgument).
//   table [table_rows][width]; ids [rows]; out [rows][width]
__global__ void GatherKernel(const float* __restrict__ table, int64_t table_rows,
                             const int32_t* __restrict__ ids, int64_t rows, int width,
                             float* __restrict__ out) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int32_t id = ids[r];
    if (id < 0 || id >= table_rows) continue;
    const float* src = table + static_cast<int64_t>(id) * width;
    float* dst = out + r * width;
    for (int i = threadIdx.x; i < width; i += blockDim.x) dst[i] = src[i];
  }
}

Status LaunchResult(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return Status::Unavailable(std::string(what) + " launch failed: " + cudaGetErrorString(err));
  }
  return Status::Ok();
}

unsigned GridFor(int64_t items, int64_t per_block) {
  return static_cast<unsigned>(
      std::clamp<int64_t>((items + per_block - 1) / per_block, 1, kMaxBlocks));
}

}  // namespace

Status RmsNormRows(const float* x, const float* weight, int64_t rows, int n, float eps, float* out,
                   GpuStream stream) {
  KVTIER_RETURN_IF_ERROR(CheckRmsNormArguments(x, weight, rows, n, eps, out));
  if (rows == 0) return Status::Ok();
  RmsNormKernel<<<GridFor(rows, 1), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      x, weight, rows, n, eps, out);
  return LaunchResult("RmsNormRows");
}

Status RopeRows(float* x, int64_t rows, int width, int head_dim, const int32_t* positions,
                const float* cos_table, const float* sin_table, int max_pos, GpuStream stream) {
  KVTIER_RETURN_IF_ERROR(
      CheckRopeArguments(x, rows, width, head_dim, positions, cos_table, sin_table, max_pos));
  if (rows == 0) return Status::Ok();
  RopeKernel<<<GridFor(rows * (width / 2), kThreads), kThreads, 0,
               static_cast<cudaStream_t>(stream)>>>(x, rows, width, head_dim, positions, cos_table,
                                                    sin_table, max_pos);
  return LaunchResult("RopeRows");
}

Status SwiGlu(const float* gate, const float* up, int64_t n, float* out, GpuStream stream) {
  KVTIER_RETURN_IF_ERROR(CheckElementwiseArguments("SwiGlu", gate, up, n, out));
  if (n == 0) return Status::Ok();
  SwiGluKernel<<<GridFor(n, kThreads), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(gate, up,
                                                                                         n, out);
  return LaunchResult("SwiGlu");
}

Status AddInPlace(float* y, const float* x, int64_t n, GpuStream stream) {
  KVTIER_RETURN_IF_ERROR(CheckElementwiseArguments("AddInPlace", y, x, n, y));
  if (n == 0) return Status::Ok();
  AddKernel<<<GridFor(n, kThreads), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(y, x, n);
  return LaunchResult("AddInPlace");
}

Status GatherRows(const float* table, int64_t table_rows, const int32_t* ids, int64_t rows,
                  int width, float* out, GpuStream stream) {
  KVTIER_RETURN_IF_ERROR(CheckGatherArguments(table, table_rows, ids, rows, width, out));
  if (rows == 0) return Status::Ok();
  const int threads = width >= 256 ? 256 : ((width + 31) / 32) * 32;
  GatherKernel<<<GridFor(rows, 1), threads, 0, static_cast<cudaStream_t>(stream)>>>(
      table, table_rows, ids, rows, width, out);
  return LaunchResult("GatherRows");
}

}  // namespace kvtier
