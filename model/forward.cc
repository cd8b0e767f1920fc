#include "model/forward.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <utility>

#include "model/cpu_attention.h"
#include "model/cpu_math.h"
#include "model/thread_pool.h"

namespace kvtier {

Status ValidateChunks(const ModelConfig& c, int bt, int64_t num_pages,
                      std::span<const SeqChunk> chunks) {
  std::vector<bool> used(static_cast<size_t>(num_pages));  // pages named so far
  for (const SeqChunk& ch : chunks) {
    const int64_t end = ch.start_pos + static_cast<int64_t>(ch.tokens.size());
    if (ch.start_pos < 0 || end > c.max_seq_len) {
      return Status::InvalidArgument("position " + std::to_string(end - 1) +
                                     " is past the model's context of " +
                                     std::to_string(c.max_seq_len));
    }
    if (static_cast<int64_t>(ch.pages.size()) * bt < end) {
      return Status::InvalidArgument("block table too short for position " +
                                     std::to_string(end - 1));
    }
    for (TokenId t : ch.tokens) {
      if (t < 0 || t >= c.vocab_size) {
        return Status::InvalidArgument("token id " + std::to_string(t) +
                                       " is outside the vocabulary");
      }
    }
    for (int64_t p = 0; p < (end + bt - 1) / bt; ++p) {
      if (ch.pages[p] < 0 || ch.pages[p] >= num_pages) {
        return Status::InvalidArgument("page " + std::to_string(ch.pages[p]) +
                                       " is outside the pool of " + std::to_string(num_pages));
      }
      if (used[static_cast<size_t>(ch.pages[p])]) {
        return Status::InvalidArgument("page " + std::to_string(ch.pages[p]) +
                                       " is named twice in the chunks' block tables");
      }
      used[static_cast<size_t>(ch.pages[p])] = true;
    }
  }
  return Status::Ok();
}

size_t StagedSideBytes(const ModelConfig& c, int block_tokens, WeightType weight_type) {
  CausalAttention shape;
  shape.head_dim = c.head_dim();
  shape.bf16 = weight_type == WeightType::kBf16;
  if (!AttendsInBf16(shape) || block_tokens % kAttentionTileKeys != 0) return 0;
  return static_cast<size_t>(c.n_layers) * c.n_kv_heads * (block_tokens / kAttentionTileKeys) *
         StagedTileFloats(shape) * sizeof(float);
}

namespace {

// Tokens of one chunk whose queries share an attention task.
constexpr int32_t kAttnTokens = 16;

// Weight matrices stacked along their outputs (each [outs][k], the same k)
// and packed as one.
PackedMatrix PackStacked(std::initializer_list<std::pair<const float*, int64_t>> parts, int64_t k,
                         WeightType type) {
  std::vector<float> stacked;
  for (const auto& [w, outs] : parts) stacked.insert(stacked.end(), w, w + outs * k);
  return PackedMatrix(stacked.data(), static_cast<int64_t>(stacked.size()) / k, k, type);
}

}  // namespace

CpuForward::CpuForward(const ModelWeights& weights, ThreadPool* pool, WeightType weight_type)
    : w_(weights),
      c_(weights.config),
      pool_(pool),
      bf16_attention_(weight_type == WeightType::kBf16) {
  const WeightType t = weight_type;
  const int64_t dim = c_.dim, kv_dim = int64_t{c_.n_kv_heads} * c_.head_dim(),
                hidden = c_.hidden_dim;
  for (const LayerWeights& lw : w_.layers) {
    PackedLayer& p = layers_.emplace_back();
    p.qkv = PackStacked({{lw.wq, dim}, {lw.wk, kv_dim}, {lw.wv, kv_dim}}, dim, t);
    p.wo = PackedMatrix(lw.wo, dim, dim, t);
    p.w13 = PackStacked({{lw.w1, hidden}, {lw.w3, hidden}}, dim, t);
    p.w2 = PackedMatrix(lw.w2, dim, hidden, t);
  }
  wcls_ = PackedMatrix(w_.wcls, c_.vocab_size, dim, t);
  // RoPE angles as llama2.c's run.c computes them, once per position.
  const int hd = c_.head_dim();
  const int half = hd / 2;
  rope_cos_.resize(static_cast<size_t>(c_.max_seq_len) * half);
  rope_sin_.resize(rope_cos_.size());
  for (int pos = 0; pos < c_.max_seq_len; ++pos) {
    for (int j = 0; j < half; ++j) {
      const float freq = 1.0f / std::pow(c_.rope_theta, static_cast<float>(2 * j) / hd);
      const float angle = static_cast<float>(pos) * freq;
      rope_cos_[static_cast<size_t>(pos) * half + j] = std::cos(angle);
      rope_sin_[static_cast<size_t>(pos) * half + j] = std::sin(angle);
    }
  }
}

Status CpuForward::Run(std::span<const SeqChunk> chunks, KvPages& kv, std::vector<float>* logits) {
  const int dim = c_.dim, hd = c_.head_dim(), half = hd / 2;
  const int n_heads = c_.n_heads, n_kv = c_.n_kv_heads, kv_dim = n_kv * hd;
  const int hidden = c_.hidden_dim, vocab = c_.vocab_size;
  const int group = n_heads / n_kv;
  const int bt = kv.geometry().block_tokens;

  // Validate everything before touching any page.
  KVTIER_RETURN_IF_ERROR(ValidateChunks(c_, bt, kv.num_pages(), chunks));
  int64_t rows = 0, want = 0;
  for (const SeqChunk& ch : chunks) {
    rows += static_cast<int64_t>(ch.tokens.size());
    if (ch.want_logits && !ch.tokens.empty()) ++want;
  }
  logits->assign(static_cast<size_t>(want) * vocab, 0.0f);
  if (rows == 0) return Status::Ok();

  // Row r of the activations belongs to chunk row_chunk[r] at position row_pos[r].
  std::vector<int32_t> row_chunk(rows), row_pos(rows);
  {
    int64_t r = 0;
    for (size_t c = 0; c < chunks.size(); ++c) {
      for (size_t i = 0; i < chunks[c].tokens.size(); ++i, ++r) {
        row_chunk[r] = static_cast<int32_t>(c);
        row_pos[r] = chunks[c].start_pos + static_cast<int32_t>(i);
      }
    }
  }
  auto resize = [&](std::vector<float>& v, int64_t width) {
    if (v.size() < static_cast<size_t>(rows * width)) v.resize(rows * width);
  };
  const int qkv_w = dim + 2 * kv_dim;
  resize(x_, dim), resize(xb_, dim), resize(qkv_, qkv_w), resize(att_, dim);
  resize(h13_, 2 * hidden), resize(h_, hidden), resize(out_, dim);

  {
    int64_t r = 0;
    for (const SeqChunk& ch : chunks) {
      for (TokenId t : ch.tokens) {
        std::copy_n(w_.token_embedding + static_cast<int64_t>(t) * dim, dim, &x_[r * dim]);
        ++r;
      }
    }
  }

  // Attention tasks: runs of at most kAttnTokens tokens of one chunk, the
  // latest positions (the most keys) first so the long ones start early.
  struct AttnTask {
    int32_t chunk, first_token, tokens;
    int64_t first_row, last_pos;
  };
  std::vector<AttnTask> attn_tasks;
  {
    int64_t r = 0;
    for (size_t c = 0; c < chunks.size(); ++c) {
      const auto n = static_cast<int32_t>(chunks[c].tokens.size());
      for (int32_t t = 0; t < n; t += kAttnTokens) {
        const int32_t len = std::min(kAttnTokens, n - t);
        attn_tasks.push_back(
            {static_cast<int32_t>(c), t, len, r + t, chunks[c].start_pos + t + len - 1});
      }
      r += n;
    }
    std::stable_sort(attn_tasks.begin(), attn_tasks.end(),
                     [](const AttnTask& a, const AttnTask& b) { return a.last_pos > b.last_pos; });
  }
  // Staged tiles of keys (cpu_attention.h). A tile every key of which is
  // in pages (all of a chunk's tiles but a partial last one) is staged into
  // its page's side copy when the pages carry one (StagedSideBytes), once
  // per allocation of the page: later chunks and decode steps of the
  // sequence read it from there instead of staging it again. A chunk of
  // one run (a decode step, a hit's last tokens) stages its side tiles as it
  // attends (CausalAttention::stage_into), one of more runs beforehand, once
  // per layer, for all its runs. Its other tiles are staged once per layer
  // into staged_ for a chunk of more than one run, or by each run itself.
  CausalAttention shape;  // what the staging depends on
  shape.head_dim = hd;
  shape.bf16 = bf16_attention_;
  const int64_t tile_floats = StagedTileFloats(shape);
  const int page_tiles = bt / kAttentionTileKeys;
  const size_t side_floats =
      StagedSideBytes(c_, bt, bf16_attention_ ? WeightType::kBf16 : WeightType::kF32) /
      sizeof(float);
  const bool side = side_floats > 0 && kv.side_bytes_per_page() >= side_floats * sizeof(float);
  auto side_tile = [&](PageId page, int l, int g, int tile_in_page) {
    return reinterpret_cast<float*>(kv.Side(page)) +
           ((static_cast<int64_t>(l) * n_kv + g) * page_tiles + tile_in_page) * tile_floats;
  };
  // Per chunk: its tiles, how many lead from side copies, where its others
  // are in staged_ (-1: none) and where its tile pointers are in tile_ptrs
  // (per KV head g, tiles after g - 1's).
  struct ChunkTiles {
    int64_t tiles = 0, in_side = 0, staged_at = -1, ptrs_at = 0;
  };
  // Per chunk tile (at ptrs_at + tile, KV head 0's place): a side tile
  // staged by the chunk's one run as it attends.
  stage_here_.clear();
  std::vector<ChunkTiles> chunk_tiles(chunks.size());
  // Stagings per layer: a chunk's tile into a page's side copy (for every
  // KV head), and a chunk's tile of KV head g into staged_ at `offset`.
  struct SideTask {
    int32_t chunk;
    int64_t tile;
    PageId page;
    int32_t tile_in_page;
  };
  struct StageTask {
    int32_t chunk, g;
    int64_t tile, offset;
  };
  std::vector<SideTask> side_tasks;
  std::vector<StageTask> stage_tasks;
  {
    // A chunk's rows are written here, so a side copy of them is not current
    // (whether or not this pass reads side copies).
    if (kv.side_bytes_per_page() > 0) {
      for (const SeqChunk& ch : chunks) {
        const int64_t end = ch.start_pos + static_cast<int64_t>(ch.tokens.size());
        for (int64_t p = ch.start_pos / bt; p < (end + bt - 1) / bt; ++p) {
          const int32_t from = p == ch.start_pos / bt ? ch.start_pos % bt : 0;
          int32_t& rows = kv.side_rows(ch.pages[p]);
          rows = std::min(rows, from / kAttentionTileKeys * kAttentionTileKeys);
        }
      }
    }
    int64_t total = 0, ptrs = 0;
    for (size_t c = 0; c < chunks.size(); ++c) {
      const SeqChunk& ch = chunks[c];
      const int64_t end = ch.start_pos + static_cast<int64_t>(ch.tokens.size());
      ChunkTiles& ct = chunk_tiles[c];
      ct.tiles = StagedTiles(end);
      ct.ptrs_at = ptrs;
      ptrs += ct.tiles * n_kv;
      const bool one_run = ch.tokens.size() <= static_cast<size_t>(kAttnTokens);
      stage_here_.resize(static_cast<size_t>(ptrs), 0);
      if (side && !ch.tokens.empty()) {  // (an empty chunk attends to nothing)
        ct.in_side = end / kAttentionTileKeys;
        for (int64_t t = 0; t < ct.in_side; ++t) {
          const PageId page = ch.pages[t / page_tiles];
          const auto tip = static_cast<int32_t>(t % page_tiles);
          if (tip * kAttentionTileKeys < kv.side_rows(page)) continue;  // current
          if (one_run) {
            stage_here_[static_cast<size_t>(ct.ptrs_at + t)] = 1;
          } else {
            side_tasks.push_back({static_cast<int32_t>(c), t, page, tip});
          }
        }
      }
      if (one_run || ct.in_side == ct.tiles) continue;
      ct.staged_at = total;
      for (int g = 0; g < n_kv; ++g) {
        for (int64_t t = ct.in_side; t < ct.tiles; ++t) {
          stage_tasks.push_back({static_cast<int32_t>(c), g, t, total});
          total += tile_floats;
        }
      }
    }
    if (staged_.size() < static_cast<size_t>(total)) staged_.resize(static_cast<size_t>(total));
    tile_ptrs_.assign(static_cast<size_t>(ptrs), nullptr);
    stage_ptrs_.assign(static_cast<size_t>(ptrs), nullptr);
  }

  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  auto rope = [&](float* vec, int width, int pos) {
    const float* cs = &rope_cos_[static_cast<size_t>(pos) * half];
    const float* sn = &rope_sin_[static_cast<size_t>(pos) * half];
    for (int i = 0; i < width; i += 2) {
      const int j = (i % hd) / 2;
      const float v0 = vec[i], v1 = vec[i + 1];
      vec[i] = v0 * cs[j] - v1 * sn[j];
      vec[i + 1] = v0 * sn[j] + v1 * cs[j];
    }
  };

  // Row-wise work (norms, RoPE, the residual, SwiGLU) split over the pool in
  // runs of rows: each row's result is its own, the same bits however split.
  auto for_rows = [&](const std::function<void(int64_t)>& fn) {
    const int64_t runs = std::min<int64_t>(rows, 4 * int64_t{pool_->size()});
    pool_->ParallelFor(runs, [&](int64_t run) {
      for (int64_t r = rows * run / runs; r < rows * (run + 1) / runs; ++r) fn(r);
    });
  };

  for_rows([&](int64_t r) {
    RmsNorm(&x_[r * dim], w_.layers[0].rms_att, dim, c_.norm_eps, &xb_[r * dim]);
  });
  for (int l = 0; l < c_.n_layers; ++l) {
    const PackedLayer& pl = layers_[l];
    const LayerWeights& lw = w_.layers[l];
    MatMul(xb_.data(), rows, pl.qkv, qkv_.data(), pool_);
    for_rows([&](int64_t r) {
      float* q = &qkv_[r * qkv_w];
      const float* k = q + dim;
      const float* v = k + kv_dim;
      rope(q, dim, row_pos[r]);
      rope(q + dim, kv_dim, row_pos[r]);
      // This token's K and V go into its page before anyone attends.
      const SeqChunk& ch = chunks[row_chunk[r]];
      const PageId page = ch.pages[row_pos[r] / bt];
      const int slot = row_pos[r] % bt;
      for (int g = 0; g < n_kv; ++g) {
        std::copy_n(k + g * hd, hd, kv.K(page, l, g) + slot * hd);
        std::copy_n(v + g * hd, hd, kv.V(page, l, g) + slot * hd);
      }
    });
    // Attention over the pages of chunk c's KV head g: the pages holding its
    // keys up to position `keys` - 1.
    auto attention_of = [&](const SeqChunk& ch, int g, int64_t keys,
                            std::vector<const float*>& k_pages,
                            std::vector<const float*>& v_pages) {
      const int pages = static_cast<int>((keys + bt - 1) / bt);
      k_pages.resize(pages);
      v_pages.resize(pages);
      for (int p = 0; p < pages; ++p) {
        k_pages[p] = kv.K(ch.pages[p], l, g);
        v_pages[p] = kv.V(ch.pages[p], l, g);
      }
      CausalAttention a;
      a.k_pages = k_pages.data();
      a.v_pages = v_pages.data();
      a.page_tokens = bt;
      a.head_dim = hd;
      a.scale = scale;
      a.bf16 = bf16_attention_;
      return a;
    };
    // Staging (above): side tiles for every KV head, then staged_ tiles.
    const int64_t side_jobs = static_cast<int64_t>(side_tasks.size()) * n_kv;
    pool_->ParallelFor(side_jobs + static_cast<int64_t>(stage_tasks.size()), [&](int64_t i) {
      thread_local std::vector<const float*> k_pages, v_pages;
      int32_t chunk = 0, g = 0;
      int64_t tile = 0;
      float* out = nullptr;
      if (i < side_jobs) {
        const SideTask& st = side_tasks[i / n_kv];
        chunk = st.chunk, g = static_cast<int32_t>(i % n_kv), tile = st.tile;
        out = side_tile(st.page, l, g, st.tile_in_page);
      } else {
        const StageTask& st = stage_tasks[i - side_jobs];
        chunk = st.chunk, g = st.g, tile = st.tile;
        out = &staged_[st.offset];
      }
      const SeqChunk& ch = chunks[chunk];
      const int64_t keys = ch.start_pos + static_cast<int64_t>(ch.tokens.size());
      StageTile(attention_of(ch, g, keys, k_pages, v_pages), keys, tile, out);
    });
    // Each chunk's tiles for this layer: side copies (or where the run is to
    // stage them), staged_, or none.
    for (size_t c = 0; c < chunks.size(); ++c) {
      const ChunkTiles& ct = chunk_tiles[c];
      for (int g = 0; g < n_kv; ++g) {
        const float** ptr = &tile_ptrs_[ct.ptrs_at + g * ct.tiles];
        float** into = &stage_ptrs_[ct.ptrs_at + g * ct.tiles];
        for (int64_t t = 0; t < ct.in_side; ++t) {
          float* at = side_tile(chunks[c].pages[t / page_tiles], l, g,
                                static_cast<int32_t>(t % page_tiles));
          if (stage_here_[static_cast<size_t>(ct.ptrs_at + t)] != 0) {
            into[t] = at;
          } else {
            ptr[t] = at;
          }
        }
        if (ct.staged_at < 0) continue;
        for (int64_t t = ct.in_side; t < ct.tiles; ++t) {
          ptr[t] =
              &staged_[ct.staged_at + (g * (ct.tiles - ct.in_side) + t - ct.in_side) * tile_floats];
        }
      }
    }
    // Attention: one task per (chunk, KV head, run of kAttnTokens tokens),
    // the run's queries of the KV head's group sharing each tile of keys.
    pool_->ParallelFor(static_cast<int64_t>(attn_tasks.size()) * n_kv, [&](int64_t task) {
      thread_local std::vector<const float*> k_pages, v_pages;
      const AttnTask& at = attn_tasks[task / n_kv];
      const int g = static_cast<int>(task % n_kv);
      const SeqChunk& ch = chunks[at.chunk];
      const int64_t first_pos = ch.start_pos + at.first_token;
      CausalAttention a = attention_of(ch, g, first_pos + at.tokens, k_pages, v_pages);
      const int64_t r0 = at.first_row;
      a.q = &qkv_[r0 * qkv_w + static_cast<int64_t>(g) * group * hd];
      a.q_stride = qkv_w;
      a.out = &att_[r0 * dim + static_cast<int64_t>(g) * group * hd];
      a.out_stride = dim;
      a.tokens = at.tokens;
      a.heads = group;
      a.first_pos = first_pos;
      const ChunkTiles& ct = chunk_tiles[at.chunk];
      a.tiles = &tile_ptrs_[ct.ptrs_at + g * ct.tiles];
      a.stage_into = &stage_ptrs_[ct.ptrs_at + g * ct.tiles];
      AttendCausal(a);
    });
    MatMul(att_.data(), rows, pl.wo, out_.data(), pool_);
    for_rows([&](int64_t r) {
      float* x = &x_[r * dim];
      const float* o = &out_[r * dim];
      for (int i = 0; i < dim; ++i) x[i] += o[i];
      RmsNorm(x, lw.rms_ffn, dim, c_.norm_eps, &xb_[r * dim]);
    });
    MatMul(xb_.data(), rows, pl.w13, h13_.data(), pool_);
    for_rows([&](int64_t r) {
      const float* h1 = &h13_[r * 2 * hidden];
      const float* h3 = h1 + hidden;
      float* h = &h_[r * hidden];
      SwiGlu(h1, h3, hidden, h);
    });
    MatMul(h_.data(), rows, pl.w2, out_.data(), pool_);
    // The residual, and the next layer's attention norm.
    for_rows([&](int64_t r) {
      float* x = &x_[r * dim];
      const float* o = &out_[r * dim];
      for (int i = 0; i < dim; ++i) x[i] += o[i];
      if (l + 1 < c_.n_layers)
        RmsNorm(x, w_.layers[l + 1].rms_att, dim, c_.norm_eps, &xb_[r * dim]);
    });
  }

  // Every tile staged into a side copy is current now, for every layer.
  for (size_t c = 0; c < chunks.size(); ++c) {
    const int64_t keys = chunk_tiles[c].in_side * kAttentionTileKeys;
    for (int64_t p = 0; p * bt < keys; ++p) {
      int32_t& rows = kv.side_rows(chunks[c].pages[p]);
      rows = std::max(rows, static_cast<int32_t>(std::min<int64_t>(bt, keys - p * bt)));
    }
  }

  // Logits of the last token of each chunk that wants them.
  std::vector<float> last(static_cast<size_t>(want) * dim);
  {
    int64_t r = 0, n = 0;
    for (const SeqChunk& ch : chunks) {
      r += static_cast<int64_t>(ch.tokens.size());
      if (ch.want_logits && !ch.tokens.empty()) {
        RmsNorm(&x_[(r - 1) * dim], w_.rms_final, dim, c_.norm_eps, &last[n * dim]);
        ++n;
      }
    }
  }
  MatMul(last.data(), want, wcls_, logits->data(), pool_);
  return Status::Ok();
}

Status CpuBackend::ReadPage(PageId page, std::span<std::byte> out) {
  std::span<std::byte> p = kv_.Bytes(page);
  if (out.size() != p.size()) return Status::InvalidArgument("page buffer of the wrong size");
  std::memcpy(out.data(), p.data(), p.size());
  return Status::Ok();
}

Status CpuBackend::WritePage(PageId page, std::span<const std::byte> in) {
  std::span<std::byte> p = kv_.Bytes(page);
  if (in.size() != p.size()) return Status::InvalidArgument("page payload of the wrong size");
  std::memcpy(p.data(), in.data(), p.size());
  kv_.side_rows(page) = 0;
  return Status::Ok();
}

Result<std::vector<std::byte>> CpuBackend::PackRows(PageId page, int rows) {
  if (rows <= 0 || rows > kv_.geometry().block_tokens) {
    return Status::InvalidArgument("rows outside the page");
  }
  return kv_.PackRows(page, rows);
}

Status CpuBackend::UnpackRows(PageId page, int rows, std::span<const std::byte> payload) {
  if (rows <= 0 || rows > kv_.geometry().block_tokens || payload.size() != kv_.RowsBytes(rows)) {
    return Status::InvalidArgument("partial block of the wrong size");
  }
  kv_.UnpackRows(page, rows, payload);
  kv_.side_rows(page) = 0;
  return Status::Ok();
}

Status ForwardBackend::RunArgmax(std::span<const SeqChunk> chunks, std::vector<TokenId>* tokens) {
  std::vector<float> logits;
  KVTIER_RETURN_IF_ERROR(Run(chunks, &logits));
  tokens->clear();
  size_t vocab = 0;
  for (const SeqChunk& ch : chunks) {
    if (!ch.want_logits || ch.tokens.empty()) continue;
    tokens->push_back(0);
  }
  if (tokens->empty()) return Status::Ok();
  vocab = logits.size() / tokens->size();
  for (size_t r = 0; r < tokens->size(); ++r) {
    const float* row = logits.data() + r * vocab;
    (*tokens)[r] = static_cast<TokenId>(ArgMax(row, static_cast<int64_t>(vocab)));
  }
  return Status::Ok();
}

}  // namespace kvtier
