#include "engine/kv_pages.h"

namespace kvtier {

KvPages::KvPages(const KvGeometry& geometry, int32_t num_pages)
    : geometry_(geometry),
      num_pages_(num_pages),
      head_floats_(static_cast<size_t>(geometry.block_tokens) * geometry.head_dim),
      page_floats_(geometry.BlockBytes() / sizeof(float)),
      data_(new float[page_floats_ * static_cast<size_t>(num_pages)]) {
  free_.reserve(num_pages);
  for (PageId p = num_pages - 1; p >= 0; --p) free_.push_back(p);
}

std::optional<PageId> KvPages::Allocate() {
  if (free_.empty()) return std::nullopt;
  const PageId p = free_.back();
  free_.pop_back();
  return p;
}

void KvPages::Free(PageId page) { free_.push_back(page); }

}  // namespace kvtier
