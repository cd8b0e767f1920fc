#include "common/kv_geometry.h"

#include <string>

namespace kvtier {

size_t DTypeBytes(DType d) {
  switch (d) {
    case DType::kFloat32:
      return 4;
    case DType::kFloat16:
    case DType::kBFloat16:
      return 2;
  }
  return 0;
}

std::string_view DTypeName(DType d) {
  switch (d) {
    case DType::kFloat32:
      return "f32";
    case DType::kFloat16:
      return "f16";
    case DType::kBFloat16:
      return "bf16";
  }
  return "?";
}

std::optional<DType> ParseDType(std::string_view name) {
  if (name == "f32" || name == "float32") return DType::kFloat32;
  if (name == "f16" || name == "float16") return DType::kFloat16;
  if (name == "bf16" || name == "bfloat16") return DType::kBFloat16;
  return std::nullopt;
}

bool ValidBlockTokens(int64_t b) { return b >= 16 && b <= 1024 && (b & (b - 1)) == 0; }

size_t KvGeometry::BytesPerToken() const {
  return static_cast<size_t>(layers) * 2 * static_cast<size_t>(kv_heads) *
         static_cast<size_t>(head_dim) * DTypeBytes(dtype);
}

Status KvGeometry::Validate() const {
  if (layers <= 0 || kv_heads <= 0 || head_dim <= 0) {
    return Status::InvalidArgument(
        "KV geometry needs positive layers, kv_heads and head_dim (got " + std::to_string(layers) +
        ", " + std::to_string(kv_heads) + ", " + std::to_string(head_dim) + ")");
  }
  if (!ValidBlockTokens(block_tokens)) {
    return Status::InvalidArgument("block_tokens must be a power of two in [16, 1024], got " +
                                   std::to_string(block_tokens));
  }
  return Status::Ok();
}

}  // namespace kvtier
