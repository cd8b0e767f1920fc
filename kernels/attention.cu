// CUDA kernels of paged attention and the KV store (declared in attention.cuh).
//
// All math is f32: K and V are converted on load, q is pre-multiplied by
// scale * log2(e) so that the softmax uses exp2f, and the running max and sum
// of the online softmax are kept per query row and head.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>

#include "kernels/attention.cuh"
#include "kernels/attention_internal.h"

namespace kvtier {
namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr float kLog2e = 1.4426950408889634f;
constexpr int kMaxHeadDim = 256;

// The pool's element types: raw bits in memory, f32 in registers. Stores round
// to nearest even.
struct F32Kv {
  using Raw = uint32_t;
  static __device__ __forceinline__ float Load(Raw r) { return __uint_as_float(r); }
  static __device__ __forceinline__ Raw Store(float f) { return __float_as_uint(f); }
};
struct F16Kv {
  using Raw = uint16_t;
  static __device__ __forceinline__ float Load(Raw r) { return __half2float(__ushort_as_half(r)); }
  static __device__ __forceinline__ Raw Store(float f) {
    return __half_as_ushort(__float2half_rn(f));
  }
};
struct Bf16Kv {
  using Raw = uint16_t;
  static __device__ __forceinline__ float Load(Raw r) {
    return __uint_as_float(static_cast<uint32_t>(r) << 16);
  }
  static __device__ __forceinline__ Raw Store(float f) {
    return __bfloat16_as_ushort(__float2bfloat16_rn(f));
  }
};

// Converts the two 16-bit elements of a little-endian 32-bit word.
template <class Kv>
__device__ __forceinline__ void SplitWord(uint32_t w, float* out) {
  out[0] = Kv::Load(static_cast<typename Kv::Raw>(w & 0xffffu));
  out[1] = Kv::Load(static_cast<typename Kv::Raw>(w >> 16));
}

// Loads N consecutive elements at p as f32 with the widest loads (at most 16
// bytes) that N * sizeof(Raw) allows; p must be aligned to min(16, N * sizeof(Raw)).
template <class Kv, int N>
__device__ __forceinline__ void LoadRow(const typename Kv::Raw* p, float (&out)[N]) {
  if constexpr (sizeof(typename Kv::Raw) == 4) {
    if constexpr (N % 4 == 0) {
#pragma unroll
      for (int c = 0; c < N / 4; ++c) {
        const uint4 u = __ldg(reinterpret_cast<const uint4*>(p) + c);
        out[4 * c + 0] = Kv::Load(u.x);
        out[4 * c + 1] = Kv::Load(u.y);
        out[4 * c + 2] = Kv::Load(u.z);
        out[4 * c + 3] = Kv::Load(u.w);
      }
    } else if constexpr (N == 2) {
      const uint2 u = __ldg(reinterpret_cast<const uint2*>(p));
      out[0] = Kv::Load(u.x);
      out[1] = Kv::Load(u.y);
    } else {
      static_assert(N == 1, "unsupported row load");
      out[0] = Kv::Load(__ldg(reinterpret_cast<const unsigned int*>(p)));
    }
  } else {
    if constexpr (N % 8 == 0) {
#pragma unroll
      for (int c = 0; c < N / 8; ++c) {
        const uint4 u = __ldg(reinterpret_cast<const uint4*>(p) + c);
        SplitWord<Kv>(u.x, out + 8 * c + 0);
        SplitWord<Kv>(u.y, out + 8 * c + 2);
        SplitWord<Kv>(u.z, out + 8 * c + 4);
        SplitWord<Kv>(u.w, out + 8 * c + 6);
      }
    } else if constexpr (N == 4) {
      const uint2 u = __ldg(reinterpret_cast<const uint2*>(p));
      SplitWord<Kv>(u.x, out + 0);
      SplitWord<Kv>(u.y, out + 2);
    } else if constexpr (N == 2) {
      SplitWord<Kv>(__ldg(reinterpret_cast<const unsigned int*>(p)), out);
    } else {
      static_assert(N == 1, "unsupported row load");
      out[0] = Kv::Load(__ldg(reinterpret_cast<const unsigned short*>(p)));
    }
  }
}

__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

struct BatchArgs {
  const void* pool;
  const AttentionChunk* chunks;
  const int32_t* block_tables;
  int32_t max_pages;
  int32_t num_chunks;
  PagedKvIndex index;  // offsets for the layer read or written
};

// ---------------------------------------------------------------------------
// StoreKv

// Grid: x = chunk, y = token of the chunk (a stride loop over gridDim.y when
// the chunk is longer). Block: a stride loop over the token's
// [2][kv_heads][head_dim] elements, so consecutive threads write consecutive
// elements of one head's row.
//   k, v   [rows][kv_heads][head_dim] f32
//   pool   [num_pages][layers][2][kv_heads][block_tokens][head_dim]  (Kv::Raw)
//   chunks [num_chunks]; block_tables [num_tables][max_pages]
template <class Kv>
__global__ void StoreKvKernel(BatchArgs a, int kv_heads, const float* __restrict__ k,
                              const float* __restrict__ v) {
  using Raw = typename Kv::Raw;
  const AttentionChunk ch = a.chunks[blockIdx.x];
  const int32_t* table = a.block_tables + static_cast<int64_t>(ch.table) * a.max_pages;
  const int hd = a.index.head_dim;
  const int per_kv = kv_heads * hd;
  Raw* pool = static_cast<Raw*>(const_cast<void*>(a.pool));
  for (int t = blockIdx.y; t < ch.num_tokens; t += gridDim.y) {
    const int64_t row = static_cast<int64_t>(ch.first_row) + t;
    const int64_t k_row0 = a.index.KeyRow(table, static_cast<int64_t>(ch.start_pos) + t, 0);
    for (int i = threadIdx.x; i < 2 * per_kv; i += blockDim.x) {
      const int kv = i / per_kv;
      const int e = i - kv * per_kv;
      const int h = e / hd;
      const int d = e - h * hd;
      const float x = (kv == 0 ? k : v)[row * per_kv + e];
      pool[k_row0 + kv * a.index.kv_stride + h * a.index.head_stride + d] = Kv::Store(x);
    }
  }
}

// ---------------------------------------------------------------------------
// Decode: work split over the keys.

struct DecodeArgs {
  BatchArgs b;
  const float* q;
  float* out;
  int n_heads;
  int group;        // query heads per KV head
  int head_groups;  // blocks per KV head: group / kHeads
  float scale_log2;
  bool vec_k;  // K rows can be read 16 bytes at a time
  bool vec_v;  // a lane's kDims V elements can be read in one aligned load
};

// Grid: x = chunk, y = (KV head, group of kHeads query heads that share it),
// z = token of the chunk (a stride loop over gridDim.z when the chunk is
// longer). Block: nw = blockDim.x / 32 warps (4 or 8). Warp w takes the tiles
// of 32 keys w, w + nw, ...: lane l scores key 32 * tile + l against all
// kHeads query heads (its K row read once, vectorised), the warp updates its
// own running max and sum per head, then every lane adds the tile's 32 V rows
// (coalesced) to its output dims [l * kDims, (l + 1) * kDims). At the end the
// warps' (max, sum, output) are merged through shared memory.
//   q, out [rows][n_heads][head_dim] f32
//   pool   [num_pages][layers][2][kv_heads][block_tokens][head_dim]  (Kv::Raw)
//   chunks [num_chunks]; block_tables [num_tables][max_pages]
// Dynamic shared memory: floats [kHeads][32*kDims] q, [nw][kHeads] max,
// [nw][kHeads] sum, [nw][kHeads][32*kDims] output.
template <class Kv, int kDims, int kHeads>
__global__ void __launch_bounds__(256) PagedDecodeKernel(DecodeArgs a) {
  using Raw = typename Kv::Raw;
  constexpr int kPad = 32 * kDims;  // head_dim rounded up to whole lanes
  extern __shared__ float4 decode_smem[];
  const int nw = blockDim.x >> 5;
  float* qs = reinterpret_cast<float*>(decode_smem);
  float* red_m = qs + kHeads * kPad;
  float* red_l = red_m + nw * kHeads;
  float* red_o = red_l + nw * kHeads;

  const AttentionChunk ch = a.b.chunks[blockIdx.x];
  const PagedKvIndex ix = a.b.index;
  const int hd = ix.head_dim;
  const int kv_head = blockIdx.y / a.head_groups;
  const int head0 = kv_head * a.group + (blockIdx.y % a.head_groups) * kHeads;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int my_dim = lane * kDims;
  const int bt_mask = (1 << ix.block_shift) - 1;
  const int32_t* table = a.b.block_tables + static_cast<int64_t>(ch.table) * a.b.max_pages;
  const Raw* k_base =
      static_cast<const Raw*>(a.b.pool) + ix.layer_offset + kv_head * ix.head_stride;
  const Raw* v_base = k_base + ix.kv_stride;

  for (int t = blockIdx.z; t < ch.num_tokens; t += gridDim.z) {
    const int64_t row = static_cast<int64_t>(ch.first_row) + t;
    const int n = ch.start_pos + t + 1;  // keys 0..pos
    for (int i = threadIdx.x; i < kHeads * kPad; i += blockDim.x) {
      const int h = i / kPad;
      const int d = i - h * kPad;
      qs[i] = d < hd ? a.q[(row * a.n_heads + head0 + h) * hd + d] * a.scale_log2 : 0.0f;
    }
    __syncthreads();

    float m[kHeads], l[kHeads], o[kHeads][kDims];
#pragma unroll
    for (int h = 0; h < kHeads; ++h) {
      m[h] = -INFINITY;
      l[h] = 0.0f;
#pragma unroll
      for (int e = 0; e < kDims; ++e) o[h][e] = 0.0f;
    }

    // The loop condition depends on the warp only: the shuffles below see all lanes.
    for (int tile = warp; tile * 32 < n; tile += nw) {
      const int j = tile * 32 + lane;
      const bool valid = j < n;
      int64_t off = 0;  // element offset of key j's row from k_base
      float s[kHeads];
#pragma unroll
      for (int h = 0; h < kHeads; ++h) s[h] = 0.0f;
      if (valid) {
        off = static_cast<int64_t>(table[j >> ix.block_shift]) * ix.page_elems +
              static_cast<int64_t>(j & bt_mask) * hd;
        const Raw* kr = k_base + off;
        if (a.vec_k) {
          constexpr int kW = 16 / static_cast<int>(sizeof(Raw));
          for (int d = 0; d < hd; d += kW) {
            float kk[kW];
            LoadRow<Kv, kW>(kr + d, kk);
#pragma unroll
            for (int h = 0; h < kHeads; ++h) {
#pragma unroll
              for (int e = 0; e < kW; e += 4) {
                const float4 qv = *reinterpret_cast<const float4*>(qs + h * kPad + d + e);
                s[h] += qv.x * kk[e] + qv.y * kk[e + 1] + qv.z * kk[e + 2] + qv.w * kk[e + 3];
              }
            }
          }
        } else {
          for (int d = 0; d < hd; ++d) {
            const float kd = Kv::Load(kr[d]);
#pragma unroll
            for (int h = 0; h < kHeads; ++h) s[h] += qs[h * kPad + d] * kd;
          }
        }
      }
#pragma unroll
      for (int h = 0; h < kHeads; ++h) {
        const float sh = valid ? s[h] : -INFINITY;
        // Lane 0's key is always valid, so the tile max and m_new are finite.
        const float m_new = fmaxf(m[h], WarpMax(sh));
        const float alpha = exp2f(m[h] - m_new);  // 0 on the warp's first tile
        const float pr = exp2f(sh - m_new);       // 0 for invalid keys
        l[h] = l[h] * alpha + pr;
#pragma unroll
        for (int e = 0; e < kDims; ++e) o[h][e] *= alpha;
        m[h] = m_new;
        s[h] = pr;
      }
      const int count = min(32, n - tile * 32);
      for (int jj = 0; jj < count; ++jj) {
        const int64_t v_off = __shfl_sync(kFullMask, off, jj);
        float pj[kHeads];
#pragma unroll
        for (int h = 0; h < kHeads; ++h) pj[h] = __shfl_sync(kFullMask, s[h], jj);
        if (my_dim < hd) {
          float vv[kDims];
          const Raw* vr = v_base + v_off + my_dim;
          if (a.vec_v) {
            LoadRow<Kv, kDims>(vr, vv);
          } else {
#pragma unroll
            for (int e = 0; e < kDims; ++e) vv[e] = my_dim + e < hd ? Kv::Load(vr[e]) : 0.0f;
          }
#pragma unroll
          for (int h = 0; h < kHeads; ++h) {
#pragma unroll
            for (int e = 0; e < kDims; ++e) o[h][e] += pj[h] * vv[e];
          }
        }
      }
    }

    // Merge the warps. A warp that saw no key has m = -inf, l = 0, o = 0 and
    // weighs exp2f(-inf) = 0; warp 0 always saw key 0, so mx is finite.
#pragma unroll
    for (int h = 0; h < kHeads; ++h) {
      const float lw = WarpSum(l[h]);
      if (lane == 0) {
        red_m[warp * kHeads + h] = m[h];
        red_l[warp * kHeads + h] = lw;
      }
#pragma unroll
      for (int e = 0; e < kDims; ++e) red_o[(warp * kHeads + h) * kPad + my_dim + e] = o[h][e];
    }
    __syncthreads();
    for (int i = threadIdx.x; i < kHeads * hd; i += blockDim.x) {
      const int h = i / hd;
      const int d = i - h * hd;
      float mx = -INFINITY;
      for (int w = 0; w < nw; ++w) mx = fmaxf(mx, red_m[w * kHeads + h]);
      float sum = 0.0f, acc = 0.0f;
      for (int w = 0; w < nw; ++w) {
        const float f = exp2f(red_m[w * kHeads + h] - mx);
        sum += red_l[w * kHeads + h] * f;
        acc += red_o[(w * kHeads + h) * kPad + d] * f;
      }
      a.out[(row * a.n_heads + head0 + h) * hd + d] = acc / sum;
    }
    __syncthreads();  // before the next token reuses qs and the merge buffers
  }
}

// ---------------------------------------------------------------------------
// Prefill: query tiles sharing each key tile (flash-attention style).

struct PrefillArgs {
  BatchArgs b;
  const float* q;
  float* out;
  int n_heads;
  int group;
  int row_tiles;  // ceil(max_chunk_tokens / kRows)
  float scale_log2;
  bool vec;  // K and V rows can be read 4 elements at a time
};

constexpr int kPrefillThreads = 128;
constexpr int kPrefillKeys = 32;  // keys per tile

template <int kDimsPad, int kRows>
constexpr size_t PrefillSmemBytes() {
  return sizeof(float) * (static_cast<size_t>(kDimsPad) * (kRows + 4) +
                          static_cast<size_t>(kDimsPad) * (kPrefillKeys + 4) +
                          static_cast<size_t>(kPrefillKeys) * kDimsPad +
                          static_cast<size_t>(kRows) * (kPrefillKeys + 1));
}

// Grid: x = (query tile, chunk) with the chunk fastest and the tiles in
// reverse, so the tiles with the most keys start first; y = query head.
// Block: 128 threads as 16 x 8: thread (tr, tc) = (tid / 8, tid % 8) owns
// query rows tr * kR .. tr * kR + kR - 1 of the tile (kR = kRows / 16), scores
// keys tc * 4 .. tc * 4 + 3 of each key tile against them, and accumulates
// output dims {32 * g + tc * 4 + e}. The 8 threads of a row group are lanes of
// one warp, so row max and sum are shuffles and the probabilities pass
// through shared memory with only __syncwarp. Per key tile: stage K
// (transposed) and V as f32 in shared memory, scores, causal mask, online
// softmax, P V.
//   q, out [rows][n_heads][head_dim] f32
//   pool   [num_pages][layers][2][kv_heads][block_tokens][head_dim]  (Kv::Raw)
//   chunks [num_chunks]; block_tables [num_tables][max_pages]
// Dynamic shared memory (floats): Qt [kDimsPad][kRows + 4] (pre-scaled q,
// transposed), Kt [kDimsPad][36], V [32][kDimsPad], P [kRows][33];
// PrefillSmemBytes() in all.
// Dims d .. d + 3 of key (or value) j of a sequence as f32, zero past the
// sequence's n_keys and past head_dim. `base` points at the layer's K (or V)
// rows of one KV head in page 0; `vec` says 16-byte loads are aligned.
template <class Kv>
__device__ __forceinline__ void LoadKeyDims4(const typename Kv::Raw* base, const int32_t* table,
                                             const PagedKvIndex& ix, int j, int n_keys, int d,
                                             bool vec, float (&out)[4]) {
#pragma unroll
  for (int e = 0; e < 4; ++e) out[e] = 0.0f;
  const int hd = ix.head_dim;
  if (j >= n_keys || d >= hd) return;
  const typename Kv::Raw* row = base +
                                static_cast<int64_t>(table[j >> ix.block_shift]) * ix.page_elems +
                                static_cast<int64_t>(j & ((1 << ix.block_shift) - 1)) * hd + d;
  if (vec) {
    LoadRow<Kv, 4>(row, out);
  } else {
#pragma unroll
    for (int e = 0; e < 4; ++e) out[e] = d + e < hd ? Kv::Load(row[e]) : 0.0f;
  }
}

template <class Kv, int kDimsPad, int kRows>
__global__ void __launch_bounds__(kPrefillThreads) PagedPrefillKernel(PrefillArgs a) {
  using Raw = typename Kv::Raw;
  constexpr int kKeys = kPrefillKeys;
  constexpr int kR = kRows / 16;
  constexpr int kQStride = kRows + 4;  // keeps rows 16-byte aligned
  constexpr int kKStride = kKeys + 4;
  constexpr int kPStride = kKeys + 1;  // P reads of 4 rows hit 4 banks
  constexpr int kGroups = kDimsPad / 32;
  static_assert(kR == 2 || kR == 4, "2 or 4 query rows per thread");
  extern __shared__ float4 prefill_smem[];
  float* qt = reinterpret_cast<float*>(prefill_smem);
  float* kt = qt + kDimsPad * kQStride;
  float* vs = kt + kDimsPad * kKStride;
  float* ps = vs + kKeys * kDimsPad;

  const int chunk_index = static_cast<int>(blockIdx.x % static_cast<unsigned>(a.b.num_chunks));
  const int tile = a.row_tiles - 1 - static_cast<int>(blockIdx.x / a.b.num_chunks);
  const AttentionChunk ch = a.b.chunks[chunk_index];
  const int row0 = tile * kRows;
  if (row0 >= ch.num_tokens) return;  // uniform over the block, before any barrier
  const int rows_here = min(kRows, ch.num_tokens - row0);
  const int pos0 = ch.start_pos + row0;
  const int n_keys = pos0 + rows_here;  // keys 0 .. the last row's position
  const int head = blockIdx.y;
  const int kv_head = head / a.group;
  const PagedKvIndex ix = a.b.index;
  const int hd = ix.head_dim;
  const int tid = threadIdx.x;
  const int tr = tid >> 3;
  const int tc = tid & 7;
  const int32_t* table = a.b.block_tables + static_cast<int64_t>(ch.table) * a.b.max_pages;
  const Raw* k_base =
      static_cast<const Raw*>(a.b.pool) + ix.layer_offset + kv_head * ix.head_stride;
  const Raw* v_base = k_base + ix.kv_stride;
  const int64_t q_row0 = static_cast<int64_t>(ch.first_row) + row0;

  // Q tile, scaled, transposed; zero beyond the chunk's rows and head_dim.
  for (int i = tid; i < kRows * kDimsPad; i += kPrefillThreads) {
    const int r = i / kDimsPad;
    const int d = i - r * kDimsPad;
    float x = 0.0f;
    if (r < rows_here && d < hd) x = a.q[((q_row0 + r) * a.n_heads + head) * hd + d] * a.scale_log2;
    qt[d * kQStride + r] = x;
  }

  float m[kR], l[kR], o[kR][kGroups * 4];
#pragma unroll
  for (int i = 0; i < kR; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.0f;
#pragma unroll
    for (int c = 0; c < kGroups * 4; ++c) o[i][c] = 0.0f;
  }

  for (int key0 = 0; key0 < n_keys; key0 += kKeys) {
    __syncthreads();  // the Q tile is written and the previous key tile consumed
    // K tile, transposed: consecutive threads take consecutive keys (conflict-free stores).
    for (int i = tid; i < kKeys * (kDimsPad / 4); i += kPrefillThreads) {
      const int key = i % kKeys;
      const int d = (i / kKeys) * 4;
      const int j = key0 + key;
      float kk[4];
      LoadKeyDims4<Kv>(k_base, table, ix, j, n_keys, d, a.vec, kk);
#pragma unroll
      for (int e = 0; e < 4; ++e) kt[(d + e) * kKStride + key] = kk[e];
    }
    // V tile, row-major: consecutive threads take consecutive dims (coalesced loads).
    for (int i = tid; i < kKeys * (kDimsPad / 4); i += kPrefillThreads) {
      const int key = i / (kDimsPad / 4);
      const int d = (i % (kDimsPad / 4)) * 4;
      const int j = key0 + key;
      float vv[4];
      LoadKeyDims4<Kv>(v_base, table, ix, j, n_keys, d, a.vec, vv);
      *reinterpret_cast<float4*>(vs + key * kDimsPad + d) = make_float4(vv[0], vv[1], vv[2], vv[3]);
    }
    __syncthreads();

    // Scores of rows tr * kR + i against keys key0 + tc * 4 + jj.
    float s[kR][4];
#pragma unroll
    for (int i = 0; i < kR; ++i) {
#pragma unroll
      for (int jj = 0; jj < 4; ++jj) s[i][jj] = 0.0f;
    }
#pragma unroll 4
    for (int d = 0; d < hd; ++d) {
      const float4 k4 = *reinterpret_cast<const float4*>(kt + d * kKStride + tc * 4);
      float qv[kR];
      if constexpr (kR == 4) {
        const float4 q4 = *reinterpret_cast<const float4*>(qt + d * kQStride + tr * 4);
        qv[0] = q4.x;
        qv[1] = q4.y;
        qv[2] = q4.z;
        qv[3] = q4.w;
      } else {
        const float2 q2 = *reinterpret_cast<const float2*>(qt + d * kQStride + tr * 2);
        qv[0] = q2.x;
        qv[1] = q2.y;
      }
#pragma unroll
      for (int i = 0; i < kR; ++i) {
        s[i][0] += qv[i] * k4.x;
        s[i][1] += qv[i] * k4.y;
        s[i][2] += qv[i] * k4.z;
        s[i][3] += qv[i] * k4.w;
      }
    }

    // Causal mask and online softmax. Key 0 is unmasked for every row, so each
    // row's max is finite from the first tile on; a later tile that is all
    // masked gives alpha = 1 and p = 0.
#pragma unroll
    for (int i = 0; i < kR; ++i) {
      const int qpos = pos0 + tr * kR + i;
      float mx = -INFINITY;
#pragma unroll
      for (int jj = 0; jj < 4; ++jj) {
        const int key = key0 + tc * 4 + jj;
        if (key > qpos || key >= n_keys) s[i][jj] = -INFINITY;
        mx = fmaxf(mx, s[i][jj]);
      }
      mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 2));
      mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 4));
      const float m_new = fmaxf(m[i], mx);
      const float alpha = exp2f(m[i] - m_new);
      m[i] = m_new;
      float sum = 0.0f;
#pragma unroll
      for (int jj = 0; jj < 4; ++jj) {
        const float pr = exp2f(s[i][jj] - m_new);
        sum += pr;
        ps[(tr * kR + i) * kPStride + tc * 4 + jj] = pr;
      }
      l[i] = l[i] * alpha + sum;  // this thread's share; summed over tc at the end
#pragma unroll
      for (int c = 0; c < kGroups * 4; ++c) o[i][c] *= alpha;
    }
    __syncwarp();  // P rows of a row group are written and read by one warp

    const int count = min(kKeys, n_keys - key0);
    for (int c = 0; c < count; ++c) {
      float pr[kR];
#pragma unroll
      for (int i = 0; i < kR; ++i) pr[i] = ps[(tr * kR + i) * kPStride + c];
#pragma unroll
      for (int g = 0; g < kGroups; ++g) {
        const float4 v4 = *reinterpret_cast<const float4*>(vs + c * kDimsPad + g * 32 + tc * 4);
#pragma unroll
        for (int i = 0; i < kR; ++i) {
          o[i][g * 4 + 0] += pr[i] * v4.x;
          o[i][g * 4 + 1] += pr[i] * v4.y;
          o[i][g * 4 + 2] += pr[i] * v4.z;
          o[i][g * 4 + 3] += pr[i] * v4.w;
        }
      }
    }
  }

#pragma unroll
  for (int i = 0; i < kR; ++i) {
    float sum = l[i];
    sum += __shfl_xor_sync(kFullMask, sum, 1);
    sum += __shfl_xor_sync(kFullMask, sum, 2);
    sum += __shfl_xor_sync(kFullMask, sum, 4);
    const int r = tr * kR + i;
    if (r < rows_here) {
      float* orow = a.out + ((q_row0 + r) * a.n_heads + head) * hd;
#pragma unroll
      for (int g = 0; g < kGroups; ++g) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int d = g * 32 + tc * 4 + e;
          if (d < hd) orow[d] = o[i][g * 4 + e] / sum;
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Launchers

Status LaunchResult(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return Status::Unavailable(std::string(what) + " launch failed: " + cudaGetErrorString(err));
  }
  return Status::Ok();
}

int MultiprocessorCount() {
  int device = 0;
  int count = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
    (void)cudaGetLastError();  // leave no error behind for the launch to report
    return 132;
  }
  return count;
}

// What the launchers need beyond the shared checks: limits of the kernels and
// of the grid, and a pool aligned to its element.
Status CheckLaunchLimits(const KvPagesView& kv, int n_heads) {
  const KvGeometry& g = kv.geometry;
  if (g.head_dim > kMaxHeadDim) {
    return Status::InvalidArgument("head_dim " + std::to_string(g.head_dim) +
                                   " exceeds the attention kernels' limit of " +
                                   std::to_string(kMaxHeadDim));
  }
  if (n_heads > 65535) {
    return Status::InvalidArgument("n_heads " + std::to_string(n_heads) +
                                   " exceeds the grid limit of 65535");
  }
  if (reinterpret_cast<uintptr_t>(kv.pool) % DTypeBytes(g.dtype) != 0) {
    return Status::InvalidArgument("the KV page pool is not aligned to its dtype");
  }
  return Status::Ok();
}

BatchArgs MakeBatchArgs(const KvPagesView& kv, const AttentionBatch& batch, int layer) {
  return {kv.pool,         batch.chunks,     batch.block_tables,
          batch.max_pages, batch.num_chunks, PagedKvIndex::From(kv.geometry, layer)};
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Calls f with a value of the Kv type of dtype d.
template <class F>
void WithKvType(DType d, F&& f) {
  switch (d) {
    case DType::kFloat32:
      f(F32Kv{});
      break;
    case DType::kFloat16:
      f(F16Kv{});
      break;
    case DType::kBFloat16:
      f(Bf16Kv{});
      break;
  }
}

template <class Kv, int kDims>
void LaunchDecodeHeads(int heads, dim3 grid, int threads, size_t smem, cudaStream_t st,
                       const DecodeArgs& a) {
  switch (heads) {
    case 1:
      PagedDecodeKernel<Kv, kDims, 1><<<grid, threads, smem, st>>>(a);
      break;
    case 2:
      PagedDecodeKernel<Kv, kDims, 2><<<grid, threads, smem, st>>>(a);
      break;
    case 4:
      PagedDecodeKernel<Kv, kDims, 4><<<grid, threads, smem, st>>>(a);
      break;
    default:
      if constexpr (kDims * 8 <= 32) {
        PagedDecodeKernel<Kv, kDims, 8><<<grid, threads, smem, st>>>(a);
      }
      break;
  }
}

template <class Kv>
void LaunchDecode(int dims, int heads, dim3 grid, int threads, size_t smem, cudaStream_t st,
                  const DecodeArgs& a) {
  switch (dims) {
    case 1:
      LaunchDecodeHeads<Kv, 1>(heads, grid, threads, smem, st, a);
      break;
    case 2:
      LaunchDecodeHeads<Kv, 2>(heads, grid, threads, smem, st, a);
      break;
    case 4:
      LaunchDecodeHeads<Kv, 4>(heads, grid, threads, smem, st, a);
      break;
    default:
      LaunchDecodeHeads<Kv, 8>(heads, grid, threads, smem, st, a);
      break;
  }
}

template <class Kv, int kDimsPad, int kRows>
Status LaunchPrefill(const PrefillArgs& a, int64_t num_chunks, cudaStream_t st) {
  constexpr size_t kSmem = PrefillSmemBytes<kDimsPad, kRows>();
  auto* kernel = PagedPrefillKernel<Kv, kDimsPad, kRows>;
  if (kSmem > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(
        kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kSmem));
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      return Status::Unavailable(std::string("PagedAttentionPrefill shared memory: ") +
                                 cudaGetErrorString(err));
    }
  }
  const dim3 grid(static_cast<unsigned>(num_chunks * a.row_tiles),
                  static_cast<unsigned>(a.n_heads));
  kernel<<<grid, kPrefillThreads, kSmem, st>>>(a);
  return LaunchResult("PagedAttentionPrefill");
}

// Picks the instantiation for head_dim: dims padded to 32, 64, 128 or 256,
// 64 query rows per tile (32 for the widest heads, to bound registers).
template <class Kv>
Status LaunchPrefillForDims(int head_dim, int max_chunk_tokens, PrefillArgs a, int64_t num_chunks,
                            cudaStream_t st) {
  const int rows = head_dim <= 128 ? 64 : 32;
  a.row_tiles = (max_chunk_tokens + rows - 1) / rows;
  if (head_dim <= 32) return LaunchPrefill<Kv, 32, 64>(a, num_chunks, st);
  if (head_dim <= 64) return LaunchPrefill<Kv, 64, 64>(a, num_chunks, st);
  if (head_dim <= 128) return LaunchPrefill<Kv, 128, 64>(a, num_chunks, st);
  return LaunchPrefill<Kv, 256, 32>(a, num_chunks, st);
}

}  // namespace

Status StoreKv(const KvPagesView& kv, const AttentionBatch& batch, int layer, const float* k,
               const float* v, GpuStream stream) {
  KVTIER_RETURN_IF_ERROR(CheckStoreArguments(kv, batch, layer, k, v));
  if (reinterpret_cast<uintptr_t>(kv.pool) % DTypeBytes(kv.geometry.dtype) != 0) {
    return Status::InvalidArgument("the KV page pool is not aligned to its dtype");
  }
  if (batch.num_chunks == 0) return Status::Ok();
  const BatchArgs a = MakeBatchArgs(kv, batch, layer);
  const dim3 grid(static_cast<unsigned>(batch.num_chunks),
                  static_cast<unsigned>(std::min(batch.max_chunk_tokens, 1024)));
  const int elems = 2 * kv.geometry.kv_heads * kv.geometry.head_dim;
  const int threads = elems >= 256 ? 256 : ((elems + 31) / 32) * 32;
  auto* st = static_cast<cudaStream_t>(stream);
  const int kv_heads = kv.geometry.kv_heads;
  WithKvType(kv.geometry.dtype, [&](auto tag) {
    using Kv = decltype(tag);
    StoreKvKernel<Kv><<<grid, threads, 0, st>>>(a, kv_heads, k, v);
  });
  return LaunchResult("StoreKv");
}

Status PagedAttentionDecode(const KvPagesView& kv, const AttentionBatch& batch,
                            const AttentionParams& p, const float* q, float* out,
                            GpuStream stream) {
  KVTIER_RETURN_IF_ERROR(CheckAttentionArguments(kv, batch, p, q, out));
  KVTIER_RETURN_IF_ERROR(CheckLaunchLimits(kv, p.n_heads));
  if (batch.num_chunks == 0) return Status::Ok();
  const KvGeometry& g = kv.geometry;
  const int hd = g.head_dim;
  const int dims = hd <= 32 ? 1 : hd <= 64 ? 2 : hd <= 128 ? 4 : 8;
  const int group = p.n_heads / g.kv_heads;
  // Query heads per block: as many of a KV head's group as the registers
  // allow (heads * dims <= 32), unless that leaves too few blocks to fill the
  // GPU (few long sequences), where one head per block gives more parallelism
  // and the group's K/V reads come from L2.
  int heads = 1;
  while (heads < 8 && (heads * 2) * dims <= 32 && group % (heads * 2) == 0) heads *= 2;
  const int64_t target_blocks = 2LL * MultiprocessorCount();
  const int64_t rows = batch.rows;
  while (heads > 1 && rows * (p.n_heads / heads) < target_blocks) heads /= 2;
  const int warps = rows * (p.n_heads / heads) < target_blocks ? 8 : 4;
  const int pad = 32 * dims;
  const size_t smem = sizeof(float) * (static_cast<size_t>(heads) * pad + 2ull * warps * heads +
                                       static_cast<size_t>(warps) * heads * pad);  // at most 37 KiB

  DecodeArgs a{};
  a.b = MakeBatchArgs(kv, batch, p.layer);
  a.q = q;
  a.out = out;
  a.n_heads = p.n_heads;
  a.group = group;
  a.head_groups = group / heads;
  a.scale_log2 = p.scale * kLog2e;
  const int raw_bytes = static_cast<int>(DTypeBytes(g.dtype));
  a.vec_k = Aligned16(kv.pool) && hd % (16 / raw_bytes) == 0;
  a.vec_v = Aligned16(kv.pool) && hd % dims == 0;
  const dim3 grid(static_cast<unsigned>(batch.num_chunks), static_cast<unsigned>(p.n_heads / heads),
                  static_cast<unsigned>(std::min(batch.max_chunk_tokens, 65535)));
  auto* st = static_cast<cudaStream_t>(stream);
  WithKvType(g.dtype, [&](auto tag) {
    LaunchDecode<decltype(tag)>(dims, heads, grid, warps * 32, smem, st, a);
  });
  return LaunchResult("PagedAttentionDecode");
}

Status PagedAttentionPrefill(const KvPagesView& kv, const AttentionBatch& batch,
                             const AttentionParams& p, const float* q, float* out,
                             GpuStream stream) {
  KVTIER_RETURN_IF_ERROR(CheckAttentionArguments(kv, batch, p, q, out));
  KVTIER_RETURN_IF_ERROR(CheckLaunchLimits(kv, p.n_heads));
  if (batch.num_chunks == 0) return Status::Ok();
  const KvGeometry& g = kv.geometry;
  const int64_t tiles = (static_cast<int64_t>(batch.max_chunk_tokens) + 31) / 32;
  if (tiles * batch.num_chunks > INT_MAX) {
    return Status::InvalidArgument("attention batch too large for one prefill launch");
  }
  PrefillArgs a{};
  a.b = MakeBatchArgs(kv, batch, p.layer);
  a.q = q;
  a.out = out;
  a.n_heads = p.n_heads;
  a.group = p.n_heads / g.kv_heads;
  a.scale_log2 = p.scale * kLog2e;
  a.vec =
      g.head_dim % 4 == 0 && reinterpret_cast<uintptr_t>(kv.pool) % (4 * DTypeBytes(g.dtype)) == 0;
  auto* st = static_cast<cudaStream_t>(stream);
  switch (g.dtype) {
    case DType::kFloat32:
      return LaunchPrefillForDims<F32Kv>(g.head_dim, batch.max_chunk_tokens, a, batch.num_chunks,
                                         st);
    case DType::kFloat16:
      return LaunchPrefillForDims<F16Kv>(g.head_dim, batch.max_chunk_tokens, a, batch.num_chunks,
                                         st);
    case DType::kBFloat16:
      return LaunchPrefillForDims<Bf16Kv>(g.head_dim, batch.max_chunk_tokens, a, batch.num_chunks,
                                          st);
  }
  return Status::InvalidArgument("unknown KV dtype");
}

}  // namespace kvtier
