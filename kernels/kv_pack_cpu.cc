// CPU twins of the KV pack/unpack kernels (kv_pack.cu).
#include <cstring>
#include <string>

#include "kernels/kv_pack.cuh"
#include "kernels/kv_pack_internal.h"

namespace kvtier {
namespace {

Status CheckPageTable(const KvPackShape& s, const int32_t* page_table, int64_t num_blocks) {
  for (int64_t i = 0; i < num_blocks * s.pages_per_block; ++i) {
    if (page_table[i] < 0 || page_table[i] >= s.num_pages) {
      return Status::InvalidArgument(
          "page_table[" + std::to_string(i) + "] = " + std::to_string(page_table[i]) +
          " is outside the pool of " + std::to_string(s.num_pages) + " pages");
    }
  }
  return Status::Ok();
}

// Copies every row between block layout and the page pool, in either direction.
Status CopyRows(const KvPageLayout& layout, const void* src, const int32_t* page_table,
                int64_t num_blocks, void* dst, bool pack) {
  KVTIER_RETURN_IF_ERROR(CheckPackArguments(layout, src, page_table, num_blocks, dst));
  const KvPackShape s = KvPackShape::From(layout);
  KVTIER_RETURN_IF_ERROR(CheckPageTable(s, page_table, num_blocks));
  const auto* in = static_cast<const std::byte*>(src);
  auto* out = static_cast<std::byte*>(dst);
  const int64_t rows = s.Rows(num_blocks);
  for (int64_t r = 0; r < rows; ++r) {
    int64_t p = s.PageRow(r, page_table);
    if (pack) {
      std::memcpy(out + r * s.row_bytes, in + p * s.row_bytes, s.row_bytes);
    } else {
      std::memcpy(out + p * s.row_bytes, in + r * s.row_bytes, s.row_bytes);
    }
  }
  return Status::Ok();
}

}  // namespace

Status PackKvBlocksCpu(const KvPageLayout& layout, const void* pages, const int32_t* page_table,
                       int64_t num_blocks, void* blocks, GpuStream) {
  return CopyRows(layout, pages, page_table, num_blocks, blocks, /*pack=*/true);
}

Status UnpackKvBlocksCpu(const KvPageLayout& layout, const void* blocks, const int32_t* page_table,
                         int64_t num_blocks, void* pages, GpuStream) {
  return CopyRows(layout, blocks, page_table, num_blocks, pages, /*pack=*/false);
}

}  // namespace kvtier
