// Fuzzes the API key file parser (server/auth.h, Authenticator::FromText).
//
// A file either is refused with kInvalidArgument or gives an authenticator
// with at least one key and no more keys than lines, that refuses a call
// without a key, and gives every tenant a 64-hex-digit secret salt that is
// the same whether asked twice.
#include <grpcpp/grpcpp.h>

#include <algorithm>

#include "server/auth.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

bool IsHexSalt(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvtier;
  static const CacheSecret secret = CacheSecret::FromBytes({1, 2, 3, 4, 5, 6, 7, 8});
  const std::string text(reinterpret_cast<const char*>(data), size);
  Result<Authenticator> a = Authenticator::FromText(text, secret);
  if (!a.ok()) {
    FUZZ_CHECK(a.status().code() == StatusCode::kInvalidArgument);
    FUZZ_CHECK(!a.status().message().empty());
    return 0;
  }
  FUZZ_CHECK(a->enabled());
  FUZZ_CHECK(a->keys() >= 1);
  FUZZ_CHECK(a->keys() <= static_cast<size_t>(std::count(text.begin(), text.end(), '\n')) + 1);
  // No key in the call's metadata: refused, for any tenant asked.
  grpc::ServerContext ctx;
  Principal p;
  FUZZ_CHECK(a->Authenticate(&ctx, "", &p).error_code() == grpc::StatusCode::UNAUTHENTICATED);
  FUZZ_CHECK(a->AuthenticateAdmin(&ctx).error_code() == grpc::StatusCode::UNAUTHENTICATED);
  // Each word of the file, taken as a tenant, has a stable secret salt.
  size_t words = 0;
  for (size_t start = 0; start < text.size() && words < 16; ++words) {
    const size_t end = std::min(text.find_first_of(" \n", start), text.size());
    const std::string tenant = text.substr(start, end - start);
    const Principal q = a->PrincipalOf(tenant);
    FUZZ_CHECK(q.tenant == (tenant.empty() ? "default" : tenant));
    FUZZ_CHECK(!q.admin);
    FUZZ_CHECK(IsHexSalt(q.cache_salt));
    FUZZ_CHECK(a->PrincipalOf(tenant).cache_salt == q.cache_salt);
    start = end + 1;
  }
  return 0;
}
