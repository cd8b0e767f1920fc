#include "tools/kvtier/cli_flags.h"

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iterator>

namespace kvtier::cli {
namespace {

constexpr size_t kMaxCliTokens = 1 << 20;

std::string EnvOr(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return value ? value : fallback;
}

}  // namespace

FlagSet CliFlags() {
  FlagSet flags;
  for (const char* f :
       {"addr",     "timeout-ms", "tokens",        "keys",           "key",         "parent",
        "file",     "out",        "ttl",           "model-id",       "kv-dtype",    "block-tokens",
        "salt",     "prompt",     "max-tokens",    "temperature",    "top-p",       "top-k",
        "seed",     "tenant",     "cache-control", "request-id",     "from",        "to",
        "group-by", "format",     "api-key",       "cached-content", "expire-time", "display-name",
        "tls-ca",   "mrc-add"}) {
    flags.Value(f);
  }
  for (const char* f : {"json", "help", "no-bos", "ignore-eos", "mrc"}) flags.Bool(f);
  return flags;
}

std::optional<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

Result<ClientOptions> ConnectionOptions(const FlagSet& flags) {
  ClientOptions options;
  options.address = flags.Get("addr", EnvOr("KVTIER_ADDR", options.address));
  if (flags.Has("timeout-ms")) {
    Result<int64_t> t = ParseInt(flags.Get("timeout-ms"));
    if (!t.ok() || *t == 0) return Status::InvalidArgument("--timeout-ms needs a positive integer");
    options.timeout_ms = *t;
  }
  if (const std::string ca = flags.Get("tls-ca", EnvOr("KVTIER_TLS_CA", "")); !ca.empty()) {
    std::optional<std::string> pem = ReadFile(ca);
    if (!pem) return Status::InvalidArgument("cannot read the TLS CA file " + ca);
    options.tls_ca_pem = std::move(*pem);
  }
  options.api_key = flags.Get("api-key", EnvOr("KVTIER_API_KEY", ""));
  return options;
}

Result<std::vector<int32_t>> TokensFlag(const FlagSet& flags) {
  return ParseTokenList(flags.Get("tokens"), kMaxCliTokens);
}

Result<BlockKey> KeyFlag(const FlagSet& flags, const std::string& name) {
  std::optional<BlockKey> k = BlockKey::FromHex(flags.Get(name));
  if (!k) return Status::InvalidArgument("--" + name + " needs a key of 32 hex digits");
  return *k;
}

Result<v1::Namespace> NamespaceFlags(const FlagSet& flags) {
  v1::Namespace ns;
  ns.set_model_id(flags.Get("model-id"));
  ns.set_kv_dtype(flags.Get("kv-dtype"));
  ns.set_cache_salt(flags.Get("salt"));
  if (flags.Has("block-tokens")) {
    Result<int64_t> b = ParseInt(flags.Get("block-tokens"));
    if (!b.ok() || *b > UINT32_MAX) return Status::InvalidArgument("--block-tokens: not a count");
    ns.set_block_tokens(static_cast<uint32_t>(*b));
  }
  return ns;
}

}  // namespace kvtier::cli
