// The block API's commands: lookup, put, get, delete and explain. A block is
// named by --key (with the namespace flags), or as the last full block of
// --tokens.
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "tools/kvtier/cli_flags.h"
#include "tools/kvtier/command.h"

namespace kvtier::cli {

using nlohmann::json;

namespace {

// A key in a reply, as 32 hex digits.
std::string Hex(const std::string& key_bytes) {
  std::optional<BlockKey> k = BlockKey::FromBytes(key_bytes);
  return k ? k->ToHex() : "<bad key>";
}

json InfoJson(const v1::BlockInfo& b) {
  json j = {{"key", Hex(b.key())}, {"size_bytes", b.size_bytes()}, {"tier", b.tier()}};
  if (b.expire_time_ms() != 0) j["expire_time_ms"] = b.expire_time_ms();
  return j;
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

}  // namespace

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

namespace {

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

}  // namespace

Exit Put(const Command& c) {
  Result<PutRequest> req = PutRequestFromFlags(c.flags);
  if (!req.ok()) return UsageError(req.status());
  KVTIER_ASSIGN_OR_RETURN(
      const v1::PutResponse r,
      c.client.Put(req->header,
                   {reinterpret_cast<const std::byte*>(req->payload.data()), req->payload.size()}));
  json j = InfoJson(r.block());
  j["ok"] = true;
  const bool stored = !r.block().tier().empty();
  j["stored"] = stored;
  const std::string what =
      Hex(r.block().key()) + " (" + std::to_string(r.block().size_bytes()) + " bytes)";
  c.out.Print(j, stored ? "stored " + what + " in " + r.block().tier() + "\n"
                        : "not stored: the cache declined " + what +
                              " (every tier's admission filter refused it)\n");
  return {};
}

namespace {

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

}  // namespace

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

namespace {

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
            {"last_access_ms", x.last_access_ms()},
            {"reuse_probability", x.reuse_probability()},
            {"depth", x.depth()},
            {"uses", x.uses()}};
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
  text << "\n  depth " << x.depth() << " in its chain, used " << x.uses()
       << " times since inserted; its class (namespace, depth) comes back after "
       << (x.has_reuse_estimate_s() ? std::to_string(x.reuse_estimate_s()) + " s"
                                    : std::string("? s (no reuse seen yet)"))
       << " with probability " << x.reuse_probability() << "\n  expected idle now "
       << x.expected_idle_s() << " s; expected costs now:\n";
  CostsText(x.costs_now(), x.remat_cost_usd(), x.remat_known(), text);
  text << "  pins " << x.pins() << ", cached children " << x.cached_children() << "\n";
  return text.str();
}

}  // namespace

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

}  // namespace kvtier::cli
