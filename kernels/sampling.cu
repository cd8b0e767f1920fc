// CUDA kernels of token sampling (declared in sampling.cuh).
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>

#include "kernels/sampling.cuh"
#include "kernels/sampling_internal.h"

namespace kvtier {
namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kThreads = 512;
constexpr int kWalkItems = 8;            // consecutive tokens per thread in the walk
constexpr int64_t kMaxBlocks = 1 << 20;  // rows beyond are a stride loop

// Shared scratch of the block reductions below; each reduction ends with a
// barrier after which every thread has read its result, so calls may follow
// one another.
struct Scratch {
  float f[33];
  int i[33];
};

// (v, i) beats (bv, bi): larger value, or equal value and smaller index.
__device__ __forceinline__ bool Better(float v, int i, float bv, int bi) {
  return v > bv || (v == bv && i < bi);
}

// The row's maximum and the first index holding it, NaN skipped; *index is
// INT_MAX when the row is all NaN. All threads must call it.
__device__ void BlockArgmax(const float* row, int vocab, Scratch& sh, float* value, int* index) {
  float bv = -INFINITY;
  int bi = INT_MAX;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float v = row[i];
    if (!isnan(v) && Better(v, i, bv, bi)) {
      bv = v;
      bi = i;
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(kFullMask, bv, o);
    const int oi = __shfl_xor_sync(kFullMask, bi, o);
    if (Better(ov, oi, bv, bi)) {
      bv = ov;
      bi = oi;
    }
  }
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  if (lane == 0) {
    sh.f[warp] = bv;
    sh.i[warp] = bi;
  }
  __syncthreads();
  if (warp == 0) {
    const bool have = lane < static_cast<int>(blockDim.x >> 5);
    bv = have ? sh.f[lane] : -INFINITY;
    bi = have ? sh.i[lane] : INT_MAX;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(kFullMask, bv, o);
      const int oi = __shfl_xor_sync(kFullMask, bi, o);
      if (Better(ov, oi, bv, bi)) {
        bv = ov;
        bi = oi;
      }
    }
    if (lane == 0) {
      sh.f[32] = bv;
      sh.i[32] = bi;
    }
  }
  __syncthreads();
  *value = sh.f[32];
  *index = sh.i[32];
  __syncthreads();
}

// The block's sum of v in a fixed order, to every thread.
__device__ float BlockSum(float v, Scratch& sh) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  if (lane == 0) sh.f[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < static_cast<int>(blockDim.x >> 5) ? sh.f[lane] : 0.0f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
    if (lane == 0) sh.f[32] = v;
  }
  __syncthreads();
  const float total = sh.f[32];
  __syncthreads();
  return total;
}

// The block's minimum (or, with kMax, maximum) of v, to every thread.
template <bool kMax>
__device__ int BlockMinMax(int v, Scratch& sh) {
  auto pick = [](int a, int b) { return kMax ? max(a, b) : min(a, b); };
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = pick(v, __shfl_xor_sync(kFullMask, v, o));
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  if (lane == 0) sh.i[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < static_cast<int>(blockDim.x >> 5) ? sh.i[lane] : (kMax ? INT_MIN : INT_MAX);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = pick(v, __shfl_xor_sync(kFullMask, v, o));
    if (lane == 0) sh.i[32] = v;
  }
  __syncthreads();
  const int result = sh.i[32];
  __syncthreads();
  return result;
}

// The sum of v over the threads before this one (in thread order); *total is
// the sum over all threads.
__device__ float BlockExclusiveScan(float v, Scratch& sh, float* total) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  float inclusive = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const float up = __shfl_up_sync(kFullMask, inclusive, o);
    if (lane >= o) inclusive += up;
  }
  if (lane == 31) sh.f[warp] = inclusive;
  __syncthreads();
  if (warp == 0) {
    const int warps = static_cast<int>(blockDim.x >> 5);
    float w = lane < warps ? sh.f[lane] : 0.0f;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const float up = __shfl_up_sync(kFullMask, w, o);
      if (lane >= o) w += up;
    }
    if (lane < warps) sh.f[lane] = w;  // inclusive prefix over the warps
    if (lane == 31) sh.f[32] = w;
  }
  __syncthreads();
  const float before_warp = warp > 0 ? sh.f[warp - 1] : 0.0f;
  *total = sh.f[32];
  __syncthreads();
  return before_warp + inclusive - v;
}

// Token i's unnormalised probability: the maximum has exp(0) = 1. NaN logits
// give NaN, which no comparison below keeps.
__device__ __forceinline__ float Weight(const float* row, int i, float mx, float temperature) {
  return expf((row[i] - mx) / temperature);
}

// Grid: a stride loop of blocks over rows, one row per block at a time.
// Block: 512 threads, strided over the row for the maximum.
//   logits [rows][vocab]; out [rows]
__global__ void __launch_bounds__(kThreads)
    ArgmaxKernel(const float* __restrict__ logits, int64_t rows, int vocab,
                 int32_t* __restrict__ out) {
  __shared__ Scratch sh;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    float mx;
    int arg;
    BlockArgmax(logits + r * vocab, vocab, sh, &mx, &arg);
    if (threadIdx.x == 0) out[r] = arg == INT_MAX ? 0 : arg;
  }
}

// Grid: a stride loop of blocks over rows, one row per block at a time.
// Block: 512 threads. Per row: the maximum (block argmax); the total weight Z;
// the threshold t by bisection on the bit pattern of a non-negative float in
// [0, 1] (weights are in [0, 1] and such bit patterns order like the values),
// each step one block-wide sum of the weights >= mid, keeping the largest t
// whose kept mass reaches top_p * Z (~30 steps, exact: t lands on a weight);
// then a walk in index order over segments of 512 * 8 tokens, each thread
// owning 8 consecutive tokens, a block exclusive scan of the kept mass giving
// each thread its starting running mass, and a block minimum of the first
// index whose running mass exceeds uniform * kept mass.
//   logits [rows][vocab]; temperature, top_p, uniform, out [rows]
__global__ void __launch_bounds__(kThreads)
    SampleTopPKernel(const float* __restrict__ logits, int64_t rows, int vocab,
                     const float* __restrict__ temperature, const float* __restrict__ top_p,
                     const float* __restrict__ uniform, int32_t* __restrict__ out) {
  __shared__ Scratch sh;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* row = logits + r * vocab;
    float mx;
    int arg;
    BlockArgmax(row, vocab, sh, &mx, &arg);
    const float temp = temperature[r];
    // Greedy at temperature 0; also when the maximum is not finite (no
    // distribution to sample). Uniform over the block.
    if (!(temp > 0.0f) || arg == INT_MAX || !isfinite(mx)) {
      if (threadIdx.x == 0) out[r] = arg == INT_MAX ? 0 : arg;
      continue;
    }
    auto mass = [&](float t) {
      float s = 0.0f;
      for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        const float e = Weight(row, i, mx, temp);
        s += e >= t ? e : 0.0f;
      }
      return BlockSum(s, sh);
    };
    const float z = mass(0.0f);
    const float target = top_p[r] * z;
    // Invariant: mass(lo) >= target > mass(hi); mass(0) = z and nothing exceeds 1.
    uint32_t lo = 0;
    uint32_t hi = __float_as_uint(1.0f) + 1;
    float kept = z;
    while (hi - lo > 1) {
      const uint32_t mid = lo + (hi - lo) / 2;
      const float m = mass(__uint_as_float(mid));
      if (m >= target) {
        lo = mid;
        kept = m;
      } else {
        hi = mid;
      }
    }
    const float t = __uint_as_float(lo);
    const float thresh = uniform[r] * kept;

    int chosen = INT_MAX;
    float running = 0.0f;
    for (int base = 0; base < vocab; base += kThreads * kWalkItems) {
      const int first = base + static_cast<int>(threadIdx.x) * kWalkItems;
      float e[kWalkItems];
      float local = 0.0f;
#pragma unroll
      for (int k = 0; k < kWalkItems; ++k) {
        const int i = first + k;
        float w = i < vocab ? Weight(row, i, mx, temp) : 0.0f;
        if (!(w >= t)) w = 0.0f;  // t > 0, so kept <=> w > 0 from here on
        e[k] = w;
        local += w;
      }
      float total;
      float run = running + BlockExclusiveScan(local, sh, &total);
      int candidate = INT_MAX;
#pragma unroll
      for (int k = 0; k < kWalkItems; ++k) {
        if (candidate == INT_MAX && e[k] > 0.0f) {
          run += e[k];
          if (run > thresh) candidate = first + k;
        }
      }
      candidate = BlockMinMax<false>(candidate, sh);
      if (candidate != INT_MAX) {  // uniform over the block
        chosen = candidate;
        break;
      }
      running += total;
    }
    if (chosen == INT_MAX) {
      // Rounding kept the running mass at or below the threshold: the last kept token.
      int last = INT_MIN;
      for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        if (Weight(row, i, mx, temp) >= t) last = max(last, i);
      }
      chosen = BlockMinMax<true>(last, sh);
    }
    if (threadIdx.x == 0) out[r] = chosen;
  }
}

Status LaunchResult(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return Status::Unavailable(std::string(what) + " launch failed: " + cudaGetErrorString(err));
  }
  return Status::Ok();
}

}  // namespace

Status ArgmaxRows(const float* logits, int64_t rows, int vocab, int32_t* out, GpuStream stream) {
  KVTIER_RETURN_IF_ERROR(CheckArgmaxArguments(logits, rows, vocab, out));
  if (rows == 0) return Status::Ok();
  const auto grid = static_cast<unsigned>(std::min(rows, kMaxBlocks));
  ArgmaxKernel<<<grid, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(logits, rows, vocab, out);
  return LaunchResult("ArgmaxRows");
}

Status SampleTopP(const float* logits, int64_t rows, int vocab, const float* temperature,
                  const float* top_p, const float* uniform, int32_t* out, GpuStream stream) {
  KVTIER_RETURN_IF_ERROR(
      CheckSampleArguments(logits, rows, vocab, temperature, top_p, uniform, out));
  if (rows == 0) return Status::Ok();
  if (vocab > INT_MAX - kThreads * kWalkItems) {
    return Status::InvalidArgument("SampleTopP: vocab too large");
  }
  const auto grid = static_cast<unsigned>(std::min(rows, kMaxBlocks));
  SampleTopPKernel<<<grid, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      logits, rows, vocab, temperature, top_p, uniform, out);
  return LaunchResult("SampleTopP");
}

}  // namespace kvtier
