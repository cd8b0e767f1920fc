#include "model/model_config.h"

namespace kvtier {

Status ModelConfig::Validate() const {
  if (dim <= 0 || hidden_dim <= 0 || n_layers <= 0 || n_heads <= 0 || n_kv_heads <= 0 ||
      vocab_size <= 0 || max_seq_len <= 0) {
    return Status::InvalidArgument("model '" + name + "' has a non-positive dimension");
  }
  if (dim % n_heads != 0) {
    return Status::InvalidArgument("model '" + name + "': dim " + std::to_string(dim) +
                                   " is not a multiple of n_heads " + std::to_string(n_heads));
  }
  if (n_heads % n_kv_heads != 0) {
    return Status::InvalidArgument("model '" + name + "': n_heads " + std::to_string(n_heads) +
                                   " is not a multiple of n_kv_heads " +
                                   std::to_string(n_kv_heads));
  }
  return Status::Ok();
}

KvGeometry ModelConfig::Kv(int block_tokens, DType dtype) const {
  return KvGeometry{n_layers, n_kv_heads, head_dim(), block_tokens, dtype};
}

uint64_t ModelConfig::ActiveParams() const {
  const uint64_t d = static_cast<uint64_t>(dim);
  const uint64_t kv = static_cast<uint64_t>(n_kv_heads) * static_cast<uint64_t>(head_dim());
  const uint64_t attn = d * d + 2 * d * kv + d * d;  // wq, wk, wv, wo
  const uint64_t ffn = 3 * d * static_cast<uint64_t>(hidden_dim);
  return static_cast<uint64_t>(n_layers) * (attn + ffn) + d * static_cast<uint64_t>(vocab_size);
}

}  // namespace kvtier
