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
#include <vector>

#include "cache/prefix_hasher.h"  // TokenId
#include "common/status.h"
#include "engine/kv_pages.h"
#include "engine/model_weights.h"

namespace kvtier {

class ThreadPool;

struct SeqChunk {
  std::span<const TokenId> tokens;  // the tokens to compute, at positions start_pos...
  int start_pos = 0;
  std::span<const PageId> pages;  // the sequence's block table, covering every position
  bool want_logits = false;       // the logits of the chunk's last token
};

class CpuForward {
 public:
  // `weights` and `pool` must outlive this object.
  CpuForward(const ModelWeights& weights, ThreadPool* pool);

  // Runs the chunks. `logits` receives one row of vocab_size floats per chunk
  // that wants logits, in chunk order. kInvalidArgument (and nothing written)
  // when a token id is out of range, a position is past max_seq_len or a
  // block table is too short.
  Status Run(std::span<const SeqChunk> chunks, KvPages& kv, std::vector<float>* logits);

 private:
  const ModelWeights& w_;
  const ModelConfig& c_;
  ThreadPool* pool_;
  std::vector<float> rope_cos_, rope_sin_;  // [max_seq_len][head_dim / 2]
  // Activations, [tokens][width], reused between calls.
  std::vector<float> x_, xb_, q_, k_, v_, att_, h1_, h3_, out_;
};

}  // namespace kvtier
