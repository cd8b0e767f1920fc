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
#pragma once

#include <grpcpp/grpcpp.h>

#include <string>
#include <unordered_map>

#include "common/status.h"

namespace kvtier {

struct Principal {
  std::string tenant;
  bool admin = false;
  // The namespace salt of its blocks: the tenant itself, or "group:NAME" for
  // tenants an operator put in one share group (they hit each other's cache).
  std::string cache_salt;
};

class Authenticator {
 public:
  Authenticator() = default;  // open: no keys
  static Result<Authenticator> FromFile(const std::string& path);
  static Result<Authenticator> FromText(const std::string& text);  // the file's contents

  bool enabled() const { return !keys_.empty(); }
  size_t keys() const { return keys_.size(); }

  // The caller of `ctx`, acting for `requested` (a request's tenant field, ""
  // when it names none). UNAUTHENTICATED when keys are on and the key is
  // missing or unknown; PERMISSION_DENIED when the key's tenant is not
  // `requested`.
  grpc::Status Authenticate(const grpc::ServerContext* ctx, const std::string& requested,
                            Principal* out) const;
  // The same, and the caller must be an admin.
  grpc::Status AuthenticateAdmin(const grpc::ServerContext* ctx) const;

 private:
  std::unordered_map<std::string, Principal> keys_;
};

}  // namespace kvtier
