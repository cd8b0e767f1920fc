// Attention over the engine's KV pages, and the store of new K/V rows into
// them (DESIGN §8).
//
// Page pool: one page holds the KV of block_tokens consecutive tokens of one
// sequence for every layer, laid out exactly as a cache block (DESIGN §2):
//   pool [num_pages][layers][2 (K,V)][kv_heads][block_tokens][head_dim]  (geometry.dtype)
// A sequence's block table lists its pages in token order: token p lives in
// page table[p / block_tokens] at slot p % block_tokens.
//   block_tables [num_tables][max_pages]  int32 page indexes
//
// A batch is a list of chunks, each a run of consecutive query tokens of one
// sequence (a prefill chunk, or the single next token of a decoding one):
//   chunks [num_chunks] AttentionChunk; chunk c's tokens are query rows
//   first_row .. first_row + num_tokens - 1 at positions start_pos ...
// Query row r at position p attends to keys 0..p of its sequence (causal):
// those already in pages and those stored by StoreKv for this batch.
//   q   [rows][n_heads][head_dim] f32
//   out [rows][n_heads][head_dim] f32
// Query head h reads KV head h / (n_heads / kv_heads) (grouped-query).
// Scores are computed and softmaxed in f32 whatever the KV dtype.
//
// The GPU launchers take device pointers and run asynchronously on `stream`;
// the *Cpu twins take host pointers, ignore `stream`, and finish before
// returning. Both check the arguments they can see and return
// kInvalidArgument without touching memory when they are wrong; the twins also
// check every chunk, position and page index, which the launchers cannot read
// cheaply from device memory (the caller guarantees them there).
//
// Two launchers with one contract: PagedAttentionDecode is made for chunks of
// one or a few tokens (work split over the keys); PagedAttentionPrefill for
// long chunks (query tiles sharing each key tile). Either is correct for any
// batch; the forward pass picks by the longest chunk.
#pragma once

#include <cstdint>

#include "common/kv_geometry.h"
#include "common/status.h"
#include "kernels/device.h"

namespace kvtier {

struct KvPagesView {
  void* pool = nullptr;  // device memory for the launchers, host memory for the twins
  KvGeometry geometry;   // layers, kv_heads, head_dim, block_tokens (tokens per page), dtype
  int64_t num_pages = 0;

  size_t PageBytes() const { return geometry.BlockBytes(); }
  Status Validate() const;
};

struct AttentionChunk {
  int32_t table = 0;       // index into block_tables
  int32_t start_pos = 0;   // position of the chunk's first token
  int32_t num_tokens = 0;  // >= 1
  int32_t first_row = 0;   // its first row in q and out
};

struct AttentionBatch {
  const AttentionChunk* chunks = nullptr;  // [num_chunks]
  int32_t num_chunks = 0;
  // Rows of q and out. The twins require the chunks to cover every row
  // exactly once; the launchers also take chunks covering some of them
  // (GpuForward gives the short chunks to one kernel and the long ones to the
  // other, both over the whole q and out).
  int32_t rows = 0;
  int32_t max_chunk_tokens = 0;           // the longest chunk (sizes the launch grid)
  const int32_t* block_tables = nullptr;  // [num_tables][max_pages]
  int32_t num_tables = 0;
  int32_t max_pages = 0;
};

struct AttentionParams {
  int layer = 0;       // the layer whose K and V are read or written
  int n_heads = 0;     // query heads, a positive multiple of geometry.kv_heads
  float scale = 0.0f;  // score scale, usually 1 / sqrt(head_dim)
};

// Writes the K and V rows of the batch's tokens into their pages at
// `layer`, converting f32 to the pool's dtype (round to nearest even).
//   k, v [rows][kv_heads][head_dim] f32
Status StoreKv(const KvPagesView& kv, const AttentionBatch& batch, int layer, const float* k,
               const float* v, GpuStream stream);
Status StoreKvCpu(const KvPagesView& kv, const AttentionBatch& batch, int layer, const float* k,
                  const float* v, GpuStream stream);

Status PagedAttentionDecode(const KvPagesView& kv, const AttentionBatch& batch,
                            const AttentionParams& p, const float* q, float* out, GpuStream stream);
Status PagedAttentionDecodeCpu(const KvPagesView& kv, const AttentionBatch& batch,
                               const AttentionParams& p, const float* q, float* out,
                               GpuStream stream);

Status PagedAttentionPrefill(const KvPagesView& kv, const AttentionBatch& batch,
                             const AttentionParams& p, const float* q, float* out,
                             GpuStream stream);
Status PagedAttentionPrefillCpu(const KvPagesView& kv, const AttentionBatch& batch,
                                const AttentionParams& p, const float* q, float* out,
                                GpuStream stream);

}  // namespace kvtier
