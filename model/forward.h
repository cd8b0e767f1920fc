// CpuForward: the Llama forward pass on the CPU over paged KV (DESIGN §8).
//
// One call computes a batch of chunks, each a run of consecutive tokens of
// one sequence (a prefill chunk, or the single next token of a decoding
// sequence). Each token's K and V are written into the sequence's pages and
// the token attends to every earlier token of its sequence (those already in
// pages and those earlier in its own chunk).
//
// Determinism: a token's K, V and logits depend only on its sequence's tokens
// up to it, bit for bit: not on the rest of the batch, not on how the prefix
// was chunked, not on whether earlier pages were computed here or loaded from
// the cache. Every reduction has a fixed order (see cpu_math.h) and attention
// walks a token's keys in position order.
//
// Not thread-safe; uses the given pool for its parallel loops.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "common/token.h"
#include "model/cpu_math.h"
#include "model/kv_pages.h"
#include "model/model_weights.h"

namespace kvtier {

class ThreadPool;

struct SeqChunk {
  std::span<const TokenId> tokens;  // the tokens to compute, at positions start_pos...
  int start_pos = 0;
  std::span<const PageId> pages;  // the sequence's block table, covering every position
  bool want_logits = false;       // the logits of the chunk's last token
};

// What every forward pass checks before touching a page: positions inside
// the model's context, block tables covering every position with pages in
// [0, num_pages), no page named twice (a page holds one sequence's tokens),
// token ids inside the vocabulary. kInvalidArgument naming the first
// problem.
Status ValidateChunks(const ModelConfig& config, int block_tokens, int64_t num_pages,
                      std::span<const SeqChunk> chunks);

// Bytes per page of the side copy (KvPages) that CpuForward keeps for a
// model run with `weight_type` weights: each page's tiles of keys and values
// as attention stages them, where attention runs as bf16 (half the
// page's own bytes) and block_tokens is whole tiles; 0 elsewhere (the f32
// kernel's tiles are as large as the page, so it stages as it goes).
size_t StagedSideBytes(const ModelConfig& config, int block_tokens, WeightType weight_type);

// Where the engine's KV pages live and its forward pass runs: the CPU
// (CpuBackend below) or a CUDA device (GpuForward, gpu_forward.h). The engine
// allocates pages itself (KvPages' free list) and moves page contents to and
// from the cache through this interface.
class ForwardBackend {
 public:
  virtual ~ForwardBackend() = default;
  virtual std::string_view device() const = 0;  // "cpu" or "cuda"
  // Runs the chunks (see CpuForward::Run).
  virtual Status Run(std::span<const SeqChunk> chunks, std::vector<float>* logits) = 0;
  // Runs the chunks like Run but answers, for each chunk that wants logits,
  // only the index of its largest logit (the first of equal maxima): all that
  // greedy sampling needs, without moving a vocabulary of floats per row. The
  // default runs Run and scans the rows.
  virtual Status RunArgmax(std::span<const SeqChunk> chunks, std::vector<TokenId>* tokens);
  // A page's bytes in block layout when they are host memory the caller may
  // read and write in place; empty when they are not (use Read/WritePage).
  virtual std::span<std::byte> HostPage(PageId page) = 0;
  // Copies a whole page out of (into) the pool; sizes must equal the page's.
  virtual Status ReadPage(PageId page, std::span<std::byte> out) = 0;
  virtual Status WritePage(PageId page, std::span<const std::byte> in) = 0;
  // The first `rows` slots of a page as a partial block, and back (see
  // KvPages::PackRows / UnpackRows).
  virtual Result<std::vector<std::byte>> PackRows(PageId page, int rows) = 0;
  virtual Status UnpackRows(PageId page, int rows, std::span<const std::byte> payload) = 0;
};

class CpuForward {
 public:
  // `weights` and `pool` must outlive this object. The products run on
  // weights packed as `weight_type` (bf16: rounded once, here); with bf16,
  // attention is bf16 too where the CPU has AVX-512 BF16 (cpu_attention.h).
  CpuForward(const ModelWeights& weights, ThreadPool* pool,
             WeightType weight_type = WeightType::kF32);

  // Runs the chunks. `logits` receives one row of vocab_size floats per chunk
  // that wants logits, in chunk order. Where `kv` carries side copies of
  // StagedSideBytes, the full tiles of keys of each chunk are kept there and
  // read from there by later calls while the page stays allocated. kInvalidArgument (and nothing
  // written) when a token id is out of range, a position is past max_seq_len or a block table is
  // too short.
  Status Run(std::span<const SeqChunk> chunks, KvPages& kv, std::vector<float>* logits);

 private:
  // A layer's weights packed for the product (cpu_math.h), with the
  // products that read the same input fused: q, k and v in one, w1 and w3 in
  // another.
  struct PackedLayer {
    PackedMatrix qkv, wo, w13, w2;
  };

  const ModelWeights& w_;
  const ModelConfig& c_;
  ThreadPool* pool_;
  std::vector<float> rope_cos_, rope_sin_;  // [max_seq_len][head_dim / 2]
  std::vector<PackedLayer> layers_;
  PackedMatrix wcls_;
  bool bf16_attention_ = false;  // CausalAttention::bf16
  // Activations, [tokens][width], reused between calls: qkv_ is q | k | v
  // and h13_ is w1 | w3 per token.
  std::vector<float> x_, xb_, qkv_, att_, h13_, h_, out_;
  std::vector<float> staged_;            // attention's key tiles, staged once per layer
  std::vector<const float*> tile_ptrs_;  // each chunk's tiles (CausalAttention::tiles)
  std::vector<float*> stage_ptrs_;       // and CausalAttention::stage_into
  std::vector<uint8_t> stage_here_;      // per chunk tile: staged into its side copy by its run
};

// The CPU backend: CpuForward over host pages.
class CpuBackend final : public ForwardBackend {
 public:
  // `weights`, `kv` and `pool` must outlive this object.
  CpuBackend(const ModelWeights& weights, KvPages& kv, ThreadPool* pool,
             WeightType weight_type = WeightType::kF32)
      : forward_(weights, pool, weight_type), kv_(kv) {}
  std::string_view device() const override { return "cpu"; }
  Status Run(std::span<const SeqChunk> chunks, std::vector<float>* logits) override {
    return forward_.Run(chunks, kv_, logits);
  }
  std::span<std::byte> HostPage(PageId page) override { return kv_.Bytes(page); }
  Status ReadPage(PageId page, std::span<std::byte> out) override;
  Status WritePage(PageId page, std::span<const std::byte> in) override;
  Result<std::vector<std::byte>> PackRows(PageId page, int rows) override;
  Status UnpackRows(PageId page, int rows, std::span<const std::byte> payload) override;

 private:
  CpuForward forward_;
  KvPages& kv_;
};

}  // namespace kvtier
