// KV block pack/unpack: between the engine's paged KV pool and block layout.
//
// Paged pool (the engine's layout, token-major within a page so that decode
// appends one contiguous row per token and head):
//   pages  [layers][2 (K,V)][num_pages][page_tokens][kv_heads][head_dim]
// Block layout (DESIGN §2, one contiguous buffer per block = one DMA / one I/O):
//   blocks [num_blocks][layers][2 (K,V)][kv_heads][block_tokens][head_dim]
// A block spans block_tokens / page_tokens pages, listed in page_table:
//   page_table [num_blocks][block_tokens / page_tokens]  (int32 page indexes)
//
// PackKvBlocks gathers pages into blocks; UnpackKvBlocks scatters blocks into
// pages. The copy is dtype-agnostic (rows of head_dim elements move whole).
// The GPU launchers take device pointers and run asynchronously on `stream`;
// the *Cpu twins take host pointers, ignore `stream` and finish before
// returning. Both check their arguments and return InvalidArgument without
// touching memory when they are wrong; the CPU twins also check every page
// index (the GPU launchers cannot read a device page table cheaply: the caller
// guarantees 0 <= page < num_pages there). Buffers are at least 2-byte
// aligned. For Unpack the pages named in one call must be distinct (two
// blocks writing one page would race).
#pragma once

#include <cstdint>

#include "common/kv_geometry.h"
#include "common/status.h"
#include "kernels/device.h"

namespace kvtier {

struct KvPageLayout {
  KvGeometry geometry;    // layers, kv_heads, head_dim, dtype, block_tokens
  int page_tokens = 16;   // tokens per page: a power of two dividing block_tokens
  int64_t num_pages = 0;  // pages in the pool

  int PagesPerBlock() const { return geometry.block_tokens / page_tokens; }
  Status Validate() const;
};

Status PackKvBlocks(const KvPageLayout& layout, const void* pages, const int32_t* page_table,
                    int64_t num_blocks, void* blocks, GpuStream stream);
Status UnpackKvBlocks(const KvPageLayout& layout, const void* blocks, const int32_t* page_table,
                      int64_t num_blocks, void* pages, GpuStream stream);

Status PackKvBlocksCpu(const KvPageLayout& layout, const void* pages, const int32_t* page_table,
                       int64_t num_blocks, void* blocks, GpuStream stream);
Status UnpackKvBlocksCpu(const KvPageLayout& layout, const void* blocks, const int32_t* page_table,
                         int64_t num_blocks, void* pages, GpuStream stream);

}  // namespace kvtier
