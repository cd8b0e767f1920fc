// Private to kernels/: shared index math and argument checks of kv_pack.
#pragma once

#include <cstdint>

#include "kernels/kv_pack.cuh"

#if defined(__CUDACC__)
#define KVTIER_HOST_DEVICE __host__ __device__
#else
#define KVTIER_HOST_DEVICE
#endif

namespace kvtier {

Status CheckPackArguments(const KvPageLayout& layout, const void* src, const int32_t* page_table,
                          int64_t num_blocks, const void* dst);

// The dimensions of one pack/unpack, flattened for index math on either side.
struct KvPackShape {
  int64_t layers, kv_heads, block_tokens, page_tokens, pages_per_block, num_pages;
  int64_t row_bytes;  // head_dim * dtype bytes: one contiguous row in both layouts

  static KvPackShape From(const KvPageLayout& l) {
    const KvGeometry& g = l.geometry;
    return {g.layers,
            g.kv_heads,
            g.block_tokens,
            l.page_tokens,
            l.PagesPerBlock(),
            l.num_pages,
            static_cast<int64_t>(g.head_dim) * static_cast<int64_t>(DTypeBytes(g.dtype))};
  }
  // Rows in num_blocks blocks: [num_blocks][layers][2][kv_heads][block_tokens].
  KVTIER_HOST_DEVICE int64_t Rows(int64_t num_blocks) const {
    return num_blocks * layers * 2 * kv_heads * block_tokens;
  }
  // Maps a row of block layout (its flat index) to the row of the page pool
  // that holds the same token, head, K/V and layer.
  KVTIER_HOST_DEVICE int64_t PageRow(int64_t block_row, const int32_t* page_table) const {
    int64_t t = block_row % block_tokens;
    int64_t rest = block_row / block_tokens;
    int64_t h = rest % kv_heads;
    rest /= kv_heads;
    int64_t kv = rest % 2;
    rest /= 2;
    int64_t layer = rest % layers;
    int64_t b = rest / layers;
    int64_t page = page_table[b * pages_per_block + t / page_tokens];
    return (((layer * 2 + kv) * num_pages + page) * page_tokens + t % page_tokens) * kv_heads + h;
  }
};

}  // namespace kvtier
