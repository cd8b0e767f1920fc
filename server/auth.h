// Authenticator: per-tenant API keys (DESIGN §9).
//
// With a key file, every call but Admin.Health must carry a key, as
// metadata "x-api-key: KEY" or "authorization: Bearer KEY"; the key names
// the caller's tenant, which is then the only tenant the call may act for
// (its cache salt, its named caches, its bills). A key marked admin may also
// read the daemon's stats and explain blocks. Without a key file kvtierd is
// open (for a laptop or a trusted network): the tenant is what the request
// says ("default" when it says nothing), and everyone is admin.
//
// Key file: one key per line, "KEY TENANT [admin] [group=NAME]"; blank lines
// and lines starting with '#' are skipped. Tenants in one share group share
// cached blocks (DESIGN §2: only an operator may allow that). Keys are at least 16 printable
// characters without spaces; tenants printable, at most 256 bytes. Immutable after loading;
// thread-safe.
//
// Cache salts are secret (server/cache_secret.h): a tenant's is an HMAC of its
// name, a share group's an HMAC of the group's name in another domain, both
// under the daemon's secret, so no caller can compute another's.
#pragma once

#include <grpcpp/grpcpp.h>

#include <string>
#include <string_view>
#include <unordered_map>

#include "common/status.h"
#include "server/cache_secret.h"

namespace kvtier {

struct Principal {
  std::string tenant;
  bool admin = false;
  // The namespace salt of its blocks: the secret salt of the tenant, or of
  // the share group an operator put it in (its members hit each other's cache).
  std::string cache_salt;
};

class Authenticator {
 public:
  explicit Authenticator(const CacheSecret& secret) : secret_(secret) {}  // open: no keys
  static Result<Authenticator> FromFile(const std::string& path, const CacheSecret& secret);
  // The file's contents.
  static Result<Authenticator> FromText(const std::string& text, const CacheSecret& secret);

  bool enabled() const { return !keys_.empty(); }
  size_t keys() const { return keys_.size(); }

  // The caller of `ctx`, acting for `requested` (a request's tenant field, ""
  // when it names none). UNAUTHENTICATED when keys are on and the key is
  // missing or unknown; PERMISSION_DENIED when the key's tenant is not
  // `requested`.
  grpc::Status Authenticate(const grpc::ServerContext* ctx, const std::string& requested,
                            Principal* out) const;
  // The same for a key that came another way (an HTTP header; "" = none).
  // `how` names where a key is expected, for the error message.
  grpc::Status AuthenticateKey(const std::string& key, const std::string& requested,
                               std::string_view how, Principal* out) const;
  // The same, and the caller must be an admin.
  grpc::Status AuthenticateAdmin(const grpc::ServerContext* ctx) const;
  // What the daemon knows of `tenant` ("" = "default"): its salt (its share
  // group's when it has a key in one). For an admin acting on a tenant's data.
  Principal PrincipalOf(const std::string& tenant) const;

  const CacheSecret& secret() const { return secret_; }

 private:
  struct KeyEntry {
    std::string tenant;
    bool admin = false;
    std::string group;  // "" = none
  };
  Principal PrincipalFor(const std::string& tenant, bool admin, const std::string& group) const;

  CacheSecret secret_;
  std::unordered_map<std::string, KeyEntry> keys_;       // by API key
  std::unordered_map<std::string, std::string> groups_;  // tenant -> its share group
};

}  // namespace kvtier
