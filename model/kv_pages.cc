#include "model/kv_pages.h"

#include <cstring>
#include <new>

namespace kvtier {

namespace {

// 64-byte aligned side copies (vector loads and tile loads), rounded up.
constexpr size_t kSideAlign = 64;

std::byte* NewSide(size_t bytes) {
  if (bytes == 0) return nullptr;
  return static_cast<std::byte*>(::operator new[](bytes, std::align_val_t{kSideAlign}));
}

void DeleteSide(std::byte* p) {
  if (p != nullptr) ::operator delete[](p, std::align_val_t{kSideAlign});
}

}  // namespace

KvPages::KvPages(const KvGeometry& geometry, int32_t num_pages, bool host_storage,
                 size_t side_bytes_per_page)
    : geometry_(geometry),
      num_pages_(num_pages),
      head_floats_(static_cast<size_t>(geometry.block_tokens) * geometry.head_dim),
      page_floats_(geometry.BlockBytes() / sizeof(float)),
      data_(host_storage ? new float[page_floats_ * static_cast<size_t>(num_pages)] : nullptr),
      side_bytes_((side_bytes_per_page + kSideAlign - 1) / kSideAlign * kSideAlign),
      side_(NewSide(side_bytes_ * static_cast<size_t>(num_pages)), DeleteSide),
      side_rows_(static_cast<size_t>(num_pages), 0) {
  free_.reserve(num_pages);
  for (PageId p = num_pages - 1; p >= 0; --p) free_.push_back(p);
}

std::optional<PageId> KvPages::Allocate() {
  if (free_.empty()) return std::nullopt;
  const PageId p = free_.back();
  free_.pop_back();
  side_rows_[static_cast<size_t>(p)] = 0;
  return p;
}

void KvPages::Free(PageId page) { free_.push_back(page); }

std::vector<std::byte> KvPages::PackRows(PageId page, int rows) {
  std::vector<std::byte> out(RowsBytes(rows));
  const size_t row_bytes = static_cast<size_t>(rows) * geometry_.head_dim * sizeof(float);
  std::byte* dst = out.data();
  for (int layer = 0; layer < geometry_.layers; ++layer) {
    for (int kv = 0; kv < 2; ++kv) {
      for (int h = 0; h < geometry_.kv_heads; ++h) {
        std::memcpy(dst, Head(page, layer, kv, h), row_bytes);
        dst += row_bytes;
      }
    }
  }
  return out;
}

void KvPages::UnpackRows(PageId page, int rows, std::span<const std::byte> payload) {
  const size_t row_bytes = static_cast<size_t>(rows) * geometry_.head_dim * sizeof(float);
  const std::byte* src = payload.data();
  for (int layer = 0; layer < geometry_.layers; ++layer) {
    for (int kv = 0; kv < 2; ++kv) {
      for (int h = 0; h < geometry_.kv_heads; ++h) {
        std::memcpy(Head(page, layer, kv, h), src, row_bytes);
        src += row_bytes;
      }
    }
  }
}

}  // namespace kvtier
