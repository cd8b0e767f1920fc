// Causal attention of a run of queries over paged keys on the CPU: the
// prefill chunk's and the decode step's one kernel (DESIGN §8), blocked
// flash-attention style (tiles of keys shared by the run's queries, online
// softmax), vectorised for AVX-512 or AVX2 chosen at run time (CpuMathIsa),
// with the same bits on every instruction set.
//
// The numbers: a score is scale * (q . k) summed over head_dim in order with
// fused multiply-adds; keys are taken in tiles of 32 positions from 0; per tile
// the running max, the rescale exp(old - new max), weights exp(s - max) (a
// Cephes-style polynomial, within 2 ulp of expf), a 16-lane running sum and
// the output accumulated key by key with fused multiply-adds; at the end the
// sum's lanes are added in a fixed tree and the output divided by it. A
// query's result depends on nothing but its q and keys 0..pos.
//
// bf16 (CausalAttention::bf16, the bf16-weights engine's choice) on a CPU whose
// set is amx or avx512bf16, for a head_dim that is a multiple of 32: q, K and V
// are rounded to bf16 (to nearest even), the scores and the tile's weighted
// values are bf16 products with f32 accumulation (AMX's TDPBF16PS on amx;
// vdpbf16ps on avx512bf16, each lane a chain over the pairs in order) with the
// weights rounded to bf16 too; the scores are in log2 units (q scaled by scale
// * log2e before its rounding), the weights 2^(s - max) by a short polynomial
// fit for bf16 (within 7e-5), the max and running sum the f32 steps above, and
// per tile a query's output becomes fma(out, rescale, weighted values). Still a
// function of q and keys 0..pos alone (each row of an AMX product is its own;
// each lane of a vdpbf16ps chain too), so the invariant holds within each set;
// its bits are not the f32 kernel's, and the two sets' are not each other's
// (TDPBF16PS rounds inside a step its own way). Anywhere else bf16 asks for
// nothing: the f32 kernel.
#pragma once

#include <cstdint>

#include "model/cpu_math.h"

namespace kvtier {

struct CausalAttention {
  // `tokens` consecutive positions first_pos.. of one sequence, `heads` query
  // heads each, all reading one KV head: query (t, h) is
  // q + t * q_stride + h * head_dim, its output out + t * out_stride + h * head_dim.
  const float* q = nullptr;
  int64_t q_stride = 0;
  float* out = nullptr;
  int64_t out_stride = 0;
  int tokens = 0;
  int heads = 0;
  int64_t first_pos = 0;
  // Keys (values) of position t: k_pages[t / page_tokens] + (t % page_tokens) * head_dim,
  // for every t up to first_pos + tokens - 1.
  const float* const* k_pages = nullptr;
  const float* const* v_pages = nullptr;
  int page_tokens = 0;
  int head_dim = 0;
  float scale = 0.0f;
  // Optional: tiles of keys staged beforehand by StageTile, tile t (keys
  // kAttentionTileKeys * t ..) at tiles[t], shared by every run of queries
  // of a chunk (and kept from step to step, forward.h) instead of each run
  // staging them again. A null array or entry: that tile is staged here.
  const float* const* tiles = nullptr;
  // Optional, for a tile the run stages itself: where to stage it instead of
  // the thread's scratch, to be kept (a page's side copy, forward.h); only
  // for a tile whose keys all lie at or before the run's last position, and
  // no other run may read or stage the same place at the same time.
  float* const* stage_into = nullptr;
  // bf16 products where the CPU has AVX-512 BF16 (above); f32 otherwise.
  bool bf16 = false;

  // Query i = t * heads + h and its output.
  const float* Query(int i) const;
  float* Out(int i) const;
};

// out(t, h) = sum_{j <= first_pos + t} softmax_j(scale * q(t, h) . k_j) v_j.
// Thread-safe (per-thread scratch); runs on the calling thread.
void AttendCausal(const CausalAttention& a);

// Keys per staged tile: tile t holds keys kAttentionTileKeys * t ...
inline constexpr int kAttentionTileKeys = 32;

// Whether `a` runs as bf16 here (above). Its staged tiles are then half the
// bytes of the f32 keys and values they hold.
bool AttendsInBf16(const CausalAttention& a);

// Staging tiles ahead (CausalAttention::tiles): floats per tile of `a`'s
// kernel (f32 or bf16: each its own layout), tiles for `keys`
// positions, and tile `tile` of the keys 0..keys-1 that `a`'s pages hold,
// written to `out` (the same bytes the kernel stages itself; a tile that
// ends before `keys` is a function of its own 32 keys and values alone).
int64_t StagedTileFloats(const CausalAttention& a);
int64_t StagedTiles(int64_t keys);
void StageTile(const CausalAttention& a, int64_t keys, int64_t tile, float* out);

// For tests: the kernel's exp of 16 inputs on one instruction set (the
// machine must have it), and the scalar exp of the rescale.
void CpuAttentionExpForTesting(CpuIsa isa, const float* x, float* out);
float CpuAttentionScalarExpForTesting(float x);
// The bf16 AMX kernel's 2^x of its weights, of 16 inputs (AVX-512 needed).
void CpuAttentionBf16Exp2ForTesting(const float* x, float* out);

}  // namespace kvtier
