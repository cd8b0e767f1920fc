// KvGeometry: the shape of one model's KV cache, and the size of a block.
//
// A block holds the KV of `block_tokens` consecutive tokens for every layer,
// in *block layout* [layer][K|V][kv_head][token][head_dim] (DESIGN §2).
// Used by kernels/ (pack/unpack), cache/ (namespaces) and engine/.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "common/status.h"

namespace kvtier {

enum class DType : uint8_t { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

size_t DTypeBytes(DType d);
std::string_view DTypeName(DType d);                     // "f32", "f16", "bf16"
std::optional<DType> ParseDType(std::string_view name);  // accepts the names above

struct KvGeometry {
  int layers = 0;         // transformer layers
  int kv_heads = 0;       // key/value heads (GQA groups)
  int head_dim = 0;       // elements per head
  int block_tokens = 64;  // tokens per cache block: a power of two in [16, 1024]
  DType dtype = DType::kFloat32;

  // Bytes of KV one token occupies across all layers (K and V).
  size_t BytesPerToken() const;
  // Bytes of one block in block layout.
  size_t BlockBytes() const { return BytesPerToken() * static_cast<size_t>(block_tokens); }
  Status Validate() const;
};

// True when block_tokens is a power of two in [16, 1024] (DESIGN §2).
bool ValidBlockTokens(int64_t block_tokens);

}  // namespace kvtier
