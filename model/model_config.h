// ModelConfig: the shape of a Llama-family model (DESIGN §8), and what the
// cache needs to know of it: the KV geometry of its blocks and the compute one
// token costs (for the rematerialization side of the cost model, DESIGN §4).
#pragma once

#include <cstdint>
#include <string>

#include "common/kv_geometry.h"
#include "common/status.h"

namespace kvtier {

struct ModelConfig {
  std::string name;    // e.g. "stories260K"
  int dim = 0;         // residual width
  int hidden_dim = 0;  // SwiGLU inner width
  int n_layers = 0;
  int n_heads = 0;     // query heads
  int n_kv_heads = 0;  // key/value heads (GQA); divides n_heads
  int vocab_size = 0;
  int max_seq_len = 0;  // context length, tokens
  float rope_theta = 10000.0f;
  float norm_eps = 1e-5f;

  int head_dim() const { return n_heads > 0 ? dim / n_heads : 0; }
  Status Validate() const;
  // The KV geometry of this model's cache blocks.
  KvGeometry Kv(int block_tokens, DType dtype) const;
  // Parameters touched per token (embeddings excluded, the output matrix
  // included): the N in the 2·N FLOPs-per-token estimate.
  uint64_t ActiveParams() const;
};

}  // namespace kvtier
