// kvtier: the command-line client of kvtierd.
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/checksum.h"
#include "proto/client.h"
#include "proto/status_codes.h"
#include "common/flags.h"

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

std::string Hex(const std::string& key_bytes) {
  std::optional<BlockKey> k = BlockKey::FromBytes(key_bytes);
  return k ? k->ToHex() : "<bad key>";
}

json InfoJson(const v1::BlockInfo& b) {
  json j = {{"key", Hex(b.key())}, {"size_bytes", b.size_bytes()}, {"tier", b.tier()}};
  if (b.expire_time_ms() != 0) j["expire_time_ms"] = b.expire_time_ms();
  return j;
}

class Cli {
 public:
  int Run(int argc, char** argv) {
    FlagSet flags;
    for (const char* f : {"addr",          "timeout-ms",   "tokens",     "keys",
                          "key",           "parent",       "file",       "out",
                          "ttl",           "model-id",     "kv-dtype",   "block-tokens",
                          "salt",          "prompt",       "max-tokens", "temperature",
                          "top-p",         "top-k",        "seed",       "tenant",
                          "cache-control", "request-id",   "from",       "to",
                          "group-by",      "format",       "api-key",    "cached-content",
                          "expire-time",   "display-name", "tls-ca"}) {
      flags.Value(f);
    }
    flags.Bool("json");
    flags.Bool("help");
    flags.Bool("no-bos");
    flags.Bool("ignore-eos");
    if (Status s = flags.Parse(std::vector<std::string>(argv + 1, argv + argc)); !s.ok()) {
      return Fail(s.message(), 2, /*usage=*/true);
    }
    json_ = flags.Has("json");
    if (flags.Has("help")) {
      std::cout << kUsage;
      return 0;
    }
    const size_t args = flags.positional().size();
    const bool explain_key = args == 2 && flags.positional()[0] == "explain";
    const bool billing = args >= 1 && flags.positional()[0] == "billing";
    const bool cache = args >= 2 && flags.positional()[0] == "cache";
    if (billing && (args != 2 || flags.positional()[1] != "report")) {
      return Fail("billing has one subcommand: billing report", 2, true);
    }
    if (args != 1 && !explain_key && !billing && !cache) {
      return Fail("give exactly one command", 2, true);
    }
    const char* env_addr = std::getenv("KVTIER_ADDR");
    ClientOptions copts;
    copts.address = flags.Get("addr", env_addr ? env_addr : copts.address);
    if (flags.Has("timeout-ms")) {
      Result<int64_t> t = ParseInt(flags.Get("timeout-ms"));
      if (!t.ok() || *t == 0) return Fail("--timeout-ms needs a positive integer", 2);
      copts.timeout_ms = *t;
    }
    const char* env_ca = std::getenv("KVTIER_TLS_CA");
    if (const std::string ca = flags.Get("tls-ca", env_ca ? env_ca : ""); !ca.empty()) {
      std::ifstream in(ca);
      if (!in) return Fail("cannot read the TLS CA file " + ca, 2);
      std::stringstream pem;
      pem << in.rdbuf();
      copts.tls_ca_pem = pem.str();
    }
    const char* env_key = std::getenv("KVTIER_API_KEY");
    copts.api_key = flags.Get("api-key", env_key ? env_key : "");
    client_ = std::make_unique<Client>(copts);
    flags_ = &flags;
    const std::string& cmd = flags.positional()[0];
    if (cmd == "health") return Health();
    if (cmd == "stats") return Stats();
    if (cmd == "lookup") return Lookup();
    if (cmd == "put") return Put();
    if (cmd == "get") return Get();
    if (cmd == "delete") return Delete();
    if (cmd == "generate") return Generate();
    if (cmd == "explain") return Explain(explain_key ? flags.positional()[1] : flags.Get("key"));
    if (cmd == "billing") return BillingReport();
    if (cmd == "cache") return Cache(flags.positional());
    return Fail("unknown command '" + cmd + "'", 2, true);
  }

 private:
  int Fail(const std::string& msg, int code, bool usage = false) {
    if (json_) {
      std::cout << json{{"ok", false}, {"error", msg}}.dump() << "\n";
    } else {
      std::cerr << "kvtier: " << msg << "\n";
      if (usage) std::cerr << kUsage;
    }
    return code;
  }
  int Fail(const Status& s) { return Fail(s.message(), 1); }

  void Print(const json& j, const std::string& text) {
    if (json_) {
      std::cout << j.dump() << "\n";
    } else {
      std::cout << text;
    }
  }

  Result<v1::Namespace> NamespaceFlags() {
    v1::Namespace ns;
    ns.set_model_id(flags_->Get("model-id"));
    ns.set_kv_dtype(flags_->Get("kv-dtype"));
    ns.set_cache_salt(flags_->Get("salt"));
    if (flags_->Has("block-tokens")) {
      Result<int64_t> b = ParseInt(flags_->Get("block-tokens"));
      if (!b.ok() || *b > UINT32_MAX) return Status::InvalidArgument("--block-tokens: not a count");
      ns.set_block_tokens(static_cast<uint32_t>(*b));
    }
    return ns;
  }

  Result<std::vector<int32_t>> Tokens() {
    return ParseTokenList(flags_->Get("tokens"), kMaxCliTokens);
  }

  Result<BlockKey> KeyFlag(const std::string& name) {
    std::optional<BlockKey> k = BlockKey::FromHex(flags_->Get(name));
    if (!k) return Status::InvalidArgument("--" + name + " needs a key of 32 hex digits");
    return *k;
  }

  int Generate() {
    v1::GenerateRequest req;
    if (flags_->Has("prompt") == flags_->Has("tokens")) {
      return Fail("generate needs exactly one of --prompt and --tokens", 2);
    }
    const std::string cache_control = flags_->Get("cache-control");
    if (flags_->Has("prompt") && cache_control.empty()) {
      req.set_prompt(flags_->Get("prompt"));
    } else if (flags_->Has("prompt")) {
      // The whole text, cacheable for one TTL.
      v1::Segment* seg = req.add_segments();
      seg->set_text(flags_->Get("prompt"));
      seg->mutable_cache_control()->set_ttl(cache_control);
    } else {
      Result<std::vector<int32_t>> ids = Tokens();
      if (!ids.ok()) return Fail(ids.status().message(), 2);
      if (cache_control.empty()) {
        for (int32_t t : *ids) req.add_token_ids(t);
      } else {
        // END:TTL,...: a segment ends at each END (tokens), marked with TTL;
        // the rest of the prompt follows unmarked.
        size_t begin = 0;
        std::stringstream items(cache_control);
        for (std::string item; std::getline(items, item, ',');) {
          const size_t colon = item.find(':');
          Result<int64_t> end = ParseInt(item.substr(0, colon));
          if (colon == std::string::npos || !end.ok() || static_cast<size_t>(*end) <= begin ||
              static_cast<size_t>(*end) > ids->size()) {
            return Fail(
                "--cache-control with --tokens takes END:TTL,... with END increasing "
                "token counts within the prompt, e.g. 3000:1h,5000:5m",
                2);
          }
          v1::Segment* seg = req.add_segments();
          seg->mutable_token_ids()->Add(ids->begin() + begin, ids->begin() + *end);
          seg->mutable_cache_control()->set_ttl(item.substr(colon + 1));
          begin = static_cast<size_t>(*end);
        }
        if (begin < ids->size()) {
          req.add_segments()->mutable_token_ids()->Add(ids->begin() + begin, ids->end());
        }
      }
    }
    req.set_request_id(flags_->Get("request-id"));
    req.set_cached_content(flags_->Get("cached-content"));
    for (auto [flag, setter] :
         {std::pair<const char*, std::function<void(int64_t)>>{
              "max-tokens", [&](int64_t v) { req.set_max_tokens(static_cast<uint32_t>(v)); }},
          {"top-k", [&](int64_t v) { req.set_top_k(static_cast<uint32_t>(v)); }},
          {"seed", [&](int64_t v) { req.set_seed(static_cast<uint64_t>(v)); }}}) {
      if (!flags_->Has(flag)) continue;
      Result<int64_t> v = ParseInt(flags_->Get(flag));
      if (!v.ok() || *v < 0 || *v > UINT32_MAX) {
        return Fail(std::string("--") + flag + " needs a non-negative integer", 2);
      }
      setter(*v);
    }
    for (auto [flag, setter] : {std::pair<const char*, std::function<void(float)>>{
                                    "temperature", [&](float v) { req.set_temperature(v); }},
                                {"top-p", [&](float v) { req.set_top_p(v); }}}) {
      if (!flags_->Has(flag)) continue;
      char* end = nullptr;
      const std::string text = flags_->Get(flag);
      const float v = std::strtof(text.c_str(), &end);
      if (text.empty() || *end != '\0')
        return Fail(std::string("--") + flag + " needs a number", 2);
      setter(v);
    }
    req.set_tenant(flags_->Get("tenant"));
    req.set_no_bos(flags_->Has("no-bos"));
    req.set_ignore_eos(flags_->Has("ignore-eos"));
    Result<v1::GenerateResponse> r = client_->Generate(req);
    if (!r.ok()) return Fail(r.status());
    json j = {{"ok", true},
              {"text", r->text()},
              {"token_ids", std::vector<int32_t>(r->token_ids().begin(), r->token_ids().end())},
              {"prompt_tokens", r->prompt_tokens()},
              {"cached_tokens", r->cached_tokens()},
              {"cache_write_blocks", r->cache_write_blocks()},
              {"finish_reason", r->finish_reason()},
              {"ttft_ms", r->ttft_ms()},
              {"total_ms", r->total_ms()},
              {"model", r->model()},
              {"request_id", r->request_id()}};
    const v1::Usage& u = r->usage();
    j["usage"] = {{"input_tokens", u.input_tokens()},
                  {"cache_creation_input_tokens", u.cache_creation_input_tokens()},
                  {"cache_creation",
                   {{"ephemeral_5m_input_tokens", u.cache_creation().ephemeral_5m_input_tokens()},
                    {"ephemeral_1h_input_tokens", u.cache_creation().ephemeral_1h_input_tokens()}}},
                  {"cache_read_input_tokens", u.cache_read_input_tokens()},
                  {"output_tokens", u.output_tokens()}};
    Print(j, r->text() + "\n");
    if (!json_) {
      // The text alone goes to stdout (pipeable); the usage to stderr.
      std::cerr << "usage: input " << u.input_tokens() << ", cache write "
                << u.cache_creation_input_tokens() << " (5m "
                << u.cache_creation().ephemeral_5m_input_tokens() << ", 1h "
                << u.cache_creation().ephemeral_1h_input_tokens() << "), cache read "
                << u.cache_read_input_tokens() << ", output " << u.output_tokens() << "\n";
    }
    return 0;
  }

  int Health() {
    Result<v1::HealthResponse> h = client_->Health();
    if (!h.ok()) return Fail("no daemon answers: " + h.status().message(), 1);
    std::ostringstream text;
    text << h->status() << " kvtierd " << h->version() << " at " << h->listen() << ", up "
         << h->uptime_ms() / 1000 << " s\n";
    Print({{"ok", true},
           {"status", h->status()},
           {"version", h->version()},
           {"listen", h->listen()},
           {"uptime_ms", h->uptime_ms()}},
          text.str());
    return 0;
  }

  int Stats() {
    Result<v1::StatsResponse> s = client_->Stats();
    if (!s.ok()) return Fail(s.status());
    json tiers = json::array();
    std::ostringstream text;
    text << "tiers:\n";
    for (const v1::TierStats& t : s->tiers()) {
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
      text << "  " << t.name() << " (" << t.policy() << ", drains in " << t.drain_time_s()
           << " s): " << t.blocks() << " blocks, " << t.used_bytes() << " / " << t.capacity_bytes()
           << " bytes used, read " << t.read_bytes_per_s() / 1e9 << " GB/s, write "
           << t.write_bytes_per_s() / 1e9 << " GB/s (measured at start), " << t.corruption_errors()
           << " corruption errors, " << t.io_errors() << " I/O errors\n";
    }
    json j = {{"ok", true},
              {"tiers", tiers},
              {"indexed_blocks", s->indexed_blocks()},
              {"lookups", s->lookups()},
              {"lookup_blocks", s->lookup_blocks()},
              {"lookup_hit_blocks", s->lookup_hit_blocks()},
              {"reads", s->reads()},
              {"read_hits", s->read_hits()},
              {"read_misses", s->read_misses()},
              {"inserts", s->inserts()},
              {"refreshes", s->refreshes()},
              {"insert_bytes", s->insert_bytes()},
              {"insert_failures", s->insert_failures()},
              {"demotions", s->demotions()},
              {"demotion_failures", s->demotion_failures()},
              {"drops", s->drops()},
              {"expired", s->expired()},
              {"placed", s->placed()},
              {"promotions", s->promotions()},
              {"promotion_skips", s->promotion_skips()},
              {"remat_drops", s->remat_drops()},
              {"corruption_misses", s->corruption_misses()},
              {"default_block_tokens", s->default_block_tokens()},
              {"default_namespace", s->default_namespace()}};
    if (s->has_engine()) {
      const v1::EngineStats& e = s->engine();
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
    text << "indexed blocks: " << s->indexed_blocks() << "\nlookups: " << s->lookups() << " ("
         << s->lookup_hit_blocks() << " of " << s->lookup_blocks()
         << " blocks hit)\nreads: " << s->reads() << " (" << s->read_hits() << " hits, "
         << s->read_misses() << " misses)\ninserts: " << s->inserts() << " (+" << s->refreshes()
         << " refreshes, " << s->insert_bytes() << " bytes, " << s->insert_failures()
         << " refused)\nplacement: " << s->placed() << " placed, " << s->promotions()
         << " promoted, " << s->demotions() << " demoted, " << s->remat_drops()
         << " dropped for recompute, " << s->drops() << " dropped with no tier below, "
         << s->expired() << " expired\ndefault namespace: " << s->default_namespace() << "\n";
    if (s->has_engine()) {
      const v1::EngineStats& e = s->engine();
      text << "engine: " << e.model() << ", " << e.params() << " params, " << e.requests()
           << " requests (" << e.finished() << " finished, " << e.running() << " running, "
           << e.waiting() << " waiting), " << e.prefill_tokens() << " prefill + "
           << e.decode_tokens() << " decode tokens, " << e.cached_tokens()
           << " tokens from the cache, " << e.published_blocks() << " blocks published, "
           << e.free_pages() << " / " << e.total_pages() << " KV pages free\n";
    }
    Print(j, text.str());
    return 0;
  }

  int Lookup() {
    v1::LookupRequest req;
    Result<v1::Namespace> ns = NamespaceFlags();
    if (!ns.ok()) return Fail(ns.status().message(), 2);
    *req.mutable_namespace_() = *ns;
    if (flags_->Has("tokens") == flags_->Has("keys")) return Fail("give --tokens or --keys", 2);
    if (flags_->Has("tokens")) {
      Result<std::vector<int32_t>> t = Tokens();
      if (!t.ok()) return Fail(t.status().message(), 2);
      req.mutable_token_ids()->Add(t->begin(), t->end());
      req.set_return_keys(true);
    } else {
      std::stringstream keys(flags_->Get("keys"));
      for (std::string hex; std::getline(keys, hex, ',');) {
        std::optional<BlockKey> k = BlockKey::FromHex(hex);
        if (!k) return Fail("'" + hex + "' is not a key of 32 hex digits", 2);
        req.add_keys(k->ToByteString());
      }
    }
    Result<v1::LookupResponse> r = client_->Lookup(req);
    if (!r.ok()) return Fail(r.status());
    json hits = json::array();
    std::ostringstream text;
    text << "hit " << r->hit_blocks() << " of " << r->query_blocks() << " blocks";
    if (flags_->Has("tokens")) text << " (" << r->hit_tokens() << " tokens)";
    text << "\n";
    for (const v1::BlockInfo& b : r->hits()) {
      hits.push_back(InfoJson(b));
      text << "  " << Hex(b.key()) << "  " << b.size_bytes() << " bytes in " << b.tier() << "\n";
    }
    json keys = json::array();
    for (const std::string& k : r->keys()) keys.push_back(Hex(k));
    Print({{"ok", true},
           {"query_blocks", r->query_blocks()},
           {"hit_blocks", r->hit_blocks()},
           {"hit_tokens", r->hit_tokens()},
           {"block_tokens", r->block_tokens()},
           {"hits", hits},
           {"keys", keys}},
          text.str());
    return 0;
  }

  int Put() {
    if (!flags_->Has("file")) return Fail("put needs --file", 2);
    std::ifstream in(flags_->Get("file"), std::ios::binary);
    if (!in) return Fail("cannot read " + flags_->Get("file"), 2);
    std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    v1::PutHeader h;
    Result<v1::Namespace> ns = NamespaceFlags();
    if (!ns.ok()) return Fail(ns.status().message(), 2);
    *h.mutable_namespace_() = *ns;
    if (flags_->Has("tokens") == flags_->Has("key")) return Fail("give --tokens or --key", 2);
    if (flags_->Has("tokens")) {
      Result<std::vector<int32_t>> t = Tokens();
      if (!t.ok()) return Fail(t.status().message(), 2);
      h.mutable_token_ids()->Add(t->begin(), t->end());
    } else {
      Result<BlockKey> k = KeyFlag("key");
      if (!k.ok()) return Fail(k.status().message(), 2);
      h.set_key(k->ToByteString());
      if (flags_->Has("parent")) {
        Result<BlockKey> p = KeyFlag("parent");
        if (!p.ok()) return Fail(p.status().message(), 2);
        h.set_parent_key(p->ToByteString());
      }
    }
    if (flags_->Has("ttl")) {
      Result<int64_t> ttl = ParseInt(flags_->Get("ttl"));
      if (!ttl.ok() || *ttl > UINT32_MAX) return Fail("--ttl needs seconds", 2);
      h.set_ttl_seconds(static_cast<uint32_t>(*ttl));
    }
    Result<v1::PutResponse> r =
        client_->Put(h, {reinterpret_cast<const std::byte*>(data.data()), data.size()});
    if (!r.ok()) return Fail(r.status());
    json j = InfoJson(r->block());
    j["ok"] = true;
    Print(j, "stored " + Hex(r->block().key()) + " (" + std::to_string(r->block().size_bytes()) +
                 " bytes) in " + r->block().tier() + "\n");
    return 0;
  }

  int Get() {
    BlockKey key;
    if (flags_->Has("tokens") == flags_->Has("key")) return Fail("give --key or --tokens", 2);
    if (flags_->Has("key")) {
      Result<BlockKey> k = KeyFlag("key");
      if (!k.ok()) return Fail(k.status().message(), 2);
      key = *k;
    } else {
      v1::LookupRequest req;
      Result<v1::Namespace> ns = NamespaceFlags();
      if (!ns.ok()) return Fail(ns.status().message(), 2);
      *req.mutable_namespace_() = *ns;
      Result<std::vector<int32_t>> t = Tokens();
      if (!t.ok()) return Fail(t.status().message(), 2);
      req.mutable_token_ids()->Add(t->begin(), t->end());
      req.set_return_keys(true);
      Result<v1::LookupResponse> r = client_->Lookup(req);
      if (!r.ok()) return Fail(r.status());
      if (r->keys().empty()) return Fail("the token list holds no full block", 2);
      key = *BlockKey::FromBytes(r->keys(r->keys_size() - 1));
    }
    Result<v1::Namespace> ns = NamespaceFlags();
    if (!ns.ok()) return Fail(ns.status().message(), 2);
    Result<FetchedBlock> b = client_->Get(key, *ns);
    if (!b.ok()) return Fail(b.status());
    json j = InfoJson(b->info);
    j["ok"] = true;
    if (flags_->Has("out")) {
      std::ofstream out(flags_->Get("out"), std::ios::binary | std::ios::trunc);
      out.write(b->payload.data(), static_cast<std::streamsize>(b->payload.size()));
      if (!out.flush()) return Fail("cannot write " + flags_->Get("out"), 1);
      j["out"] = flags_->Get("out");
      Print(j, "wrote " + std::to_string(b->payload.size()) + " bytes of " + key.ToHex() + " to " +
                   flags_->Get("out") + "\n");
    } else if (json_) {
      Print(j, "");
    } else {
      std::fwrite(b->payload.data(), 1, b->payload.size(), stdout);
    }
    return 0;
  }

  int Delete() {
    Result<BlockKey> k = KeyFlag("key");
    if (!k.ok()) return Fail(k.status().message(), 2);
    Result<v1::Namespace> ns = NamespaceFlags();
    if (!ns.ok()) return Fail(ns.status().message(), 2);
    if (Status s = client_->Delete(*k, *ns); !s.ok()) return Fail(s);
    Print({{"ok", true}, {"key", k->ToHex()}}, "deleted " + k->ToHex() + "\n");
    return 0;
  }

  static json CostsJson(const google::protobuf::RepeatedPtrField<v1::TierCost>& costs) {
    json out = json::array();
    for (const v1::TierCost& c : costs) {
      json j = {{"tier", c.tier()}, {"allowed", c.allowed()}};
      if (c.allowed()) j["cost_usd"] = c.cost_usd();
      if (c.drain_time_s() > 0) j["drain_time_s"] = c.drain_time_s();
      out.push_back(j);
    }
    return out;
  }

  static void CostsText(const google::protobuf::RepeatedPtrField<v1::TierCost>& costs,
                        double remat_usd, bool remat_known, std::ostream& text) {
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

  static json CacheJson(const v1::NamedCacheInfo& c) {
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

  static std::string CacheText(const v1::NamedCacheInfo& c) {
    std::string t = c.name() + "  " + std::to_string(c.tokens()) + " tokens, expires " +
                    IsoTime(c.expire_time_ms());
    if (!c.display_name().empty()) t += "  (" + c.display_name() + ")";
    if (!c.storage_cost_usd().empty()) t += "  storage $" + c.storage_cost_usd();
    return t + "\n";
  }

  // Sets exactly one of --ttl and --expire-time on a request.
  template <typename Req>
  Status ExpiryFlags(Req* req) {
    if (flags_->Has("ttl") == flags_->Has("expire-time")) {
      return Status::InvalidArgument("give exactly one of --ttl and --expire-time");
    }
    Result<int64_t> v = ParseInt(flags_->Get(flags_->Has("ttl") ? "ttl" : "expire-time"));
    if (!v.ok()) return Status::InvalidArgument("--ttl / --expire-time need an integer");
    if (flags_->Has("ttl")) {
      if (*v == 0 || *v > UINT32_MAX) return Status::InvalidArgument("--ttl needs seconds > 0");
      req->set_ttl_seconds(static_cast<uint32_t>(*v));
    } else {
      req->set_expire_time_ms(*v);
    }
    return Status::Ok();
  }

  int Cache(const std::vector<std::string>& args) {
    const std::string& sub = args[1];
    const std::string name = args.size() > 2 ? args[2] : "";
    v1::ContextCache::Stub& stub = client_->context_cache();
    const std::string tenant = flags_->Get("tenant");
    v1::NamedCacheInfo info;
    grpc::Status st;
    if (sub == "create" && args.size() == 2) {
      v1::CreateCacheRequest req;
      req.set_tenant(tenant);
      req.set_display_name(flags_->Get("display-name"));
      if (flags_->Has("prompt") == flags_->Has("tokens")) {
        return Fail("cache create needs exactly one of --prompt and --tokens", 2);
      }
      if (flags_->Has("prompt")) {
        req.set_text(flags_->Get("prompt"));
      } else {
        Result<std::vector<int32_t>> ids = Tokens();
        if (!ids.ok()) return Fail(ids.status().message(), 2);
        req.mutable_token_ids()->Add(ids->begin(), ids->end());
      }
      if (Status s = ExpiryFlags(&req); !s.ok()) return Fail(s.message(), 2);
      st = stub.CreateCache(client_->NewContext().get(), req, &info);
    } else if ((sub == "get" || sub == "delete") && args.size() == 3) {
      v1::CacheRef ref;
      ref.set_tenant(tenant);
      ref.set_name(name);
      if (sub == "get") {
        st = stub.GetCache(client_->NewContext().get(), ref, &info);
      } else {
        v1::DeleteCacheResponse r;
        st = stub.DeleteCache(client_->NewContext().get(), ref, &r);
        if (st.ok()) {
          Print({{"ok", true}, {"name", name}}, "deleted " + name + "\n");
          return 0;
        }
      }
    } else if (sub == "update" && args.size() == 3) {
      v1::UpdateCacheRequest req;
      req.set_tenant(tenant);
      req.set_name(name);
      if (Status s = ExpiryFlags(&req); !s.ok()) return Fail(s.message(), 2);
      st = stub.UpdateCache(client_->NewContext().get(), req, &info);
    } else if (sub == "list" && args.size() == 2) {
      v1::ListCachesRequest req;
      req.set_tenant(tenant);
      v1::ListCachesResponse list;
      st = stub.ListCaches(client_->NewContext().get(), req, &list);
      if (st.ok()) {
        json caches = json::array();
        std::string text;
        for (const v1::NamedCacheInfo& c : list.caches()) {
          caches.push_back(CacheJson(c));
          text += CacheText(c);
        }
        Print({{"ok", true}, {"caches", caches}}, text.empty() ? "no named caches\n" : text);
        return 0;
      }
    } else {
      return Fail("cache takes: create, get NAME, list, update NAME, delete NAME", 2, true);
    }
    if (!st.ok()) return Fail(FromGrpcStatus(st));
    json j = CacheJson(info);
    j["ok"] = true;
    Print(j, CacheText(info));
    return 0;
  }

  // "YYYY-MM-DD" (UTC midnight) or Unix ms.
  static Result<int64_t> DayOrMs(const std::string& text) {
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
    if (!ms.ok())
      return Status::InvalidArgument("'" + text + "' is neither YYYY-MM-DD nor Unix ms");
    return ms;
  }

  int BillingReport() {
    v1::BillingReportRequest req;
    req.set_tenant(flags_->Get("tenant"));
    if (req.tenant().empty()) return Fail("billing report needs --tenant", 2);
    for (auto [flag, setter] : {std::pair<const char*, std::function<void(int64_t)>>{
                                    "from", [&](int64_t v) { req.set_from_ms(v); }},
                                {"to", [&](int64_t v) { req.set_to_ms(v); }}}) {
      if (!flags_->Has(flag)) continue;
      Result<int64_t> v = DayOrMs(flags_->Get(flag));
      if (!v.ok()) return Fail("--" + std::string(flag) + ": " + v.status().message(), 2);
      setter(*v);
    }
    req.set_group_by(flags_->Get("group-by", "model"));
    req.set_format(json_ ? "json" : flags_->Get("format", "table"));
    Result<v1::BillingReportResponse> r = client_->BillingReport(req);
    if (!r.ok()) return Fail(r.status());
    std::cout << r->rendered();
    if (!r->rendered().empty() && r->rendered().back() != '\n') std::cout << "\n";
    return 0;
  }

  // Unix ms as UTC ISO 8601, to the second.
  static std::string IsoTime(int64_t ms) {
    const std::time_t t = static_cast<std::time_t>(ms / 1000);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
  }

  int Explain(const std::string& hex) {
    std::optional<BlockKey> k = BlockKey::FromHex(hex);
    if (!k) return Fail("explain needs a key of 32 hex digits", 2);
    Result<v1::Namespace> ns = NamespaceFlags();
    if (!ns.ok()) return Fail(ns.status().message(), 2);
    Result<v1::ExplainResponse> x = client_->Explain(*k, *ns, flags_->Get("tenant"));
    if (!x.ok()) return Fail(x.status());
    json j = {{"ok", true},
              {"block", InfoJson(x->block())},
              {"decision", x->decision()},
              {"decided_at_ms", x->decided_at_ms()},
              {"decision_idle_s", x->decision_idle_s()},
              {"decision_costs", CostsJson(x->decision_costs())},
              {"ttl_ms", x->ttl_ms()},
              {"expected_idle_s", x->expected_idle_s()},
              {"costs_now", CostsJson(x->costs_now())},
              {"pins", x->pins()},
              {"cached_children", x->cached_children()},
              {"tokens", x->tokens()},
              {"last_access_ms", x->last_access_ms()}};
    if (!x->from_tier().empty()) j["from_tier"] = x->from_tier();
    if (x->remat_known()) j["remat_cost_usd"] = x->remat_cost_usd();
    if (x->has_reuse_estimate_s()) j["reuse_estimate_s"] = x->reuse_estimate_s();
    std::ostringstream text;
    text << "block " << k->ToHex() << ": " << x->block().size_bytes() << " bytes in "
         << x->block().tier() << "\n";
    text << "  last decision: " << x->decision();
    if (!x->from_tier().empty()) text << " from " << x->from_tier();
    text << " at " << IsoTime(x->decided_at_ms()) << ", expecting it idle " << x->decision_idle_s()
         << " s; costs compared:\n";
    CostsText(x->decision_costs(), x->remat_cost_usd(), x->remat_known(), text);
    text << "  ttl: "
         << (x->ttl_ms() > 0 ? std::to_string(x->ttl_ms() / 1000) + " s, refreshed by reads"
                             : std::string("none (fixed expiry)"));
    if (x->block().expire_time_ms() != 0)
      text << "; expires at " << x->block().expire_time_ms() << " ms";
    text << "\n  reuse estimate of its namespace: "
         << (x->has_reuse_estimate_s() ? std::to_string(x->reuse_estimate_s()) + " s"
                                       : std::string("none yet"))
         << "; expected idle now " << x->expected_idle_s() << " s; costs now:\n";
    CostsText(x->costs_now(), x->remat_cost_usd(), x->remat_known(), text);
    text << "  pins " << x->pins() << ", cached children " << x->cached_children() << "\n";
    Print(j, text.str());
    return 0;
  }

  bool json_ = false;
  const FlagSet* flags_ = nullptr;
  std::unique_ptr<Client> client_;
};

}  // namespace
}  // namespace kvtier

int main(int argc, char** argv) { return kvtier::Cli().Run(argc, argv); }
