// The Gemini dialect (docs/http-api.md, "Gemini"): explicit named caches
// (/v1beta/cachedContents[/{id}]: create, get, list, patch the expiry,
// delete) over ContextApi's named-cache calls, and
// /v1beta/models/{model}:generateContent and :streamGenerateContent (SSE)
// that may start from one, with Google's usageMetadata and errors.
#include <httplib.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "context/named_caches.h"
#include "server/http/gemini_time.h"
#include "server/http/http_dialect.h"

namespace kvtier::http {
namespace {

using nlohmann::json;

// Google's canonical status names.
const char* StatusNameOf(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidRequest:
    case ErrorKind::kTooLarge:
      return "INVALID_ARGUMENT";
    case ErrorKind::kAuthentication:
      return "UNAUTHENTICATED";
    case ErrorKind::kPermission:
      return "PERMISSION_DENIED";
    case ErrorKind::kNotFound:
      return "NOT_FOUND";
    case ErrorKind::kRateLimit:
      return "RESOURCE_EXHAUSTED";
    case ErrorKind::kOverloaded:
      return "UNAVAILABLE";
    case ErrorKind::kInternal:
      return "INTERNAL";
  }
  return "INTERNAL";
}

json ErrorBody(const ApiError& e) {
  return {
      {"error",
       {{"code", HttpStatusOf(e.kind)}, {"message", e.message}, {"status", StatusNameOf(e.kind)}}}};
}

void Reply(httplib::Response& res, const ApiError& e) {
  res.status = HttpStatusOf(e.kind);
  res.set_content(Dump(ErrorBody(e)), "application/json");
}

void ReplyJson(httplib::Response& res, const json& body) {
  res.set_content(Dump(body), "application/json");
}

ApiError Invalid(const Status& s) {
  return {s.code() == StatusCode::kNotFound ? ErrorKind::kNotFound : ErrorKind::kInvalidRequest,
          s.message()};
}

// The same error, its message led by where the field sits ("generationConfig.").
Status Within(const std::string& where, Status s) {
  if (s.ok()) return s;
  return Status::InvalidArgument(where + s.message());
}

// The key: header x-goog-api-key, or query parameter key (Google's two ways).
std::optional<ApiError> AuthenticateCaller(const Services& s, const httplib::Request& req,
                                           Principal* caller) {
  const std::string key = req.has_header("x-goog-api-key") ? req.get_header_value("x-goog-api-key")
                                                           : req.get_param_value("key");
  return Authenticate(s, req, key, "header x-goog-api-key or query parameter key", caller);
}

// "models/tiny" or "tiny", which must be the served model.
Status CheckModel(const Services& s, const std::string& field, const std::string& name) {
  constexpr std::string_view kPrefix = "models/";
  const std::string id = name.rfind(kPrefix, 0) == 0 ? name.substr(kPrefix.size()) : name;
  if (id.empty()) return Status::InvalidArgument(field + ": required");
  if (!IsServedModel(s, id)) {
    return Status::NotFound(field + ": '" + name +
                            "' is not served here (this server serves 'models/" + s.model_id +
                            "')");
  }
  return Status::Ok();
}

std::string ModelName(const Services& s) { return "models/" + s.model_id; }

// Tools and function calling are not served; an empty list is harmless.
Status RefuseTools(const json& body) {
  for (const char* field : {"tools", "toolConfig"}) {
    auto it = body.find(field);
    if (it != body.end() && !it->is_null() && !(it->is_array() && it->empty()) &&
        !(it->is_object() && it->empty())) {
      return Status::InvalidArgument(std::string(field) + ": tools are not supported");
    }
  }
  return Status::Ok();
}

// A Content's parts ({"parts": [{"text": ...}]}): text parts only.
Status ReadParts(const json& content, const std::string& where, std::vector<ChatBlock>* out) {
  auto parts = content.find("parts");
  if (parts == content.end() || !parts->is_array() || parts->empty()) {
    return Status::InvalidArgument(where + ".parts: expected a non-empty array");
  }
  bool has_text = false;
  for (size_t i = 0; i < parts->size(); ++i) {
    const json& part = (*parts)[i];
    const std::string at = where + ".parts[" + std::to_string(i) + "]";
    if (!part.is_object()) return Status::InvalidArgument(at + ": expected an object");
    auto text = part.find("text");
    if (text == part.end()) {
      return Status::InvalidArgument(at + ": only text parts are supported");
    }
    if (!text->is_string()) return Status::InvalidArgument(at + ".text: expected a string");
    if (!text->get_ref<const std::string&>().empty()) has_text = true;
    out->push_back({text->get<std::string>(), ""});
  }
  // Named here: the template's error would count its own messages.
  if (!has_text) return Status::InvalidArgument(where + ".parts: empty (no text)");
  return Status::Ok();
}

// body.systemInstruction ({"parts": [...]}) as a system message, if present.
Status ReadSystemInstruction(const json& body, std::vector<ChatMessage>* chat) {
  auto it = body.find("systemInstruction");
  if (it == body.end() || it->is_null()) return Status::Ok();
  if (!it->is_object()) return Status::InvalidArgument("systemInstruction: expected an object");
  ChatMessage system{"system", {}};
  KVTIER_RETURN_IF_ERROR(ReadParts(*it, "systemInstruction", &system.content));
  chat->push_back(std::move(system));
  return Status::Ok();
}

// body.contents: turns of role "user" (the default) or "model" (the
// assistant). `required`: an absent or empty list is refused.
Status ReadContents(const json& body, bool required, std::vector<ChatMessage>* chat) {
  auto it = body.find("contents");
  if (it == body.end() || it->is_null() || (it->is_array() && it->empty())) {
    return required ? Status::InvalidArgument("contents: expected a non-empty array")
                    : Status::Ok();
  }
  if (!it->is_array()) return Status::InvalidArgument("contents: expected an array");
  for (size_t i = 0; i < it->size(); ++i) {
    const json& c = (*it)[i];
    const std::string at = "contents[" + std::to_string(i) + "]";
    if (!c.is_object()) return Status::InvalidArgument(at + ": expected an object");
    const json role = c.value("role", json("user"));
    if (role != "user" && role != "model") {
      return Status::InvalidArgument(at + ".role: must be \"user\" or \"model\", not " +
                                     Dump(role));
    }
    ChatMessage msg{role == "model" ? "assistant" : "user", {}};
    KVTIER_RETURN_IF_ERROR(ReadParts(c, at, &msg.content));
    chat->push_back(std::move(msg));
  }
  return Status::Ok();
}

// ---- cachedContents ----

// When a cache expires: ttl (a duration) or expireTime (RFC 3339), as
// ContextApi takes it (whole seconds, or Unix ms).
struct CacheExpiry {
  uint32_t ttl_seconds = 0;
  int64_t expire_time_ms = 0;
};

Status ReadTtl(const json& body, CacheExpiry* out) {
  std::string text;
  KVTIER_RETURN_IF_ERROR(ReadString(body, "ttl", &text));
  KVTIER_ASSIGN_OR_RETURN(const int64_t ms, ParseDurationMs(text, "ttl"));
  if (ms < kMinNamedCacheTtlMs || ms > kMaxNamedCacheTtlMs) {
    return Status::InvalidArgument("ttl: \"" + text + "\" is outside " +
                                   std::to_string(kMinNamedCacheTtlMs / 1000) + "s.." +
                                   std::to_string(kMaxNamedCacheTtlMs / 1000) + "s");
  }
  // The registry keeps whole seconds: a fraction is dropped.
  out->ttl_seconds = static_cast<uint32_t>(ms / 1000);
  return Status::Ok();
}

Status ReadExpireTime(const Services& s, const json& body, CacheExpiry* out) {
  std::string text;
  KVTIER_RETURN_IF_ERROR(ReadString(body, "expireTime", &text));
  KVTIER_ASSIGN_OR_RETURN(const int64_t at, ParseTimestampMs(text, "expireTime"));
  const int64_t now = s.clock->NowMs();
  if (at <= now) {
    return Status::InvalidArgument("expireTime: \"" + text + "\" is not in the future (now " +
                                   FormatTimestamp(now) + ")");
  }
  if (at - now > kMaxNamedCacheTtlMs) {
    return Status::InvalidArgument("expireTime: \"" + text + "\" is more than 7 days ahead (now " +
                                   FormatTimestamp(now) + ")");
  }
  out->expire_time_ms = at;
  return Status::Ok();
}

// Exactly one of ttl and expireTime; neither: `default_ttl_s` if non-zero.
Status ReadExpiry(const Services& s, const json& body, uint32_t default_ttl_s, CacheExpiry* out) {
  const bool has_ttl = body.contains("ttl") && !body["ttl"].is_null();
  const bool has_expire = body.contains("expireTime") && !body["expireTime"].is_null();
  if (has_ttl && has_expire) {
    return Status::InvalidArgument("ttl, expireTime: give one of them, not both");
  }
  if (has_ttl) return ReadTtl(body, out);
  if (has_expire) return ReadExpireTime(s, body, out);
  if (default_ttl_s == 0) return Status::InvalidArgument("ttl or expireTime: required");
  out->ttl_seconds = default_ttl_s;
  return Status::Ok();
}

// A PATCH's expiry: ?updateMask=ttl or expireTime names the one field read
// (others in the body are ignored, as Google does); without a mask, the one
// the body carries.
Status ReadUpdate(const Services& s, const httplib::Request& http, const json& body,
                  CacheExpiry* out) {
  if (!http.has_param("updateMask")) return ReadExpiry(s, body, 0, out);
  const std::string mask = http.get_param_value("updateMask");
  if (mask == "ttl" || mask == "expireTime") {
    if (!body.contains(mask) || body[mask].is_null()) {
      return Status::InvalidArgument(mask + ": required by updateMask=" + mask);
    }
    return mask == "ttl" ? ReadTtl(body, out) : ReadExpireTime(s, body, out);
  }
  return Status::InvalidArgument("updateMask: \"" + mask +
                                 "\" cannot be updated (only \"ttl\" or \"expireTime\")");
}

// Google's CachedContent. `update_time_ms`: when it last changed, as far as
// this call knows (the registry keeps no update time: its create time).
json CachedContentJson(const Services& s, const v1::NamedCacheInfo& c, int64_t update_time_ms) {
  json out = {{"name", c.name()},
              {"model", ModelName(s)},
              {"createTime", FormatTimestamp(c.create_time_ms())},
              {"updateTime", FormatTimestamp(update_time_ms)},
              {"expireTime", FormatTimestamp(c.expire_time_ms())},
              {"usageMetadata", {{"totalTokenCount", c.tokens()}}}};
  if (!c.display_name().empty()) out["displayName"] = c.display_name();
  return out;
}

// A create body as ContextApi's request: the rendered chat as the cache's text.
Status ParseCreateCache(const Services& s, const json& body, v1::CreateCacheRequest* req) {
  std::string model;
  KVTIER_RETURN_IF_ERROR(ReadString(body, "model", &model));
  KVTIER_RETURN_IF_ERROR(CheckModel(s, "model", model));
  KVTIER_RETURN_IF_ERROR(RefuseTools(body));
  std::string display_name;
  KVTIER_RETURN_IF_ERROR(ReadString(body, "displayName", &display_name));
  req->set_display_name(display_name);
  // Gemini's default lifetime is an hour.
  CacheExpiry expiry;
  KVTIER_RETURN_IF_ERROR(ReadExpiry(s, body, 3600, &expiry));
  req->set_ttl_seconds(expiry.ttl_seconds);
  req->set_expire_time_ms(expiry.expire_time_ms);
  std::vector<ChatMessage> chat;
  KVTIER_RETURN_IF_ERROR(ReadSystemInstruction(body, &chat));
  KVTIER_RETURN_IF_ERROR(ReadContents(body, chat.empty(), &chat));
  // Rendered as the start of a conversation that a request's contents go on
  // with (the next user turn opened), so the cache and the request's contents
  // together are the chat template's text of the whole conversation.
  KVTIER_ASSIGN_OR_RETURN(std::vector<ChatPiece> pieces, s.chat.RenderPrefix(chat));
  std::string text;
  for (const ChatPiece& p : pieces) text += p.text;
  req->set_text(text);
  return Status::Ok();
}

// "cachedContents/" and the path's id.
std::string CacheNameOf(const httplib::Request& http) {
  return std::string(kNamedCachePrefix) + http.matches[1].str();
}

void HandleCreateCache(Services& s, const httplib::Request& http, httplib::Response& res) {
  Principal caller;
  if (auto e = AuthenticateCaller(s, http, &caller)) return Reply(res, *e);
  Result<json> body = ParseBody(http);
  if (!body.ok()) return Reply(res, Invalid(body.status()));
  v1::CreateCacheRequest req;
  if (Status st = ParseCreateCache(s, *body, &req); !st.ok()) return Reply(res, Invalid(st));
  std::optional<CallGate::Pass> pass;
  if (auto e = Enter(s, &pass)) return Reply(res, *e);
  v1::NamedCacheInfo info;
  if (grpc::Status st = s.api.CreateCache(caller, req, &info); !st.ok()) {
    return Reply(res, ErrorOf(st));
  }
  ReplyJson(res, CachedContentJson(s, info, info.create_time_ms()));
}

void HandleGetCache(Services& s, const httplib::Request& http, httplib::Response& res) {
  Principal caller;
  if (auto e = AuthenticateCaller(s, http, &caller)) return Reply(res, *e);
  std::optional<CallGate::Pass> pass;
  if (auto e = Enter(s, &pass)) return Reply(res, *e);
  v1::NamedCacheInfo info;
  if (grpc::Status st = s.api.GetCache(caller, CacheNameOf(http), &info); !st.ok()) {
    return Reply(res, ErrorOf(st));
  }
  ReplyJson(res, CachedContentJson(s, info, info.create_time_ms()));
}

// A page of a list: where it starts and how long it is. The token is the
// last cache returned, "<create time ms>.<name's id>", so a page starts
// after it even when caches before it were deleted meanwhile (the list is
// oldest first, by create time then name).
struct Page {
  size_t size = 100;
  std::optional<std::pair<int64_t, std::string>> after;
};

std::string PageTokenOf(const v1::NamedCacheInfo& c) {
  return std::to_string(c.create_time_ms()) + "." +
         c.name().substr(std::char_traits<char>::length(kNamedCachePrefix));
}

Status ReadPage(const httplib::Request& http, Page* page) {
  if (http.has_param("pageSize")) {
    const std::string text = http.get_param_value("pageSize");
    const int64_t size = gemini_time_internal::Digits(text);
    if (size < 0) {
      return Status::InvalidArgument("pageSize: \"" + text + "\" is not a non-negative integer");
    }
    // Google's rules: 0 is the default, more than 1000 is 1000.
    if (size > 0) page->size = static_cast<size_t>(std::min<int64_t>(size, 1000));
  }
  const std::string token = http.get_param_value("pageToken");
  if (token.empty()) return Status::Ok();
  const size_t dot = token.find('.');
  const int64_t time_ms =
      dot == std::string::npos ? -1 : gemini_time_internal::Digits(token.substr(0, dot));
  if (time_ms < 0 || dot + 1 == token.size()) {
    return Status::InvalidArgument("pageToken: \"" + token +
                                   "\" is not a token from a previous list");
  }
  page->after.emplace(time_ms, std::string(kNamedCachePrefix) + token.substr(dot + 1));
  return Status::Ok();
}

json ListJson(const Services& s, const v1::ListCachesResponse& all, const Page& page) {
  json caches = json::array();
  const v1::NamedCacheInfo* last = nullptr;
  bool more = false;
  for (const v1::NamedCacheInfo& c : all.caches()) {
    if (page.after && std::make_pair(c.create_time_ms(), c.name()) <= *page.after) continue;
    if (caches.size() == page.size) {
      more = true;
      break;
    }
    caches.push_back(CachedContentJson(s, c, c.create_time_ms()));
    last = &c;
  }
  json out = {{"cachedContents", caches}};
  if (more) out["nextPageToken"] = PageTokenOf(*last);
  return out;
}

void HandleListCaches(Services& s, const httplib::Request& http, httplib::Response& res) {
  Principal caller;
  if (auto e = AuthenticateCaller(s, http, &caller)) return Reply(res, *e);
  Page page;
  if (Status st = ReadPage(http, &page); !st.ok()) return Reply(res, Invalid(st));
  std::optional<CallGate::Pass> pass;
  if (auto e = Enter(s, &pass)) return Reply(res, *e);
  v1::ListCachesResponse all;
  if (grpc::Status st = s.api.ListCaches(caller, &all); !st.ok()) return Reply(res, ErrorOf(st));
  ReplyJson(res, ListJson(s, all, page));
}

void HandleUpdateCache(Services& s, const httplib::Request& http, httplib::Response& res) {
  Principal caller;
  if (auto e = AuthenticateCaller(s, http, &caller)) return Reply(res, *e);
  Result<json> body = ParseBody(http);
  if (!body.ok()) return Reply(res, Invalid(body.status()));
  CacheExpiry expiry;
  if (Status st = ReadUpdate(s, http, *body, &expiry); !st.ok()) return Reply(res, Invalid(st));
  v1::UpdateCacheRequest req;
  req.set_name(CacheNameOf(http));
  req.set_ttl_seconds(expiry.ttl_seconds);
  req.set_expire_time_ms(expiry.expire_time_ms);
  std::optional<CallGate::Pass> pass;
  if (auto e = Enter(s, &pass)) return Reply(res, *e);
  v1::NamedCacheInfo info;
  if (grpc::Status st = s.api.UpdateCache(caller, req, &info); !st.ok()) {
    return Reply(res, ErrorOf(st));
  }
  ReplyJson(res, CachedContentJson(s, info, s.clock->NowMs()));
}

void HandleDeleteCache(Services& s, const httplib::Request& http, httplib::Response& res) {
  Principal caller;
  if (auto e = AuthenticateCaller(s, http, &caller)) return Reply(res, *e);
  std::optional<CallGate::Pass> pass;
  if (auto e = Enter(s, &pass)) return Reply(res, *e);
  if (grpc::Status st = s.api.DeleteCache(caller, CacheNameOf(http)); !st.ok()) {
    return Reply(res, ErrorOf(st));
  }
  ReplyJson(res, json::object());
}

// ---- generateContent ----

Status ParseGenerationConfig(const Services& s, const json& body, v1::GenerateRequest* req) {
  auto it = body.find("generationConfig");
  if (it == body.end() || it->is_null()) return Status::Ok();
  if (!it->is_object()) return Status::InvalidArgument("generationConfig: expected an object");
  const json& config = *it;
  const std::string where = "generationConfig.";
  int64_t max_tokens = 0, top_k = 0, seed = 0, candidates = 1;
  double temperature = 1.0, top_p = 1.0;
  KVTIER_RETURN_IF_ERROR(Within(where, ReadInt(config, "candidateCount", 1, 1, &candidates)));
  KVTIER_RETURN_IF_ERROR(Within(
      where, ReadInt(config, "maxOutputTokens", 1, s.api.model_config().max_seq_len, &max_tokens)));
  KVTIER_RETURN_IF_ERROR(Within(where, ReadNumber(config, "temperature", &temperature)));
  if (temperature < 0 || temperature > 2) {
    return Status::InvalidArgument(where + "temperature: must be within 0..2");
  }
  KVTIER_RETURN_IF_ERROR(Within(where, ReadNumber(config, "topP", &top_p)));
  if (!(top_p > 0 && top_p <= 1)) {
    return Status::InvalidArgument(where + "topP: must be within (0, 1]");
  }
  KVTIER_RETURN_IF_ERROR(Within(where, ReadInt(config, "topK", 0, INT32_MAX, &top_k)));
  KVTIER_RETURN_IF_ERROR(Within(where, ReadInt(config, "seed", INT32_MIN, INT32_MAX, &seed)));
  std::vector<std::string> stops;
  KVTIER_RETURN_IF_ERROR(Within(where, ReadStrings(config, "stopSequences", &stops)));
  req->set_max_tokens(static_cast<uint32_t>(max_tokens));
  req->set_temperature(static_cast<float>(temperature));
  req->set_top_p(static_cast<float>(top_p));
  req->set_top_k(static_cast<uint32_t>(top_k));
  req->set_seed(static_cast<uint64_t>(seed));
  for (std::string& stop : stops) req->add_stop_sequences(std::move(stop));
  return Status::Ok();
}

// A generateContent body (the model from the path) as a GenerateRequest.
// With cachedContent the cache comes first and the contents continue the
// conversation it began: they start with a user turn and carry no system
// part (the cache holds that).
Status ParseGenerate(const Services& s, const std::string& model, const json& body,
                     v1::GenerateRequest* req) {
  KVTIER_RETURN_IF_ERROR(CheckModel(s, "model", model));
  KVTIER_RETURN_IF_ERROR(RefuseTools(body));
  KVTIER_RETURN_IF_ERROR(ParseGenerationConfig(s, body, req));
  std::string cached_content;
  KVTIER_RETURN_IF_ERROR(ReadString(body, "cachedContent", &cached_content));
  std::vector<ChatMessage> chat;
  if (cached_content.empty()) {
    KVTIER_RETURN_IF_ERROR(ReadSystemInstruction(body, &chat));
  } else if (body.contains("systemInstruction") && !body["systemInstruction"].is_null()) {
    return Status::InvalidArgument(
        "systemInstruction: cannot be combined with cachedContent (put it in the cache)");
  }
  req->set_cached_content(cached_content);
  KVTIER_RETURN_IF_ERROR(ReadContents(body, true, &chat));
  std::vector<ChatPiece> pieces;
  if (cached_content.empty()) {
    KVTIER_ASSIGN_OR_RETURN(pieces, RenderChat(s, chat));
  } else {
    if (chat.front().role != "user") {
      return Status::InvalidArgument(
          "contents[0].role: after a cachedContent the contents start with a user turn");
    }
    KVTIER_ASSIGN_OR_RETURN(pieces, s.chat.RenderContinuation(chat));
  }
  SetSegments(pieces, req);
  return Status::Ok();
}

// finish_reason → finishReason.
std::string FinishReason(const std::string& finish) {
  if (finish == "length" || finish == "context") return "MAX_TOKENS";
  return "STOP";
}

json UsageMetadataJson(const v1::GenerateResponse& final) {
  const v1::Usage& u = final.usage();
  const uint64_t prompt =
      u.input_tokens() + u.cache_creation_input_tokens() + u.cache_read_input_tokens();
  return {{"promptTokenCount", prompt},
          {"candidatesTokenCount", u.output_tokens()},
          {"totalTokenCount", prompt + u.output_tokens()},
          {"cachedContentTokenCount", u.cache_read_input_tokens()}};
}

// A GenerateContentResponse with `text`; `final` (the last one) adds the
// finish reason and the usage.
json ResponseJson(const Services& s, const std::string& text, const v1::GenerateResponse* final) {
  json candidate = {{"content", {{"role", "model"}, {"parts", json::array({{{"text", text}}})}}},
                    {"index", 0}};
  json out = {{"candidates", json::array()}, {"modelVersion", s.model_id}};
  if (final != nullptr) {
    candidate["finishReason"] = FinishReason(final->finish_reason());
    out["usageMetadata"] = UsageMetadataJson(*final);
  }
  out["candidates"].push_back(std::move(candidate));
  return out;
}

std::string Event(const json& data) { return "data: " + Dump(data) + "\r\n\r\n"; }

void StreamContent(Services& s, const Principal& caller, std::shared_ptr<Admission> admission,
                   v1::GenerateRequest req, httplib::Response& res) {
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [&s, caller, admission, req = std::move(req)](size_t, httplib::DataSink& out) {
        ChunkSink sink(
            &out, admission.get(),
            [&s](const v1::GenerateResponse& part) {
              return part.text().empty() ? "" : Event(ResponseJson(s, part.text(), nullptr));
            },
            "");
        v1::GenerateResponse final;
        grpc::Status st = s.api.Generate(caller, req, &sink, &final);
        (void)sink.Write(
            Event(st.ok() ? ResponseJson(s, final.text(), &final) : ErrorBody(ErrorOf(st))));
        out.done();
        return true;
      });
}

void HandleGenerate(Services& s, bool stream, const httplib::Request& http,
                    httplib::Response& res) {
  Principal caller;
  if (auto e = AuthenticateCaller(s, http, &caller)) return Reply(res, *e);
  if (stream && http.get_param_value("alt") != "sse") {
    return Reply(res, {ErrorKind::kInvalidRequest,
                       "alt: streamGenerateContent is served as server-sent events only; "
                       "add ?alt=sse"});
  }
  Result<json> body = ParseBody(http);
  if (!body.ok()) return Reply(res, Invalid(body.status()));
  v1::GenerateRequest req;
  if (Status st = ParseGenerate(s, http.matches[1].str(), *body, &req); !st.ok()) {
    return Reply(res, Invalid(st));
  }
  // Every check a generation makes (the cache's owner too), before a byte
  // of the answer is sent.
  uint64_t prompt_tokens = 0;
  if (grpc::Status st = s.api.CheckGeneration(caller, req, &prompt_tokens); !st.ok()) {
    return Reply(res, ErrorOf(st));
  }
  auto admission = std::make_shared<Admission>();
  if (auto e = Admit(s, caller.tenant, admission.get())) return Reply(res, *e);
  if (stream) return StreamContent(s, caller, admission, std::move(req), res);
  CollectSink sink;
  v1::GenerateResponse final;
  if (grpc::Status st = s.api.Generate(caller, req, &sink, &final); !st.ok()) {
    return Reply(res, ErrorOf(st));
  }
  ReplyJson(res, ResponseJson(s, sink.text() + final.text(), &final));
}

}  // namespace

void AddGeminiRoutes(httplib::Server& server, Services& s) {
  using Handler = void (*)(Services&, const httplib::Request&, httplib::Response&);
  const auto route = [&s](Handler h) {
    return [&s, h](const httplib::Request& req, httplib::Response& res) { h(s, req, res); };
  };
  constexpr char kCache[] = R"(/v1beta/cachedContents/([^/]+))";
  server.Post("/v1beta/cachedContents", route(HandleCreateCache));
  server.Get("/v1beta/cachedContents", route(HandleListCaches));
  server.Get(kCache, route(HandleGetCache));
  server.Patch(kCache, route(HandleUpdateCache));
  server.Delete(kCache, route(HandleDeleteCache));
  server.Post(R"(/v1beta/models/([^/]+):generateContent)",
              [&s](const httplib::Request& req, httplib::Response& res) {
                HandleGenerate(s, false, req, res);
              });
  server.Post(R"(/v1beta/models/([^/]+):streamGenerateContent)",
              [&s](const httplib::Request& req, httplib::Response& res) {
                HandleGenerate(s, true, req, res);
              });
}

}  // namespace kvtier::http
