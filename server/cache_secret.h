// CacheSecret: the daemon's secret key for cache salts and block-key scopes
// (DESIGN §2).
//
// A tenant's cache salt must not be derivable by anyone else, so it is an
// HMAC-SHA256 of the tenant (or of its share group, in a separate domain so a
// tenant named "group:x" never gets group x's salt) under a 32-byte secret
// that only the daemon knows. The secret lives in the data directory
// (DATA_DIR/cache_secret, mode 0600), created from the kernel's random source
// on the first start and read back on every later one, so salts and keys stay
// stable across restarts.
//
// The same secret scopes block keys on the block API: the key a client sees
// is the stored key XOR a 128-bit mask derived from the caller's namespace
// seed (which holds the tenant's salt). A tenant therefore names only blocks
// of its own namespace; another tenant's key, even leaked, maps to a
// different stored key.
//
// Immutable after construction; thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/block_key.h"
#include "common/status.h"

namespace kvtier {

class CacheSecret {
 public:
  static constexpr size_t kBytes = 32;
  static constexpr char kFileName[] = "cache_secret";

  // Reads DATA_DIR/cache_secret, creating it (atomically, fsync'd) when
  // absent. kCorruption when the file exists with another size; kIOError when
  // it cannot be read or written.
  static Result<CacheSecret> LoadOrCreate(const std::string& data_dir);
  // Reads the secret from `path` (a cluster's shared secret: --cache-secret);
  // kNotFound when absent, kCorruption when it has another size.
  static Result<CacheSecret> Load(const std::string& path);
  // A fixed secret (tests, fuzzing).
  static CacheSecret FromBytes(const std::array<uint8_t, kBytes>& bytes);

  // The cache salt of a tenant, or of a share group: 64 hex digits.
  std::string TenantSalt(std::string_view tenant) const;
  std::string GroupSalt(std::string_view group) const;
  // What kvtierd nodes that share this secret present to each other on the
  // Peer service (DESIGN §10): 64 hex digits no client can derive.
  std::string PeerToken() const;
  // A salt a client chose, within the scope of `scope_salt` (a TenantSalt or
  // GroupSalt): another scope's client salt of the same text gives another
  // salt. Empty `client_salt` returns `scope_salt` itself.
  std::string ScopedSalt(std::string_view scope_salt, std::string_view client_salt) const;
  // The mask between stored and visible block keys in the namespace whose
  // seed is `namespace_seed`: visible = stored ^ mask.
  BlockKey KeyMask(const BlockKey& namespace_seed) const;

 private:
  explicit CacheSecret(const std::array<uint8_t, kBytes>& bytes) : key_(bytes) {}
  // HMAC-SHA256(key_, domain || 0 || message).
  std::array<uint8_t, 32> Mac(std::string_view domain, std::string_view message) const;

  std::array<uint8_t, kBytes> key_;
};

// Block keys as one client sees them: the stored key XOR its scope's mask.
// The XOR is its own inverse, so the same call maps both ways.
inline BlockKey ScopeKey(const BlockKey& key, const BlockKey& mask) {
  return BlockKey{key.hi ^ mask.hi, key.lo ^ mask.lo};
}

}  // namespace kvtier
