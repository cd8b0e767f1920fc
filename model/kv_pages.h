// KvPages: the engine's paged KV memory (DESIGN §8). A fixed pool of pages,
// each holding the KV of block_tokens tokens of one sequence for every layer.
//
// A page is laid out exactly as a cache block ([layer][K|V][kv_head][token]
// [head_dim], DESIGN §2), so publishing a full page to the cache and loading a
// cached block into a page are single copies with no packing. A sequence's
// block table is the list of its pages in token order: token p lives in page
// table[p / block_tokens] at slot p % block_tokens.
//
// Each page may also carry a side copy of its rows in a backend's own layout
// (`side_bytes_per_page`; the CPU's bf16 attention keeps its staged tiles
// there, forward.h), with the number of leading rows that copy holds. That
// count is 0 whenever the page is allocated, so a copy never outlives the
// contents it was made from: a page's rows are written once per allocation,
// by the forward pass or by a cache hit's load before the pass reads them.
//
// Not thread-safe: owned by the engine's stepping thread. Page contents are
// uninitialised until written.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "common/kv_geometry.h"

namespace kvtier {

using PageId = int32_t;

class KvPages {
 public:
  // Requires geometry.Validate().ok() with dtype f32, and num_pages > 0.
  // Without host storage the object only allocates page ids (the pages'
  // contents live elsewhere, e.g. in device memory); Bytes, PackRows and
  // UnpackRows must not be called then.
  KvPages(const KvGeometry& geometry, int32_t num_pages, bool host_storage = true,
          size_t side_bytes_per_page = 0);

  const KvGeometry& geometry() const { return geometry_; }
  int32_t num_pages() const { return num_pages_; }
  int32_t free_pages() const { return static_cast<int32_t>(free_.size()); }
  size_t page_bytes() const { return page_floats_ * sizeof(float); }

  // Allocate resets the page's side copy (side_rows() = 0).
  std::optional<PageId> Allocate();
  void Free(PageId page);

  // The side copy (above): side_bytes_per_page() bytes per page, 64-byte
  // aligned, uninitialised until written; side_rows(page) of its leading
  // rows are current, as its user records them.
  size_t side_bytes_per_page() const { return side_bytes_; }
  std::byte* Side(PageId page) { return side_.get() + static_cast<size_t>(page) * side_bytes_; }
  int32_t& side_rows(PageId page) { return side_rows_[static_cast<size_t>(page)]; }

  // The K (or V) rows of one layer and KV head in a page: [block_tokens][head_dim].
  float* K(PageId page, int layer, int kv_head) { return Head(page, layer, 0, kv_head); }
  float* V(PageId page, int layer, int kv_head) { return Head(page, layer, 1, kv_head); }
  // The first `rows` token slots of a page (for every layer, K and V, head)
  // in block layout with `rows` tokens: the payload of a tail record, a
  // partial block (DESIGN §6). Requires 0 < rows <= block_tokens.
  std::vector<std::byte> PackRows(PageId page, int rows);
  // The inverse: writes a payload of PackRows(.., rows) into the first
  // `rows` slots. Requires payload.size() == RowsBytes(rows).
  void UnpackRows(PageId page, int rows, std::span<const std::byte> payload);
  size_t RowsBytes(int rows) const {
    return static_cast<size_t>(geometry_.layers) * 2 * geometry_.kv_heads * rows *
           geometry_.head_dim * sizeof(float);
  }
  // The whole page as a block payload.
  std::span<std::byte> Bytes(PageId page) {
    return {reinterpret_cast<std::byte*>(data_.get() + page * page_floats_), page_bytes()};
  }

 private:
  float* Head(PageId page, int layer, int kv, int kv_head) {
    return data_.get() + page * page_floats_ +
           ((static_cast<size_t>(layer) * 2 + kv) * geometry_.kv_heads + kv_head) * head_floats_;
  }

  KvGeometry geometry_;
  int32_t num_pages_;
  size_t head_floats_;  // block_tokens * head_dim
  size_t page_floats_;
  std::unique_ptr<float[]> data_;
  size_t side_bytes_;
  std::unique_ptr<std::byte[], void (*)(std::byte*)> side_;
  std::vector<int32_t> side_rows_;
  std::vector<PageId> free_;  // a stack: the most recently freed page is reused first
};

}  // namespace kvtier
