// Argument checks shared by the attention launchers and their CPU twins.
#include <cmath>
#include <string>
#include <vector>

#include "kernels/attention.cuh"
#include "kernels/attention_internal.h"

namespace kvtier {
namespace {

Status CheckBatchCounts(const AttentionBatch& b) {
  if (b.num_chunks < 0 || b.rows < 0 || b.max_chunk_tokens < 0 || b.num_tables < 0 ||
      b.max_pages < 0) {
    return Status::InvalidArgument("attention batch has a negative count");
  }
  if (b.num_chunks == 0) return Status::Ok();
  if (b.chunks == nullptr || b.block_tables == nullptr) {
    return Status::InvalidArgument("attention batch has null chunks or block tables");
  }
  if (b.rows < 1 || b.max_chunk_tokens < 1 || b.num_tables < 1 || b.max_pages < 1) {
    return Status::InvalidArgument(
        "attention batch with chunks needs positive rows, max_chunk_tokens, num_tables and "
        "max_pages");
  }
  return Status::Ok();
}

Status CheckLayer(const KvPagesView& kv, int layer) {
  if (layer < 0 || layer >= kv.geometry.layers) {
    return Status::InvalidArgument("layer " + std::to_string(layer) + " is outside [0, " +
                                   std::to_string(kv.geometry.layers) + ")");
  }
  return Status::Ok();
}

}  // namespace

Status KvPagesView::Validate() const {
  KVTIER_RETURN_IF_ERROR(geometry.Validate());
  if (pool == nullptr) return Status::InvalidArgument("the KV page pool is null");
  if (num_pages <= 0) return Status::InvalidArgument("the KV page pool has no pages");
  return Status::Ok();
}

Status CheckAttentionArguments(const KvPagesView& kv, const AttentionBatch& batch,
                               const AttentionParams& p, const float* q, const float* out) {
  KVTIER_RETURN_IF_ERROR(kv.Validate());
  KVTIER_RETURN_IF_ERROR(CheckBatchCounts(batch));
  KVTIER_RETURN_IF_ERROR(CheckLayer(kv, p.layer));
  if (p.n_heads <= 0 || p.n_heads % kv.geometry.kv_heads != 0) {
    return Status::InvalidArgument("n_heads " + std::to_string(p.n_heads) +
                                   " is not a positive multiple of kv_heads " +
                                   std::to_string(kv.geometry.kv_heads));
  }
  if (!std::isfinite(p.scale)) return Status::InvalidArgument("attention scale is not finite");
  if (batch.num_chunks > 0 && (q == nullptr || out == nullptr)) {
    return Status::InvalidArgument("attention q or out is null");
  }
  return Status::Ok();
}

Status CheckStoreArguments(const KvPagesView& kv, const AttentionBatch& batch, int layer,
                           const float* k, const float* v) {
  KVTIER_RETURN_IF_ERROR(kv.Validate());
  KVTIER_RETURN_IF_ERROR(CheckBatchCounts(batch));
  KVTIER_RETURN_IF_ERROR(CheckLayer(kv, layer));
  if (batch.num_chunks > 0 && (k == nullptr || v == nullptr)) {
    return Status::InvalidArgument("StoreKv k or v is null");
  }
  return Status::Ok();
}

Status CheckChunksOnHost(const KvPagesView& kv, const AttentionBatch& batch) {
  const int64_t bt = kv.geometry.block_tokens;
  const int64_t capacity = static_cast<int64_t>(batch.max_pages) * bt;
  std::vector<bool> covered(static_cast<size_t>(batch.rows), false);
  int64_t total = 0;
  for (int32_t c = 0; c < batch.num_chunks; ++c) {
    const AttentionChunk& ch = batch.chunks[c];
    const std::string name = "chunk " + std::to_string(c) + ": ";
    if (ch.table < 0 || ch.table >= batch.num_tables) {
      return Status::InvalidArgument(name + "table " + std::to_string(ch.table) +
                                     " is outside [0, " + std::to_string(batch.num_tables) + ")");
    }
    if (ch.num_tokens < 1 || ch.num_tokens > batch.max_chunk_tokens) {
      return Status::InvalidArgument(name + "num_tokens " + std::to_string(ch.num_tokens) +
                                     " is outside [1, max_chunk_tokens " +
                                     std::to_string(batch.max_chunk_tokens) + "]");
    }
    if (ch.start_pos < 0 || ch.start_pos + static_cast<int64_t>(ch.num_tokens) > capacity) {
      return Status::InvalidArgument(
          name + "positions " + std::to_string(ch.start_pos) + ".." +
          std::to_string(ch.start_pos + static_cast<int64_t>(ch.num_tokens) - 1) +
          " do not fit max_pages * block_tokens = " + std::to_string(capacity));
    }
    if (ch.first_row < 0 || ch.first_row + static_cast<int64_t>(ch.num_tokens) > batch.rows) {
      return Status::InvalidArgument(name + "rows from " + std::to_string(ch.first_row) +
                                     " do not fit the batch's " + std::to_string(batch.rows) +
                                     " rows");
    }
    for (int32_t r = ch.first_row; r < ch.first_row + ch.num_tokens; ++r) {
      if (covered[static_cast<size_t>(r)]) {
        return Status::InvalidArgument(name + "row " + std::to_string(r) +
                                       " belongs to an earlier chunk too");
      }
      covered[static_cast<size_t>(r)] = true;
    }
    total += ch.num_tokens;
    const int32_t* table = batch.block_tables + static_cast<int64_t>(ch.table) * batch.max_pages;
    const int64_t last_page = (ch.start_pos + static_cast<int64_t>(ch.num_tokens) - 1) / bt;
    for (int64_t i = 0; i <= last_page; ++i) {
      if (table[i] < 0 || table[i] >= kv.num_pages) {
        return Status::InvalidArgument(name + "block_tables[" + std::to_string(ch.table) + "][" +
                                       std::to_string(i) + "] = " + std::to_string(table[i]) +
                                       " is outside the pool of " + std::to_string(kv.num_pages) +
                                       " pages");
      }
    }
  }
  if (total != batch.rows) {
    return Status::InvalidArgument("the chunks hold " + std::to_string(total) +
                                   " tokens but the batch has " + std::to_string(batch.rows) +
                                   " rows");
  }
  return Status::Ok();
}

}  // namespace kvtier
