#include "cache/namespace.h"

#include <xxhash.h>

#include <string_view>

namespace kvtier {
namespace {

void PutU32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}

void PutString(std::string& out, std::string_view s) {
  PutU32(out, static_cast<uint32_t>(s.size()));
  out.append(s);
}

Status CheckLength(std::string_view field, const std::string& value) {
  if (value.size() > Namespace::kMaxStringBytes) {
    return Status::InvalidArgument("namespace " + std::string(field) + " is " +
                                   std::to_string(value.size()) + " bytes; the limit is " +
                                   std::to_string(Namespace::kMaxStringBytes));
  }
  return Status::Ok();
}

}  // namespace

Status Namespace::Validate() const {
  KVTIER_RETURN_IF_ERROR(CheckLength("model_id", model_id));
  KVTIER_RETURN_IF_ERROR(CheckLength("model_revision", model_revision));
  KVTIER_RETURN_IF_ERROR(CheckLength("cache_salt", cache_salt));
  if (!ValidBlockTokens(block_tokens)) {
    return Status::InvalidArgument("block_tokens must be a power of two in [16, 1024], got " +
                                   std::to_string(block_tokens));
  }
  if (tp_size == 0 || tp_rank >= tp_size) {
    return Status::InvalidArgument("tensor-parallel rank " + std::to_string(tp_rank) +
                                   " is not below the degree " + std::to_string(tp_size));
  }
  return Status::Ok();
}

BlockKey Namespace::Seed() const {
  std::string enc = "kvtier-namespace-v1";
  PutString(enc, model_id);
  PutString(enc, model_revision);
  PutU32(enc, static_cast<uint32_t>(kv_dtype));
  PutU32(enc, static_cast<uint32_t>(block_tokens));
  PutU32(enc, layout_version);
  PutU32(enc, tp_rank);
  PutU32(enc, tp_size);
  PutString(enc, cache_salt);
  XXH128_hash_t h = XXH3_128bits(enc.data(), enc.size());
  return BlockKey{h.high64, h.low64};
}

std::string Namespace::ToString() const {
  std::string s = model_id.empty() ? "<default>" : model_id;
  if (!model_revision.empty()) s += "@" + model_revision;
  s += "/" + std::string(DTypeName(kv_dtype)) + "/b" + std::to_string(block_tokens) + "/l" +
       std::to_string(layout_version) + "/tp" + std::to_string(tp_rank) + "of" +
       std::to_string(tp_size);
  if (!cache_salt.empty()) {
    s += "/salt=" +
         BlockKey{0, XXH3_64bits(cache_salt.data(), cache_salt.size())}.ToHex().substr(16);
  }
  return s;
}

}  // namespace kvtier
