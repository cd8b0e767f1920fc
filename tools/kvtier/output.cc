#include "tools/kvtier/output.h"

#include <ctime>
#include <iostream>

namespace kvtier::cli {

const char kUsage[] =
    R"(usage: kvtier [--addr HOST:PORT] [--json] [--timeout-ms N] <command> [flags]

commands:
  health                       exit 0 when a daemon answers
  stats                        tiers, blocks and counters
  stats --mrc [--mrc-add SIZE,...]
                               the estimated LRU miss-ratio curve of the block uses, and
                               each tier's hit ratio (with the tiers above it) as it is,
                               with SIZE more (default 1G; K, M, G, T) and doubled
  lookup --tokens LIST         longest cached prefix of a prompt (or --keys HEX,HEX...)
  put    --tokens LIST --file F   store F as the last full block of the token prefix
  put    --key HEX [--parent HEX] --file F   store F under an explicit key
  get    --key HEX | --tokens LIST  [--out F]   fetch a block (to stdout without --out)
  delete --key HEX             remove a block
  cache create (--tokens LIST | --prompt TEXT) (--ttl SECONDS | --expire-time MS)
               [--display-name NAME]   a named cache (kept readable until it expires)
  cache get NAME | cache list | cache delete NAME
  cache update NAME (--ttl SECONDS | --expire-time MS)
  billing report --tenant T [--from DAY|MS] [--to DAY|MS] [--group-by model|day]
                 [--format table|csv|json]
                               requests, tokens by kind, cost with and without caching,
                               savings and hit ratio (DAY: YYYY-MM-DD, UTC; --to exclusive,
                               default now; --json means --format json)
  explain KEY | --key HEX      where a block is, why (the costs its placement compared),
                               its TTL and its namespace's reuse estimate
  generate --prompt TEXT | --tokens LIST  [--max-tokens N] [--temperature T]
           [--top-p P] [--top-k K] [--seed N] [--tenant NAME] [--no-bos] [--ignore-eos]
           [--cache-control TTL (with --prompt) | END:TTL,... (with --tokens)]
           [--request-id ID] [--cached-content NAME]
                               run a prompt through the daemon's engine; prints the text
                               and the usage (cache reads and writes); TTL is 5m or 1h

token LIST: comma-separated ids and ranges, e.g. 1..64 or 5,9,100..163
namespace flags (lookup, put, get, delete, explain): --model-id ID --kv-dtype f32|f16|bf16
  --block-tokens N --salt S   (unset ones take the daemon's defaults). A block key is
  the caller's own: it names a block only with the same tenant and namespace flags.
  explain takes --tenant NAME for an admin explaining another tenant's key.
put flags: --ttl SECONDS (default: the daemon's)
--addr defaults to $KVTIER_ADDR, else 127.0.0.1:50051. --api-key (default $KVTIER_API_KEY)
is sent with every call when kvtierd runs with --api-keys. --tls-ca FILE (default
$KVTIER_TLS_CA): connect over TLS, trusting the PEM certificates in FILE.
)";

std::string IsoTime(int64_t ms) {
  const std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

Exit UsageError(std::string error, bool show_usage) {
  return Exit(kExitUsage, std::move(error), show_usage);
}

Exit UsageError(const Status& s) { return UsageError(s.message()); }

void Output::Print(const nlohmann::json& j, const std::string& text) const {
  if (json_) {
    std::cout << j.dump() << "\n";
  } else {
    std::cout << text;
  }
}

int Output::Finish(const Exit& e) const {
  if (e.code == kExitOk) return kExitOk;
  if (json_) {
    std::cout << nlohmann::json{{"ok", false}, {"error", e.error}}.dump() << "\n";
  } else {
    std::cerr << "kvtier: " << e.error << "\n";
    if (e.show_usage) std::cerr << kUsage;
  }
  return e.code;
}

}  // namespace kvtier::cli
