// CUDA kernels for KV block pack/unpack (declared in kv_pack.cuh).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "kernels/kv_pack.cuh"
#include "kernels/kv_pack_internal.h"

namespace kvtier {
namespace {

// Grid: a 1-D grid-stride loop over units of sizeof(Unit) bytes of the block
// buffer, so consecutive threads write consecutive bytes of a block (coalesced
// stores) and read consecutive bytes of one row of a page.
//   pages      [layers][2][num_pages][page_tokens][kv_heads][head_dim]
//   blocks     [num_blocks][layers][2][kv_heads][block_tokens][head_dim]
//   page_table [num_blocks][pages_per_block]
template <typename Unit, bool kPack>
__global__ void KvPackKernel(KvPackShape s, const int32_t* __restrict__ page_table,
                             int64_t num_blocks, const Unit* __restrict__ src,
                             Unit* __restrict__ dst) {
  const int64_t units_per_row = s.row_bytes / static_cast<int64_t>(sizeof(Unit));
  const int64_t total = s.Rows(num_blocks) * units_per_row;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = i / units_per_row;
    const int64_t u = i % units_per_row;
    const int64_t page_unit = s.PageRow(row, page_table) * units_per_row + u;
    if constexpr (kPack) {
      dst[i] = src[page_unit];
    } else {
      dst[page_unit] = src[i];
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
  const int64_t total_units = s.Rows(num_blocks) * (s.row_bytes / unit);
  constexpr int kThreads = 256;
  const int64_t grid = std::min<int64_t>((total_units + kThreads - 1) / kThreads, 65535LL * 8);
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
