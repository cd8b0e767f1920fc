// Namespace: everything that makes the KV bytes of a token prefix differ
// (DESIGN §2). Blocks of different namespaces never share keys: the
// namespace's seed starts every key chain.
//
// The cache salt separates tenants. Two tenants share blocks only when an
// operator gives them the same salt (a share group); otherwise a prefix-cache
// hit would leak across tenants through timing (CVE-2025-46570).
#pragma once

#include <cstdint>
#include <string>

#include "common/block_key.h"
#include "common/kv_geometry.h"
#include "common/status.h"

namespace kvtier {

struct Namespace {
  std::string model_id;              // e.g. "stories260K" or "meta-llama/Llama-3.1-8B"
  std::string model_revision;        // e.g. a commit or checkpoint digest; may be empty
  DType kv_dtype = DType::kFloat32;  // dtype of the stored KV
  int block_tokens = 64;             // tokens per block: power of two in [16, 1024]
  uint32_t layout_version = 1;       // version of the block layout (DESIGN §2)
  uint32_t tp_rank = 0;              // tensor-parallel rank whose KV shard this is
  uint32_t tp_size = 1;              // tensor-parallel degree
  std::string cache_salt;            // tenant or share-group salt; may be empty

  static constexpr size_t kMaxStringBytes = 256;  // for model_id, revision and salt

  Status Validate() const;
  // The 128-bit seed of every key chain in this namespace: XXH3-128 of an
  // unambiguous encoding of all the fields (length-prefixed strings, fixed-width
  // little-endian integers), so no two namespaces share a seed by construction.
  BlockKey Seed() const;
  // "model@revision/f32/b64/l1/tp0of1/salt=<hex digest>" for logs; the salt is
  // shown only as a digest.
  std::string ToString() const;
};

// The 64-bit fingerprint of a namespace for statistics (reuse estimates are
// kept per stream), taken from its seed.
inline uint64_t StreamOf(const BlockKey& namespace_seed) {
  return namespace_seed.hi ^ namespace_seed.lo;
}

}  // namespace kvtier
