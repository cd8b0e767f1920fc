// CPU twins of the paged attention kernels (attention.cu): the reference.
// Straightforward loops in f32 with a fixed order: scores are dot products
// summed over head_dim in order, the softmax is max, exp, sum in key order, and
// the output accumulates p_j * v_j in key order before one division.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/attention.cuh"
#include "kernels/attention_internal.h"
#include "kernels/dtype_convert.h"

namespace kvtier {
namespace {

// Reads element i of the pool as f32, for one dtype.
struct F32Load {
  float operator()(const void* pool, int64_t i) const { return static_cast<const float*>(pool)[i]; }
};
struct F16Load {
  float operator()(const void* pool, int64_t i) const {
    return HalfBitsToFloat(static_cast<const uint16_t*>(pool)[i]);
  }
};
struct Bf16Load {
  float operator()(const void* pool, int64_t i) const {
    return Bf16BitsToFloat(static_cast<const uint16_t*>(pool)[i]);
  }
};

template <class Load>
void Attend(const KvPagesView& kv, const AttentionBatch& batch, const AttentionParams& p,
            const float* q, float* out) {
  const Load load;
  const int hd = kv.geometry.head_dim;
  const int group = p.n_heads / kv.geometry.kv_heads;
  const PagedKvIndex index = PagedKvIndex::From(kv.geometry, p.layer);
  std::vector<float> scores;
  std::vector<float> acc(static_cast<size_t>(hd));
  for (int32_t c = 0; c < batch.num_chunks; ++c) {
    const AttentionChunk& ch = batch.chunks[c];
    const int32_t* table = batch.block_tables + static_cast<int64_t>(ch.table) * batch.max_pages;
    for (int32_t t = 0; t < ch.num_tokens; ++t) {
      const int64_t row = ch.first_row + t;
      const int64_t n = static_cast<int64_t>(ch.start_pos) + t + 1;  // keys 0..pos
      scores.resize(static_cast<size_t>(n));
      for (int h = 0; h < p.n_heads; ++h) {
        const float* qh = q + (row * p.n_heads + h) * hd;
        const int kv_head = h / group;
        float mx = -INFINITY;
        for (int64_t j = 0; j < n; ++j) {
          const int64_t k_row = index.KeyRow(table, j, kv_head);
          float dot = 0.0f;
          for (int d = 0; d < hd; ++d) dot += qh[d] * load(kv.pool, k_row + d);
          scores[static_cast<size_t>(j)] = dot * p.scale;
          mx = std::fmax(mx, scores[static_cast<size_t>(j)]);
        }
        float sum = 0.0f;
        for (int64_t j = 0; j < n; ++j) {
          float& s = scores[static_cast<size_t>(j)];
          s = std::exp(s - mx);
          sum += s;
        }
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (int64_t j = 0; j < n; ++j) {
          const int64_t v_row = index.KeyRow(table, j, kv_head) + index.kv_stride;
          const float w = scores[static_cast<size_t>(j)];
          for (int d = 0; d < hd; ++d) acc[static_cast<size_t>(d)] += w * load(kv.pool, v_row + d);
        }
        float* oh = out + (row * p.n_heads + h) * hd;
        for (int d = 0; d < hd; ++d) oh[d] = acc[static_cast<size_t>(d)] / sum;
      }
    }
  }
}

Status AttendCpu(const KvPagesView& kv, const AttentionBatch& batch, const AttentionParams& p,
                 const float* q, float* out) {
  KVTIER_RETURN_IF_ERROR(CheckAttentionArguments(kv, batch, p, q, out));
  KVTIER_RETURN_IF_ERROR(CheckChunksOnHost(kv, batch));
  switch (kv.geometry.dtype) {
    case DType::kFloat32:
      Attend<F32Load>(kv, batch, p, q, out);
      break;
    case DType::kFloat16:
      Attend<F16Load>(kv, batch, p, q, out);
      break;
    case DType::kBFloat16:
      Attend<Bf16Load>(kv, batch, p, q, out);
      break;
  }
  return Status::Ok();
}

}  // namespace

Status StoreKvCpu(const KvPagesView& kv, const AttentionBatch& batch, int layer, const float* k,
                  const float* v, GpuStream) {
  KVTIER_RETURN_IF_ERROR(CheckStoreArguments(kv, batch, layer, k, v));
  KVTIER_RETURN_IF_ERROR(CheckChunksOnHost(kv, batch));
  const KvGeometry& g = kv.geometry;
  const PagedKvIndex index = PagedKvIndex::From(g, layer);
  const int64_t row_elems = static_cast<int64_t>(g.kv_heads) * g.head_dim;
  for (int32_t c = 0; c < batch.num_chunks; ++c) {
    const AttentionChunk& ch = batch.chunks[c];
    const int32_t* table = batch.block_tables + static_cast<int64_t>(ch.table) * batch.max_pages;
    for (int32_t t = 0; t < ch.num_tokens; ++t) {
      const int64_t row = ch.first_row + t;
      for (int h = 0; h < g.kv_heads; ++h) {
        const int64_t k_row = index.KeyRow(table, static_cast<int64_t>(ch.start_pos) + t, h);
        const float* ks = k + row * row_elems + static_cast<int64_t>(h) * g.head_dim;
        const float* vs = v + row * row_elems + static_cast<int64_t>(h) * g.head_dim;
        for (int d = 0; d < g.head_dim; ++d) {
          StoreAs(g.dtype, kv.pool, k_row + d, ks[d]);
          StoreAs(g.dtype, kv.pool, k_row + index.kv_stride + d, vs[d]);
        }
      }
    }
  }
  return Status::Ok();
}

// One reference for both: the two launchers share a contract.
Status PagedAttentionDecodeCpu(const KvPagesView& kv, const AttentionBatch& batch,
                               const AttentionParams& p, const float* q, float* out, GpuStream) {
  return AttendCpu(kv, batch, p, q, out);
}

Status PagedAttentionPrefillCpu(const KvPagesView& kv, const AttentionBatch& batch,
                                const AttentionParams& p, const float* q, float* out, GpuStream) {
  return AttendCpu(kv, batch, p, q, out);
}

}  // namespace kvtier
