// `cache SUBCOMMAND [NAME]`: named caches, created from a prompt and kept
// readable until they expire; get, list, update (a new expiry) and delete.
#include <nlohmann/json.hpp>

#include "proto/status_codes.h"
#include "tools/kvtier/cli_flags.h"
#include "tools/kvtier/command.h"

namespace kvtier::cli {

using nlohmann::json;

namespace {

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

}  // namespace

Exit Cache(const Command& c) {
  for (const CacheSubcommand& sub : kCacheSubcommands) {
    if (c.args.size() == sub.args && c.args[1] == sub.name) return sub.run(c);
  }
  return UsageError("cache takes: create, get NAME, list, update NAME, delete NAME", true);
}

}  // namespace kvtier::cli
