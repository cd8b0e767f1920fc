// kvtier: the command-line client of kvtierd.
//
// main parses the flags, checks the shape of the command line, opens a
// client from the connection flags and runs one function per command. A
// command builds its request from the flags (a failure there is the command
// line's: exit 2), calls the daemon (a failure there exits 1) and prints the
// reply as text, or as one JSON object with --json.
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "common/checksum.h"
#include "common/flags.h"
#include "proto/client.h"
#include "proto/status_codes.h"

namespace kvtier {
namespace {

using nlohmann::json;

constexpr size_t kMaxCliTokens = 1 << 20;

const char kUsage[] =
    R"(usage: kvtier [--addr HOST:PORT] [--json] [--timeout-ms N] <command> [flags]

commands:
  health                       exit 0 when a daemon answers
  stats                        tiers, blocks and counters
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

// --- Exit codes and output ---------------------------------------------------

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;  // the daemon failed or refused the call, or a file failed
constexpr int kExitUsage = 2;   // the command line is wrong

// How a command ends: kExitOk, or a failure to report and its exit code.
struct Exit {
  Exit() = default;
  Exit(int exit_code, std::string message, bool with_usage = false)
      : code(exit_code), error(std::move(message)), show_usage(with_usage) {}
  // A failed call or file: exit 1. Implicit, so that KVTIER_RETURN_IF_ERROR
  // and KVTIER_ASSIGN_OR_RETURN end a command with the Status they return.
  Exit(const Status& s)  // NOLINT(google-explicit-constructor)
      : Exit(s.ok() ? kExitOk : kExitFailed, s.message()) {}

  int code = kExitOk;
  std::string error;
  bool show_usage = false;  // print the usage text after the error
};

// The command line is wrong: exit 2.
Exit UsageError(std::string error, bool show_usage = false) {
  return Exit(kExitUsage, std::move(error), show_usage);
}
Exit UsageError(const Status& s) { return UsageError(s.message()); }

// Where replies and failures go. With --json: one JSON object per line on
// stdout, failures included ({"ok": false, "error": ...}); else text on
// stdout and failures on stderr.
class Output {
 public:
  explicit Output(bool json) : json_(json) {}

  bool as_json() const { return json_; }

  // A reply: `j` with --json, else `text`.
  void Print(const json& j, const std::string& text) const {
    if (json_) {
      std::cout << j.dump() << "\n";
    } else {
      std::cout << text;
    }
  }

  // Reports a failed command; returns the process's exit code.
  int Finish(const Exit& e) const {
    if (e.code == kExitOk) return kExitOk;
    if (json_) {
      std::cout << json{{"ok", false}, {"error", e.error}}.dump() << "\n";
    } else {
      std::cerr << "kvtier: " << e.error << "\n";
      if (e.show_usage) std::cerr << kUsage;
    }
    return e.code;
  }

 private:
  const bool json_;
};

// --- Flags -------------------------------------------------------------------

FlagSet CliFlags() {
  FlagSet flags;
  for (const char* f :
       {"addr",     "timeout-ms", "tokens",        "keys",           "key",         "parent",
        "file",     "out",        "ttl",           "model-id",       "kv-dtype",    "block-tokens",
        "salt",     "prompt",     "max-tokens",    "temperature",    "top-p",       "top-k",
        "seed",     "tenant",     "cache-control", "request-id",     "from",        "to",
        "group-by", "format",     "api-key",       "cached-content", "expire-time", "display-name",
        "tls-ca"}) {
    flags.Value(f);
  }
  for (const char* f : {"json", "help", "no-bos", "ignore-eos"}) flags.Bool(f);
  return flags;
}

std::string EnvOr(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return value ? value : fallback;
}

// A whole file; nullopt when it cannot be opened.
std::optional<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The connection: --addr, --timeout-ms, --tls-ca and --api-key, the unset
// ones from $KVTIER_ADDR, $KVTIER_TLS_CA and $KVTIER_API_KEY.
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

// The namespace flags; unset ones take the daemon's defaults.
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

Result<std::vector<int32_t>> TokensFlag(const FlagSet& flags) {
  return ParseTokenList(flags.Get("tokens"), kMaxCliTokens);
}

Result<BlockKey> KeyFlag(const FlagSet& flags, const std::string& name) {
  std::optional<BlockKey> k = BlockKey::FromHex(flags.Get(name));
  if (!k) return Status::InvalidArgument("--" + name + " needs a key of 32 hex digits");
  return *k;
}

// Sets exactly one of --ttl and --expire-time on a request.
template <typename Req>
Status ExpiryFlags(const FlagSet& flags, Req* req) {
  if (flags.Has("ttl") == flags.Has("expire-time")) {
    return Status::InvalidArgument("give exactly one of --ttl and --expire-time");
  }
  Result<int64_t> v = ParseInt(flags.Get(flags.Has("ttl") ? "ttl" : "expire-time"));
  if (!v.ok()) return Status::InvalidArgument("--ttl / --expire-time need an integer");
  if (flags.Has("ttl")) {
    if (*v == 0 || *v > UINT32_MAX) return Status::InvalidArgument("--ttl needs seconds > 0");
    req->set_ttl_seconds(static_cast<uint32_t>(*v));
  } else {
    req->set_expire_time_ms(*v);
  }
  return Status::Ok();
}

// "YYYY-MM-DD" (UTC midnight) or Unix ms.
Result<int64_t> DayOrMs(const std::string& text) {
  int y = 0, m = 0, d = 0;
  char tail = 0;
  if (std::sscanf(text.c_str(), "%4d-%2d-%2d%c", &y, &m, &d, &tail) == 3) {
    std::tm tm{};
    tm.tm_year = y - 1900;
    tm.tm_mon = m - 1;
    tm.tm_mday = d;
    const std::time_t t = timegm(&tm);
    if (m < 1 || m > 12 || d < 1 || d > 31 || t < 0) {
      return Status::InvalidArgument("'" + text + "' is not a day YYYY-MM-DD");
    }
    return static_cast<int64_t>(t) * 1000;
  }
  Result<int64_t> ms = ParseInt(text);
  if (!ms.ok()) return Status::InvalidArgument("'" + text + "' is neither YYYY-MM-DD nor Unix ms");
  return ms;
}

// --- Formatting --------------------------------------------------------------

std::string Hex(const std::string& key_bytes) {
  std::optional<BlockKey> k = BlockKey::FromBytes(key_bytes);
  return k ? k->ToHex() : "<bad key>";
}

// Unix ms as UTC ISO 8601, to the second.
std::string IsoTime(int64_t ms) {
  const std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

json InfoJson(const v1::BlockInfo& b) {
  json j = {{"key", Hex(b.key())}, {"size_bytes", b.size_bytes()}, {"tier", b.tier()}};
  if (b.expire_time_ms() != 0) j["expire_time_ms"] = b.expire_time_ms();
  return j;
}

json CostsJson(const google::protobuf::RepeatedPtrField<v1::TierCost>& costs) {
  json out = json::array();
  for (const v1::TierCost& c : costs) {
    json j = {{"tier", c.tier()}, {"allowed", c.allowed()}};
    if (c.allowed()) j["cost_usd"] = c.cost_usd();
    if (c.drain_time_s() > 0) j["drain_time_s"] = c.drain_time_s();
    out.push_back(j);
  }
  return out;
}

void CostsText(const google::protobuf::RepeatedPtrField<v1::TierCost>& costs, double remat_usd,
               bool remat_known, std::ostream& text) {
  char line[160];
  for (const v1::TierCost& c : costs) {
    if (c.allowed()) {
      std::snprintf(line, sizeof line, "    %-8s drain %10.3f s   cost $%.6g\n", c.tier().c_str(),
                    c.drain_time_s(), c.cost_usd());
    } else {
      std::snprintf(line, sizeof line, "    %-8s drain %10.3f s   (does not take it)\n",
                    c.tier().c_str(), c.drain_time_s());
    }
    text << line;
  }
  if (remat_known) {
    std::snprintf(line, sizeof line, "    %-8s                     cost $%.6g\n", "recompute",
                  remat_usd);
  } else {
    std::snprintf(line, sizeof line, "    %-8s                     (unknown: never dropped)\n",
                  "recompute");
  }
  text << line;
}

json CacheJson(const v1::NamedCacheInfo& c) {
  json j = {{"name", c.name()},
            {"model", c.model()},
            {"tokens", c.tokens()},
            {"create_time_ms", c.create_time_ms()},
            {"expire_time_ms", c.expire_time_ms()},
            {"ttl_seconds", c.ttl_seconds()},
            {"display_name", c.display_name()}};
  if (!c.storage_cost_usd().empty()) j["storage_cost_usd"] = c.storage_cost_usd();
  return j;
}

std::string CacheText(const v1::NamedCacheInfo& c) {
  std::string t = c.name() + "  " + std::to_string(c.tokens()) + " tokens, expires " +
                  IsoTime(c.expire_time_ms());
  if (!c.display_name().empty()) t += "  (" + c.display_name() + ")";
  if (!c.storage_cost_usd().empty()) t += "  storage $" + c.storage_cost_usd();
  return t + "\n";
}

// --- Commands ----------------------------------------------------------------

// What a command works with: the parsed command line, the client and the
// output.
struct Command {
  const FlagSet& flags;
  const std::vector<std::string>& args;  // the positional words, the command's name first
  Client& client;
  const Output& out;
};

Exit Health(const Command& c) {
  Result<v1::HealthResponse> h = c.client.Health();
  if (!h.ok()) return Exit(kExitFailed, "no daemon answers: " + h.status().message());
  std::ostringstream text;
  text << h->status() << " kvtierd " << h->version() << " at " << h->listen() << ", up "
       << h->uptime_ms() / 1000 << " s\n";
  c.out.Print({{"ok", true},
               {"status", h->status()},
               {"version", h->version()},
               {"listen", h->listen()},
               {"uptime_ms", h->uptime_ms()}},
              text.str());
  return {};
}

json StatsJson(const v1::StatsResponse& s) {
  json tiers = json::array();
  for (const v1::TierStats& t : s.tiers()) {
    tiers.push_back({{"name", t.name()},
                     {"capacity_bytes", t.capacity_bytes()},
                     {"used_bytes", t.used_bytes()},
                     {"allocated_bytes", t.allocated_bytes()},
                     {"blocks", t.blocks()},
                     {"read_bytes_per_s", t.read_bytes_per_s()},
                     {"write_bytes_per_s", t.write_bytes_per_s()},
                     {"persistent", t.persistent()},
                     {"corruption_errors", t.corruption_errors()},
                     {"io_errors", t.io_errors()},
                     {"max_block_bytes", t.max_block_bytes()},
                     {"policy", t.policy()},
                     {"cost_per_s", t.cost_per_s()},
                     {"drain_time_s", t.drain_time_s()}});
  }
  json j = {{"ok", true},
            {"tiers", tiers},
            {"indexed_blocks", s.indexed_blocks()},
            {"lookups", s.lookups()},
            {"lookup_blocks", s.lookup_blocks()},
            {"lookup_hit_blocks", s.lookup_hit_blocks()},
            {"reads", s.reads()},
            {"read_hits", s.read_hits()},
            {"read_misses", s.read_misses()},
            {"inserts", s.inserts()},
            {"refreshes", s.refreshes()},
            {"insert_bytes", s.insert_bytes()},
            {"insert_failures", s.insert_failures()},
            {"demotions", s.demotions()},
            {"demotion_failures", s.demotion_failures()},
            {"drops", s.drops()},
            {"expired", s.expired()},
            {"placed", s.placed()},
            {"promotions", s.promotions()},
            {"promotion_skips", s.promotion_skips()},
            {"remat_drops", s.remat_drops()},
            {"corruption_misses", s.corruption_misses()},
            {"default_block_tokens", s.default_block_tokens()},
            {"default_namespace", s.default_namespace()}};
  if (s.has_engine()) {
    const v1::EngineStats& e = s.engine();
    j["engine"] = {{"model", e.model()},
                   {"params", e.params()},
                   {"steps", e.steps()},
                   {"requests", e.requests()},
                   {"finished", e.finished()},
                   {"preemptions", e.preemptions()},
                   {"prefill_tokens", e.prefill_tokens()},
                   {"decode_tokens", e.decode_tokens()},
                   {"cached_tokens", e.cached_tokens()},
                   {"published_blocks", e.published_blocks()},
                   {"publish_failures", e.publish_failures()},
                   {"running", e.running()},
                   {"waiting", e.waiting()},
                   {"free_pages", e.free_pages()},
                   {"total_pages", e.total_pages()}};
  }
  return j;
}

std::string StatsText(const v1::StatsResponse& s) {
  std::ostringstream text;
  text << "tiers:\n";
  for (const v1::TierStats& t : s.tiers()) {
    text << "  " << t.name() << " (" << t.policy() << ", drains in " << t.drain_time_s()
         << " s): " << t.blocks() << " blocks, " << t.used_bytes() << " / " << t.capacity_bytes()
         << " bytes used, read " << t.read_bytes_per_s() / 1e9 << " GB/s, write "
         << t.write_bytes_per_s() / 1e9 << " GB/s (measured at start), " << t.corruption_errors()
         << " corruption errors, " << t.io_errors() << " I/O errors\n";
  }
  text << "indexed blocks: " << s.indexed_blocks() << "\nlookups: " << s.lookups() << " ("
       << s.lookup_hit_blocks() << " of " << s.lookup_blocks()
       << " blocks hit)\nreads: " << s.reads() << " (" << s.read_hits() << " hits, "
       << s.read_misses() << " misses)\ninserts: " << s.inserts() << " (+" << s.refreshes()
       << " refreshes, " << s.insert_bytes() << " bytes, " << s.insert_failures()
       << " refused)\nplacement: " << s.placed() << " placed, " << s.promotions() << " promoted, "
       << s.demotions() << " demoted, " << s.remat_drops() << " dropped for recompute, "
       << s.drops() << " dropped with no tier below, " << s.expired()
       << " expired\ndefault namespace: " << s.default_namespace() << "\n";
  if (s.has_engine()) {
    const v1::EngineStats& e = s.engine();
    text << "engine: " << e.model() << ", " << e.params() << " params, " << e.requests()
         << " requests (" << e.finished() << " finished, " << e.running() << " running, "
         << e.waiting() << " waiting), " << e.prefill_tokens() << " prefill + " << e.decode_tokens()
         << " decode tokens, " << e.cached_tokens() << " tokens from the cache, "
         << e.published_blocks() << " blocks published, " << e.free_pages() << " / "
         << e.total_pages() << " KV pages free\n";
  }
  return text.str();
}

Exit Stats(const Command& c) {
  KVTIER_ASSIGN_OR_RETURN(const v1::StatsResponse s, c.client.Stats());
  c.out.Print(StatsJson(s), StatsText(s));
  return {};
}

// --tokens into a lookup that returns the keys of its full blocks.
Status AddTokens(const FlagSet& flags, v1::LookupRequest* req) {
  KVTIER_ASSIGN_OR_RETURN(const std::vector<int32_t> tokens, TokensFlag(flags));
  req->mutable_token_ids()->Add(tokens.begin(), tokens.end());
  req->set_return_keys(true);
  return Status::Ok();
}

Result<v1::LookupRequest> LookupRequestFromFlags(const FlagSet& flags) {
  v1::LookupRequest req;
  KVTIER_ASSIGN_OR_RETURN(*req.mutable_namespace_(), NamespaceFlags(flags));
  if (flags.Has("tokens") == flags.Has("keys")) {
    return Status::InvalidArgument("give --tokens or --keys");
  }
  if (flags.Has("tokens")) {
    KVTIER_RETURN_IF_ERROR(AddTokens(flags, &req));
    return req;
  }
  std::stringstream keys(flags.Get("keys"));
  for (std::string hex; std::getline(keys, hex, ',');) {
    std::optional<BlockKey> k = BlockKey::FromHex(hex);
    if (!k) return Status::InvalidArgument("'" + hex + "' is not a key of 32 hex digits");
    req.add_keys(k->ToByteString());
  }
  return req;
}

Exit Lookup(const Command& c) {
  Result<v1::LookupRequest> req = LookupRequestFromFlags(c.flags);
  if (!req.ok()) return UsageError(req.status());
  KVTIER_ASSIGN_OR_RETURN(const v1::LookupResponse r, c.client.Lookup(*req));
  json hits = json::array();
  std::ostringstream text;
  text << "hit " << r.hit_blocks() << " of " << r.query_blocks() << " blocks";
  if (c.flags.Has("tokens")) text << " (" << r.hit_tokens() << " tokens)";
  text << "\n";
  for (const v1::BlockInfo& b : r.hits()) {
    hits.push_back(InfoJson(b));
    text << "  " << Hex(b.key()) << "  " << b.size_bytes() << " bytes in " << b.tier() << "\n";
  }
  json keys = json::array();
  for (const std::string& k : r.keys()) keys.push_back(Hex(k));
  c.out.Print({{"ok", true},
               {"query_blocks", r.query_blocks()},
               {"hit_blocks", r.hit_blocks()},
               {"hit_tokens", r.hit_tokens()},
               {"block_tokens", r.block_tokens()},
               {"hits", hits},
               {"keys", keys}},
              text.str());
  return {};
}

struct PutRequest {
  v1::PutHeader header;
  std::string payload;
};

// The block a put names: the last full block of --tokens, or --key (with
// --parent).
Status PutTarget(const FlagSet& flags, v1::PutHeader* h) {
  if (flags.Has("tokens") == flags.Has("key"))
    return Status::InvalidArgument("give --tokens or --key");
  if (flags.Has("tokens")) {
    KVTIER_ASSIGN_OR_RETURN(const std::vector<int32_t> tokens, TokensFlag(flags));
    h->mutable_token_ids()->Add(tokens.begin(), tokens.end());
    return Status::Ok();
  }
  KVTIER_ASSIGN_OR_RETURN(const BlockKey key, KeyFlag(flags, "key"));
  h->set_key(key.ToByteString());
  if (flags.Has("parent")) {
    KVTIER_ASSIGN_OR_RETURN(const BlockKey parent, KeyFlag(flags, "parent"));
    h->set_parent_key(parent.ToByteString());
  }
  return Status::Ok();
}

Result<PutRequest> PutRequestFromFlags(const FlagSet& flags) {
  if (!flags.Has("file")) return Status::InvalidArgument("put needs --file");
  PutRequest req;
  std::optional<std::string> payload = ReadFile(flags.Get("file"));
  if (!payload) return Status::InvalidArgument("cannot read " + flags.Get("file"));
  req.payload = std::move(*payload);
  KVTIER_ASSIGN_OR_RETURN(*req.header.mutable_namespace_(), NamespaceFlags(flags));
  KVTIER_RETURN_IF_ERROR(PutTarget(flags, &req.header));
  if (flags.Has("ttl")) {
    Result<int64_t> ttl = ParseInt(flags.Get("ttl"));
    if (!ttl.ok() || *ttl > UINT32_MAX) return Status::InvalidArgument("--ttl needs seconds");
    req.header.set_ttl_seconds(static_cast<uint32_t>(*ttl));
  }
  return req;
}

Exit Put(const Command& c) {
  Result<PutRequest> req = PutRequestFromFlags(c.flags);
  if (!req.ok()) return UsageError(req.status());
  KVTIER_ASSIGN_OR_RETURN(
      const v1::PutResponse r,
      c.client.Put(req->header,
                   {reinterpret_cast<const std::byte*>(req->payload.data()), req->payload.size()}));
  json j = InfoJson(r.block());
  j["ok"] = true;
  c.out.Print(j, "stored " + Hex(r.block().key()) + " (" + std::to_string(r.block().size_bytes()) +
                     " bytes) in " + r.block().tier() + "\n");
  return {};
}

// A get names its block by --key, or as the last full block of --tokens,
// whose key a lookup finds.
struct GetRequest {
  std::optional<BlockKey> key;  // unset: look `lookup` up first
  v1::LookupRequest lookup;
  v1::Namespace ns;
};

Result<GetRequest> GetRequestFromFlags(const FlagSet& flags) {
  if (flags.Has("tokens") == flags.Has("key")) {
    return Status::InvalidArgument("give --key or --tokens");
  }
  GetRequest req;
  if (flags.Has("key")) {
    KVTIER_ASSIGN_OR_RETURN(req.key, KeyFlag(flags, "key"));
    KVTIER_ASSIGN_OR_RETURN(req.ns, NamespaceFlags(flags));
  } else {
    KVTIER_ASSIGN_OR_RETURN(req.ns, NamespaceFlags(flags));
    *req.lookup.mutable_namespace_() = req.ns;
    KVTIER_RETURN_IF_ERROR(AddTokens(flags, &req.lookup));
  }
  return req;
}

// The payload to --out (and a note of it), or to stdout (with --json, only
// the block's info).
Exit WriteBlock(const Command& c, const BlockKey& key, const FetchedBlock& b) {
  json j = InfoJson(b.info);
  j["ok"] = true;
  if (c.flags.Has("out")) {
    const std::string path = c.flags.Get("out");
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(b.payload.data(), static_cast<std::streamsize>(b.payload.size()));
    if (!out.flush()) return Exit(kExitFailed, "cannot write " + path);
    j["out"] = path;
    c.out.Print(j, "wrote " + std::to_string(b.payload.size()) + " bytes of " + key.ToHex() +
                       " to " + path + "\n");
  } else if (c.out.as_json()) {
    c.out.Print(j, "");
  } else {
    std::fwrite(b.payload.data(), 1, b.payload.size(), stdout);
  }
  return {};
}

Exit Get(const Command& c) {
  Result<GetRequest> req = GetRequestFromFlags(c.flags);
  if (!req.ok()) return UsageError(req.status());
  if (!req->key) {
    KVTIER_ASSIGN_OR_RETURN(const v1::LookupResponse r, c.client.Lookup(req->lookup));
    if (r.keys().empty()) return UsageError("the token list holds no full block");
    req->key = *BlockKey::FromBytes(r.keys(r.keys_size() - 1));
  }
  KVTIER_ASSIGN_OR_RETURN(const FetchedBlock b, c.client.Get(*req->key, req->ns));
  return WriteBlock(c, *req->key, b);
}

Exit Delete(const Command& c) {
  Result<BlockKey> key = KeyFlag(c.flags, "key");
  if (!key.ok()) return UsageError(key.status());
  Result<v1::Namespace> ns = NamespaceFlags(c.flags);
  if (!ns.ok()) return UsageError(ns.status());
  KVTIER_RETURN_IF_ERROR(c.client.Delete(*key, *ns));
  c.out.Print({{"ok", true}, {"key", key->ToHex()}}, "deleted " + key->ToHex() + "\n");
  return {};
}

// --tokens with --cache-control END:TTL,...: a segment ends at each END
// (tokens), marked with TTL; the rest of the prompt follows unmarked.
Status AddTokenSegments(const std::vector<int32_t>& ids, const std::string& cache_control,
                        v1::GenerateRequest* req) {
  size_t begin = 0;
  std::stringstream items(cache_control);
  for (std::string item; std::getline(items, item, ',');) {
    const size_t colon = item.find(':');
    Result<int64_t> end = ParseInt(item.substr(0, colon));
    if (colon == std::string::npos || !end.ok() || static_cast<size_t>(*end) <= begin ||
        static_cast<size_t>(*end) > ids.size()) {
      return Status::InvalidArgument(
          "--cache-control with --tokens takes END:TTL,... with END increasing "
          "token counts within the prompt, e.g. 3000:1h,5000:5m");
    }
    v1::Segment* seg = req->add_segments();
    seg->mutable_token_ids()->Add(ids.begin() + begin, ids.begin() + *end);
    seg->mutable_cache_control()->set_ttl(item.substr(colon + 1));
    begin = static_cast<size_t>(*end);
  }
  if (begin < ids.size()) {
    req->add_segments()->mutable_token_ids()->Add(ids.begin() + begin, ids.end());
  }
  return Status::Ok();
}

// --prompt or --tokens, marked cacheable by --cache-control.
Status GeneratePrompt(const FlagSet& flags, v1::GenerateRequest* req) {
  if (flags.Has("prompt") == flags.Has("tokens")) {
    return Status::InvalidArgument("generate needs exactly one of --prompt and --tokens");
  }
  const std::string cache_control = flags.Get("cache-control");
  if (flags.Has("prompt") && cache_control.empty()) {
    req->set_prompt(flags.Get("prompt"));
  } else if (flags.Has("prompt")) {
    // The whole text, cacheable for one TTL.
    v1::Segment* seg = req->add_segments();
    seg->set_text(flags.Get("prompt"));
    seg->mutable_cache_control()->set_ttl(cache_control);
  } else {
    KVTIER_ASSIGN_OR_RETURN(const std::vector<int32_t> ids, TokensFlag(flags));
    if (!cache_control.empty()) return AddTokenSegments(ids, cache_control, req);
    for (int32_t t : ids) req->add_token_ids(t);
  }
  return Status::Ok();
}

// --max-tokens, --top-k, --seed, --temperature and --top-p.
Status SamplingFlags(const FlagSet& flags, v1::GenerateRequest* req) {
  for (auto [flag, setter] :
       {std::pair<const char*, std::function<void(int64_t)>>{
            "max-tokens", [&](int64_t v) { req->set_max_tokens(static_cast<uint32_t>(v)); }},
        {"top-k", [&](int64_t v) { req->set_top_k(static_cast<uint32_t>(v)); }},
        {"seed", [&](int64_t v) { req->set_seed(static_cast<uint64_t>(v)); }}}) {
    if (!flags.Has(flag)) continue;
    Result<int64_t> v = ParseInt(flags.Get(flag));
    if (!v.ok() || *v < 0 || *v > UINT32_MAX) {
      return Status::InvalidArgument(std::string("--") + flag + " needs a non-negative integer");
    }
    setter(*v);
  }
  for (auto [flag, setter] : {std::pair<const char*, std::function<void(float)>>{
                                  "temperature", [&](float v) { req->set_temperature(v); }},
                              {"top-p", [&](float v) { req->set_top_p(v); }}}) {
    if (!flags.Has(flag)) continue;
    char* end = nullptr;
    const std::string text = flags.Get(flag);
    const float v = std::strtof(text.c_str(), &end);
    if (text.empty() || *end != '\0') {
      return Status::InvalidArgument(std::string("--") + flag + " needs a number");
    }
    setter(v);
  }
  return Status::Ok();
}

Result<v1::GenerateRequest> GenerateRequestFromFlags(const FlagSet& flags) {
  v1::GenerateRequest req;
  KVTIER_RETURN_IF_ERROR(GeneratePrompt(flags, &req));
  req.set_request_id(flags.Get("request-id"));
  req.set_cached_content(flags.Get("cached-content"));
  KVTIER_RETURN_IF_ERROR(SamplingFlags(flags, &req));
  req.set_tenant(flags.Get("tenant"));
  req.set_no_bos(flags.Has("no-bos"));
  req.set_ignore_eos(flags.Has("ignore-eos"));
  return req;
}

json GenerateJson(const v1::GenerateResponse& r) {
  json j = {{"ok", true},
            {"text", r.text()},
            {"token_ids", std::vector<int32_t>(r.token_ids().begin(), r.token_ids().end())},
            {"prompt_tokens", r.prompt_tokens()},
            {"cached_tokens", r.cached_tokens()},
            {"cache_write_blocks", r.cache_write_blocks()},
            {"finish_reason", r.finish_reason()},
            {"ttft_ms", r.ttft_ms()},
            {"total_ms", r.total_ms()},
            {"model", r.model()},
            {"request_id", r.request_id()}};
  const v1::Usage& u = r.usage();
  j["usage"] = {{"input_tokens", u.input_tokens()},
                {"cache_creation_input_tokens", u.cache_creation_input_tokens()},
                {"cache_creation",
                 {{"ephemeral_5m_input_tokens", u.cache_creation().ephemeral_5m_input_tokens()},
                  {"ephemeral_1h_input_tokens", u.cache_creation().ephemeral_1h_input_tokens()}}},
                {"cache_read_input_tokens", u.cache_read_input_tokens()},
                {"output_tokens", u.output_tokens()}};
  return j;
}

Exit Generate(const Command& c) {
  Result<v1::GenerateRequest> req = GenerateRequestFromFlags(c.flags);
  if (!req.ok()) return UsageError(req.status());
  KVTIER_ASSIGN_OR_RETURN(const v1::GenerateResponse r, c.client.Generate(*req));
  c.out.Print(GenerateJson(r), r.text() + "\n");
  if (!c.out.as_json()) {
    // The text alone goes to stdout (pipeable); the usage to stderr.
    const v1::Usage& u = r.usage();
    std::cerr << "usage: input " << u.input_tokens() << ", cache write "
              << u.cache_creation_input_tokens() << " (5m "
              << u.cache_creation().ephemeral_5m_input_tokens() << ", 1h "
              << u.cache_creation().ephemeral_1h_input_tokens() << "), cache read "
              << u.cache_read_input_tokens() << ", output " << u.output_tokens() << "\n";
  }
  return {};
}

json ExplainJson(const v1::ExplainResponse& x) {
  json j = {{"ok", true},
            {"block", InfoJson(x.block())},
            {"decision", x.decision()},
            {"decided_at_ms", x.decided_at_ms()},
            {"decision_idle_s", x.decision_idle_s()},
            {"decision_costs", CostsJson(x.decision_costs())},
            {"ttl_ms", x.ttl_ms()},
            {"expected_idle_s", x.expected_idle_s()},
            {"costs_now", CostsJson(x.costs_now())},
            {"pins", x.pins()},
            {"cached_children", x.cached_children()},
            {"tokens", x.tokens()},
            {"last_access_ms", x.last_access_ms()}};
  if (!x.from_tier().empty()) j["from_tier"] = x.from_tier();
  if (x.remat_known()) j["remat_cost_usd"] = x.remat_cost_usd();
  if (x.has_reuse_estimate_s()) j["reuse_estimate_s"] = x.reuse_estimate_s();
  return j;
}

std::string ExplainText(const BlockKey& key, const v1::ExplainResponse& x) {
  std::ostringstream text;
  text << "block " << key.ToHex() << ": " << x.block().size_bytes() << " bytes in "
       << x.block().tier() << "\n";
  text << "  last decision: " << x.decision();
  if (!x.from_tier().empty()) text << " from " << x.from_tier();
  text << " at " << IsoTime(x.decided_at_ms()) << ", expecting it idle " << x.decision_idle_s()
       << " s; costs compared:\n";
  CostsText(x.decision_costs(), x.remat_cost_usd(), x.remat_known(), text);
  text << "  ttl: "
       << (x.ttl_ms() > 0 ? std::to_string(x.ttl_ms() / 1000) + " s, refreshed by reads"
                          : std::string("none (fixed expiry)"));
  if (x.block().expire_time_ms() != 0) {
    text << "; expires at " << x.block().expire_time_ms() << " ms";
  }
  text << "\n  reuse estimate of its namespace: "
       << (x.has_reuse_estimate_s() ? std::to_string(x.reuse_estimate_s()) + " s"
                                    : std::string("none yet"))
       << "; expected idle now " << x.expected_idle_s() << " s; costs now:\n";
  CostsText(x.costs_now(), x.remat_cost_usd(), x.remat_known(), text);
  text << "  pins " << x.pins() << ", cached children " << x.cached_children() << "\n";
  return text.str();
}

// `explain KEY` or `explain --key KEY`.
Exit Explain(const Command& c) {
  const std::string hex = c.args.size() == 2 ? c.args[1] : c.flags.Get("key");
  std::optional<BlockKey> key = BlockKey::FromHex(hex);
  if (!key) return UsageError("explain needs a key of 32 hex digits");
  Result<v1::Namespace> ns = NamespaceFlags(c.flags);
  if (!ns.ok()) return UsageError(ns.status());
  KVTIER_ASSIGN_OR_RETURN(const v1::ExplainResponse x,
                          c.client.Explain(*key, *ns, c.flags.Get("tenant")));
  c.out.Print(ExplainJson(x), ExplainText(*key, x));
  return {};
}

Result<v1::BillingReportRequest> BillingRequestFromFlags(const FlagSet& flags, bool json) {
  v1::BillingReportRequest req;
  req.set_tenant(flags.Get("tenant"));
  if (req.tenant().empty()) return Status::InvalidArgument("billing report needs --tenant");
  for (auto [flag, setter] : {std::pair<const char*, std::function<void(int64_t)>>{
                                  "from", [&](int64_t v) { req.set_from_ms(v); }},
                              {"to", [&](int64_t v) { req.set_to_ms(v); }}}) {
    if (!flags.Has(flag)) continue;
    Result<int64_t> v = DayOrMs(flags.Get(flag));
    if (!v.ok()) {
      return Status::InvalidArgument("--" + std::string(flag) + ": " + v.status().message());
    }
    setter(*v);
  }
  req.set_group_by(flags.Get("group-by", "model"));
  req.set_format(json ? "json" : flags.Get("format", "table"));
  return req;
}

// Prints the report as the daemon rendered it (table, CSV or JSON).
Exit BillingReport(const Command& c) {
  Result<v1::BillingReportRequest> req = BillingRequestFromFlags(c.flags, c.out.as_json());
  if (!req.ok()) return UsageError(req.status());
  KVTIER_ASSIGN_OR_RETURN(const v1::BillingReportResponse r, c.client.BillingReport(*req));
  std::cout << r.rendered();
  if (!r.rendered().empty() && r.rendered().back() != '\n') std::cout << "\n";
  return {};
}

// --- cache SUBCOMMAND --------------------------------------------------------

// The named cache a subcommand returned.
Exit PrintCache(const Command& c, const v1::NamedCacheInfo& info) {
  json j = CacheJson(info);
  j["ok"] = true;
  c.out.Print(j, CacheText(info));
  return {};
}

// The cache NAME of the caller's --tenant.
v1::CacheRef CacheRefOf(const Command& c) {
  v1::CacheRef ref;
  ref.set_tenant(c.flags.Get("tenant"));
  ref.set_name(c.args[2]);
  return ref;
}

Result<v1::CreateCacheRequest> CreateCacheRequestFromFlags(const FlagSet& flags) {
  v1::CreateCacheRequest req;
  req.set_tenant(flags.Get("tenant"));
  req.set_display_name(flags.Get("display-name"));
  if (flags.Has("prompt") == flags.Has("tokens")) {
    return Status::InvalidArgument("cache create needs exactly one of --prompt and --tokens");
  }
  if (flags.Has("prompt")) {
    req.set_text(flags.Get("prompt"));
  } else {
    KVTIER_ASSIGN_OR_RETURN(const std::vector<int32_t> ids, TokensFlag(flags));
    req.mutable_token_ids()->Add(ids.begin(), ids.end());
  }
  KVTIER_RETURN_IF_ERROR(ExpiryFlags(flags, &req));
  return req;
}

Exit CacheCreate(const Command& c) {
  Result<v1::CreateCacheRequest> req = CreateCacheRequestFromFlags(c.flags);
  if (!req.ok()) return UsageError(req.status());
  v1::NamedCacheInfo info;
  KVTIER_RETURN_IF_ERROR(FromGrpcStatus(
      c.client.context_cache().CreateCache(c.client.NewContext().get(), *req, &info)));
  return PrintCache(c, info);
}

Exit CacheGet(const Command& c) {
  v1::NamedCacheInfo info;
  KVTIER_RETURN_IF_ERROR(FromGrpcStatus(
      c.client.context_cache().GetCache(c.client.NewContext().get(), CacheRefOf(c), &info)));
  return PrintCache(c, info);
}

Exit CacheUpdate(const Command& c) {
  v1::UpdateCacheRequest req;
  req.set_tenant(c.flags.Get("tenant"));
  req.set_name(c.args[2]);
  if (Status s = ExpiryFlags(c.flags, &req); !s.ok()) return UsageError(s);
  v1::NamedCacheInfo info;
  KVTIER_RETURN_IF_ERROR(FromGrpcStatus(
      c.client.context_cache().UpdateCache(c.client.NewContext().get(), req, &info)));
  return PrintCache(c, info);
}

Exit CacheDelete(const Command& c) {
  v1::DeleteCacheResponse r;
  KVTIER_RETURN_IF_ERROR(FromGrpcStatus(
      c.client.context_cache().DeleteCache(c.client.NewContext().get(), CacheRefOf(c), &r)));
  c.out.Print({{"ok", true}, {"name", c.args[2]}}, "deleted " + c.args[2] + "\n");
  return {};
}

Exit CacheList(const Command& c) {
  v1::ListCachesRequest req;
  req.set_tenant(c.flags.Get("tenant"));
  v1::ListCachesResponse list;
  KVTIER_RETURN_IF_ERROR(
      FromGrpcStatus(c.client.context_cache().ListCaches(c.client.NewContext().get(), req, &list)));
  json caches = json::array();
  std::string text;
  for (const v1::NamedCacheInfo& info : list.caches()) {
    caches.push_back(CacheJson(info));
    text += CacheText(info);
  }
  c.out.Print({{"ok", true}, {"caches", caches}}, text.empty() ? "no named caches\n" : text);
  return {};
}

struct CacheSubcommand {
  const char* name;
  size_t args;  // positional words, "cache" and the subcommand's name included
  Exit (*run)(const Command&);
};

constexpr CacheSubcommand kCacheSubcommands[] = {{"create", 2, CacheCreate},
                                                 {"get", 3, CacheGet},
                                                 {"delete", 3, CacheDelete},
                                                 {"update", 3, CacheUpdate},
                                                 {"list", 2, CacheList}};

Exit Cache(const Command& c) {
  for (const CacheSubcommand& sub : kCacheSubcommands) {
    if (c.args.size() == sub.args && c.args[1] == sub.name) return sub.run(c);
  }
  return UsageError("cache takes: create, get NAME, list, update NAME, delete NAME", true);
}

// --- main --------------------------------------------------------------------

struct CommandSpec {
  const char* name;
  Exit (*run)(const Command&);
};

constexpr CommandSpec kCommands[] = {
    {"health", Health},     {"stats", Stats},     {"lookup", Lookup},
    {"put", Put},           {"get", Get},         {"delete", Delete},
    {"generate", Generate}, {"explain", Explain}, {"billing", BillingReport},
    {"cache", Cache}};

// One command word, except `explain KEY`, `billing report` and
// `cache SUBCOMMAND [NAME]`, whose words their commands check.
Exit CheckCommandWords(const std::vector<std::string>& args) {
  const std::string command = args.empty() ? "" : args[0];
  if (command == "billing" && (args.size() != 2 || args[1] != "report")) {
    return UsageError("billing has one subcommand: billing report", true);
  }
  const bool more_words = (command == "explain" && args.size() == 2) || command == "billing" ||
                          (command == "cache" && args.size() >= 2);
  if (args.size() != 1 && !more_words) return UsageError("give exactly one command", true);
  return {};
}

Exit RunCommand(const FlagSet& flags, const Output& out) {
  const std::vector<std::string>& args = flags.positional();
  if (Exit e = CheckCommandWords(args); e.code != kExitOk) return e;
  Result<ClientOptions> options = ConnectionOptions(flags);
  if (!options.ok()) return UsageError(options.status());
  Client client(*options);
  for (const CommandSpec& command : kCommands) {
    if (args[0] == command.name) return command.run(Command{flags, args, client, out});
  }
  return UsageError("unknown command '" + args[0] + "'", true);
}

int Main(int argc, char** argv) {
  FlagSet flags = CliFlags();
  if (Status s = flags.Parse(std::vector<std::string>(argv + 1, argv + argc)); !s.ok()) {
    return Output(/*json=*/false).Finish(UsageError(s.message(), /*show_usage=*/true));
  }
  if (flags.Has("help")) {
    std::cout << kUsage;
    return kExitOk;
  }
  const Output out(flags.Has("json"));
  return out.Finish(RunCommand(flags, out));
}

}  // namespace
}  // namespace kvtier

int main(int argc, char** argv) { return kvtier::Main(argc, argv); }
