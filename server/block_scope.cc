#include "server/block_scope.h"

#include <string>

namespace kvtier {

Result<BlockScope> ResolveBlockScope(const Namespace& defaults, const CacheSecret& secret,
                                     const Principal& caller, bool present,
                                     const v1::Namespace& m) {
  Namespace ns = defaults;
  std::string client_salt;
  if (present) {
    if (!m.model_id().empty()) ns.model_id = m.model_id();
    if (!m.model_revision().empty()) ns.model_revision = m.model_revision();
    if (!m.kv_dtype().empty()) {
      std::optional<DType> d = ParseDType(m.kv_dtype());
      if (!d) {
        return Status::InvalidArgument("kv_dtype '" + m.kv_dtype() +
                                       "' is not one of f32, f16, bf16");
      }
      ns.kv_dtype = *d;
    }
    if (m.block_tokens() != 0) {
      if (!ValidBlockTokens(m.block_tokens())) {
        return Status::InvalidArgument("block_tokens must be a power of two in [16, 1024], got " +
                                       std::to_string(m.block_tokens()));
      }
      ns.block_tokens = static_cast<int>(m.block_tokens());
    }
    if (m.layout_version() != 0) ns.layout_version = m.layout_version();
    if (m.tp_size() != 0) ns.tp_size = m.tp_size();
    ns.tp_rank = m.tp_rank();
    client_salt = m.cache_salt();
    if (client_salt.size() > Namespace::kMaxStringBytes) {
      return Status::InvalidArgument("namespace cache_salt is " +
                                     std::to_string(client_salt.size()) + " bytes; the limit is " +
                                     std::to_string(Namespace::kMaxStringBytes));
    }
  }
  ns.cache_salt = secret.ScopedSalt(caller.cache_salt, client_salt);
  KVTIER_RETURN_IF_ERROR(ns.Validate());
  const BlockKey mask = secret.KeyMask(ns.Seed());
  return BlockScope{std::move(ns), mask};
}

}  // namespace kvtier
