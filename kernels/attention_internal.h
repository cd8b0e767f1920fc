// Private to kernels/: argument checks and page index math of attention.cuh,
// shared by the GPU launchers and the CPU twins.
#pragma once

#include <cstdint>

#include "kernels/attention.cuh"

#ifndef KVTIER_HOST_DEVICE
#if defined(__CUDACC__)
#define KVTIER_HOST_DEVICE __host__ __device__
#else
#define KVTIER_HOST_DEVICE
#endif
#endif

namespace kvtier {

// What both sides check without reading chunks or block tables: the view, the
// batch's counts and pointers, the layer and the head counts.
Status CheckAttentionArguments(const KvPagesView& kv, const AttentionBatch& batch,
                               const AttentionParams& p, const float* q, const float* out);
Status CheckStoreArguments(const KvPagesView& kv, const AttentionBatch& batch, int layer,
                           const float* k, const float* v);
// What only a host caller can check: every chunk (table index, token count,
// positions within max_pages * block_tokens, rows in range and covering
// [0, rows) exactly once) and every page index a chunk reaches. Reads
// batch.chunks and batch.block_tables, so both must be host memory.
Status CheckChunksOnHost(const KvPagesView& kv, const AttentionBatch& batch);

// Element offsets into the page pool for one layer, in elements of the dtype:
//   pool [num_pages][layers][2 (K,V)][kv_heads][block_tokens][head_dim]
struct PagedKvIndex {
  int64_t page_elems;    // elements per page
  int64_t layer_offset;  // offset of `layer`'s K rows of KV head 0 in a page
  int64_t kv_stride;     // from a K row to the V row of the same token and head
  int64_t head_stride;   // from one KV head's rows to the next one's
  int head_dim;
  int block_shift;  // log2(block_tokens)

  static PagedKvIndex From(const KvGeometry& g, int layer) {
    const int64_t head_stride = static_cast<int64_t>(g.block_tokens) * g.head_dim;
    const int64_t kv_stride = head_stride * g.kv_heads;
    int shift = 0;
    while ((1 << shift) < g.block_tokens) ++shift;
    return {
        kv_stride * 2 * g.layers, kv_stride * 2 * layer, kv_stride, head_stride, g.head_dim, shift};
  }
  // The K row of the token at `pos` and KV head `kv_head` in a sequence whose
  // block table is `table`; its V row is kv_stride further on.
  KVTIER_HOST_DEVICE int64_t KeyRow(const int32_t* table, int64_t pos, int kv_head) const {
    const int64_t page = table[pos >> block_shift];
    const int64_t slot = pos & ((int64_t{1} << block_shift) - 1);
    return page * page_elems + layer_offset + kv_head * head_stride + slot * head_dim;
  }
};

}  // namespace kvtier
