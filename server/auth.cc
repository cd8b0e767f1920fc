#include "server/auth.h"

#include <fstream>
#include <sstream>

namespace kvtier {
namespace {

bool Printable(const std::string& s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

// The key a call carries, or "".
std::string KeyOf(const grpc::ServerContext* ctx) {
  const auto& md = ctx->client_metadata();
  if (auto it = md.find("x-api-key"); it != md.end()) {
    return std::string(it->second.data(), it->second.size());
  }
  if (auto it = md.find("authorization"); it != md.end()) {
    const std::string v(it->second.data(), it->second.size());
    constexpr std::string_view kBearer = "Bearer ";
    if (v.compare(0, kBearer.size(), kBearer) == 0) return v.substr(kBearer.size());
  }
  return "";
}

}  // namespace

Result<Authenticator> Authenticator::FromFile(const std::string& path, const CacheSecret& secret) {
  std::ifstream in(path);
  if (!in) return Status::NotFound("cannot read the API key file " + path);
  std::stringstream text;
  text << in.rdbuf();
  Result<Authenticator> a = FromText(text.str(), secret);
  if (!a.ok()) return Status(a.status().code(), path + ": " + a.status().message());
  return a;
}

Result<Authenticator> Authenticator::FromText(const std::string& text, const CacheSecret& secret) {
  Authenticator a(secret);
  std::istringstream lines(text);
  int n = 0;
  for (std::string line; std::getline(lines, line);) {
    ++n;
    if (line.empty() || line[0] == '#') continue;
    std::istringstream words(line);
    std::string key, tenant;
    words >> key >> tenant;
    const std::string where = "line " + std::to_string(n) + ": ";
    if (key.empty() && tenant.empty()) continue;  // blank
    bool admin = false, bad = tenant.empty();
    std::string group;
    for (std::string w; words >> w;) {
      if (w == "admin" && !admin) {
        admin = true;
      } else if (w.rfind("group=", 0) == 0 && group.empty() && w.size() > 6) {
        group = w.substr(6);
      } else {
        bad = true;
      }
    }
    if (bad) return Status::InvalidArgument(where + "expected \"KEY TENANT [admin] [group=NAME]\"");
    if (key.size() < 16 || !Printable(key)) {
      return Status::InvalidArgument(where + "a key needs at least 16 printable characters");
    }
    if (tenant.size() > 256 || !Printable(tenant)) {
      return Status::InvalidArgument(where + "a tenant is printable, at most 256 bytes");
    }
    if (group.size() > 256 || !Printable(group)) {
      return Status::InvalidArgument(where + "a group name is printable, at most 256 bytes");
    }
    // A tenant's keys must agree on its share group: the group decides which
    // blocks it sees, whichever key it calls with.
    auto [g, inserted] = a.groups_.emplace(tenant, group);
    if (!inserted && g->second != group) {
      return Status::InvalidArgument(where + "tenant '" + tenant +
                                     "' is given another share group than on an earlier line");
    }
    if (!a.keys_.emplace(key, KeyEntry{tenant, admin, group}).second) {
      return Status::InvalidArgument(where + "the same key appears twice");
    }
  }
  if (a.keys_.empty()) return Status::InvalidArgument("the API key file holds no key");
  return a;
}

grpc::Status Authenticator::Authenticate(const grpc::ServerContext* ctx,
                                         const std::string& requested, Principal* out) const {
  return AuthenticateKey(enabled() ? KeyOf(ctx) : std::string(), requested,
                         "metadata x-api-key or authorization: Bearer", out);
}

grpc::Status Authenticator::AuthenticateKey(const std::string& key, const std::string& requested,
                                            std::string_view how, Principal* out) const {
  if (!enabled()) {
    *out = PrincipalFor(requested.empty() ? "default" : requested, true, "");
    return grpc::Status::OK;
  }
  if (key.empty()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "an API key is required (" + std::string(how) + ")");
  }
  auto it = keys_.find(key);
  if (it == keys_.end()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "the API key is not valid");
  }
  const KeyEntry& k = it->second;
  if (!requested.empty() && requested != k.tenant) {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        "this API key may not act for tenant '" + requested + "'");
  }
  *out = PrincipalFor(k.tenant, k.admin, k.group);
  return grpc::Status::OK;
}

Principal Authenticator::PrincipalFor(const std::string& tenant, bool admin,
                                      const std::string& group) const {
  return Principal{tenant, admin,
                   group.empty() ? secret_.TenantSalt(tenant) : secret_.GroupSalt(group)};
}

Principal Authenticator::PrincipalOf(const std::string& tenant) const {
  const std::string t = tenant.empty() ? "default" : tenant;
  auto g = groups_.find(t);
  return PrincipalFor(t, false, g == groups_.end() ? "" : g->second);
}

grpc::Status Authenticator::AuthenticateAdmin(const grpc::ServerContext* ctx) const {
  Principal p;
  grpc::Status s = Authenticate(ctx, "", &p);
  if (!s.ok()) return s;
  if (!p.admin) {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "this call needs an admin API key");
  }
  return grpc::Status::OK;
}

}  // namespace kvtier
