// CUDA kernels for KV block pack/unpack (declared in kv_pack.cuh).
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>

#include "kernels/kv_pack.cuh"
#include "kernels/kv_pack_internal.h"

namespace kvtier {
namespace {

// Grid: one CUDA block per (block, layer, K|V, kv_head) segment, i.e. per
// block_tokens consecutive rows of block layout (x = segment, a stride loop
// over gridDim.x); its threads walk the segment's units of sizeof(Unit)
// bytes, so consecutive threads write consecutive bytes of the block
// (coalesced stores) and read consecutive bytes of one page row. The segment
// is decoded once per CUDA block; per unit only 32-bit index math remains.
//   pages      [layers][2][num_pages][page_tokens][kv_heads][head_dim]
//   blocks     [num_blocks][layers][2][kv_heads][block_tokens][head_dim]
//   page_table [num_blocks][pages_per_block]
template <typename Unit, bool kPack>
__global__ void KvPackKernel(KvPackShape s, const int32_t* __restrict__ page_table,
                             int64_t num_blocks, const Unit* __restrict__ src,
                             Unit* __restrict__ dst) {
  const int units_per_row = static_cast<int>(s.row_bytes / static_cast<int64_t>(sizeof(Unit)));
  const int seg_units = units_per_row * static_cast<int>(s.block_tokens);
  const int64_t segments = num_blocks * s.layers * 2 * s.kv_heads;
  const int page_shift = __ffs(static_cast<int>(s.page_tokens)) - 1;  // page_tokens: a power of two
  const int page_mask = static_cast<int>(s.page_tokens) - 1;
  for (int64_t seg = blockIdx.x; seg < segments; seg += gridDim.x) {
    const int64_t h = seg % s.kv_heads;
    int64_t rest = seg / s.kv_heads;
    const int64_t kv = rest % 2;
    rest /= 2;
    const int64_t layer = rest % s.layers;
    const int64_t b = rest / s.layers;
    const int32_t* table = page_table + b * s.pages_per_block;
    // Row r of page p (token slot r of the page) for this layer, K|V and head.
    const int64_t plane = (layer * 2 + kv) * s.num_pages;
    const int64_t block_base = seg * seg_units;
    for (int i = threadIdx.x; i < seg_units; i += blockDim.x) {
      const int t = i / units_per_row;
      const int u = i - t * units_per_row;
      const int64_t page = table[t >> page_shift];
      const int64_t page_row = ((plane + page) * s.page_tokens + (t & page_mask)) * s.kv_heads + h;
      const int64_t page_unit = page_row * units_per_row + u;
      if constexpr (kPack) {
        dst[block_base + i] = src[page_unit];
      } else {
        dst[page_unit] = src[block_base + i];
      }
    }
  }
}

template <bool kPack>
Status Launch(const KvPageLayout& layout, const void* src, const int32_t* page_table,
              int64_t num_blocks, void* dst, GpuStream stream) {
  KVTIER_RETURN_IF_ERROR(CheckPackArguments(layout, src, page_table, num_blocks, dst));
  if (num_blocks == 0) return Status::Ok();
  const KvPackShape s = KvPackShape::From(layout);
  auto aligned = [&](int64_t unit) {
    return s.row_bytes % unit == 0 && reinterpret_cast<uintptr_t>(src) % unit == 0 &&
           reinterpret_cast<uintptr_t>(dst) % unit == 0;
  };
  if (!aligned(2)) return Status::InvalidArgument("KV buffers must be 2-byte aligned");
  const int64_t unit = aligned(16) ? 16 : aligned(4) ? 4 : 2;
  const int64_t segments = num_blocks * s.layers * 2 * s.kv_heads;
  if (s.row_bytes / unit * s.block_tokens > INT32_MAX) {
    return Status::InvalidArgument("KV block segment too large for the pack kernel");
  }
  constexpr int kThreads = 256;
  const int64_t grid = std::min<int64_t>(segments, INT32_MAX);
  auto* st = static_cast<cudaStream_t>(stream);
  if (unit == 16) {
    KvPackKernel<uint4, kPack><<<grid, kThreads, 0, st>>>(
        s, page_table, num_blocks, static_cast<const uint4*>(src), static_cast<uint4*>(dst));
  } else if (unit == 4) {
    KvPackKernel<uint32_t, kPack><<<grid, kThreads, 0, st>>>(
        s, page_table, num_blocks, static_cast<const uint32_t*>(src), static_cast<uint32_t*>(dst));
  } else {
    KvPackKernel<uint16_t, kPack><<<grid, kThreads, 0, st>>>(
        s, page_table, num_blocks, static_cast<const uint16_t*>(src), static_cast<uint16_t*>(dst));
  }
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return Status::Unavailable(std::string("KV pack launch failed: ") + cudaGetErrorString(err));
  }
  return Status::Ok();
}

}  // namespace

Status PackKvBlocks(const KvPageLayout& layout, const void* pages, const int32_t* page_table,
                    int64_t num_blocks, void* blocks, GpuStream stream) {
  return Launch<true>(layout, pages, page_table, num_blocks, blocks, stream);
}

Status UnpackKvBlocks(const KvPageLayout& layout, const void* blocks, const int32_t* page_table,
                      int64_t num_blocks, void* pages, GpuStream stream) {
  return Launch<false>(layout, blocks, page_table, num_blocks, pages, stream);
}

}  // namespace kvtier
