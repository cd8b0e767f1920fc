// What the HTTP dialects (server/http/*_api.cc) share: the services they
// call, admission, errors by kind, JSON bodies, and a GenerateSink that
// streams through an httplib chunked response. Private to server/http/.
#pragma once

#include <grpcpp/support/status.h>
#include <httplib.h>

#include <chrono>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "common/clock.h"
#include "model/chat_template.h"
#include "server/auth.h"
#include "server/call_gate.h"
#include "server/context_api.h"
#include "server/generate_stream.h"
#include "server/http/http_api.h"
#include "server/stream_guard.h"

namespace kvtier::http {

// What every handler may use; lives as long as the server.
struct Services {
  ContextApi& api;
  const Authenticator& auth;
  CallGate& gate;
  Clock* clock;
  HttpApiOptions options;
  std::string model_id;  // what clients call the model (options or the model's id)
  ChatTemplate chat;     // how messages become the prompt
};

// `model` names the served model: its id, "id@revision", or the served name.
bool IsServedModel(const Services& s, const std::string& model);
// Chat messages as the prompt's segments, each with its cache_control.
Result<std::vector<ChatPiece>> RenderChat(const Services& s, const std::vector<ChatMessage>& m);
// Pieces into `req`'s segments (tokenized one by one; BOS before the first).
void SetSegments(const std::vector<ChatPiece>& pieces, v1::GenerateRequest* req);

// The kinds of error every dialect has a name and a status for.
enum class ErrorKind {
  kInvalidRequest,  // 400
  kAuthentication,  // 401
  kPermission,      // 403
  kNotFound,        // 404
  kTooLarge,        // 413
  kRateLimit,       // 429
  kOverloaded,      // 529 (Anthropic) / 503
  kInternal,        // 500
};

struct ApiError {
  ErrorKind kind = ErrorKind::kInternal;
  std::string message;
};

// The kind of a ContextApi or authentication status. RESOURCE_EXHAUSTED from
// ContextApi means a request too large for a limit or the context: bad input.
ApiError ErrorOf(const grpc::Status& s);
// The usual HTTP status of a kind (kOverloaded: 503; Anthropic uses 529).
int HttpStatusOf(ErrorKind kind);

// How deep a request body's arrays and objects may nest. Copying or
// printing a JSON value recurses once a level (nlohmann's parser does not),
// so a body of a few MB nested a million deep would take the thread's stack
// and the daemon with it; real requests (tool schemas included) nest a few
// dozen deep.
inline constexpr int kMaxJsonDepth = 128;

// The request body as a JSON object, or an invalid_request naming the problem
// (not JSON, not an object, nested deeper than kMaxJsonDepth).
Result<nlohmann::json> ParseBody(const httplib::Request& req);

// The JSON text of an answer or an event. Strings echoed from a request (a
// model name from the path, a header, a field's value) may hold bytes that
// are not UTF-8; they are written as U+FFFD instead of throwing (which would
// turn a 4xx into an empty 500).
std::string Dump(const nlohmann::json& j);

// Typed reads of optional fields of a JSON object, each refusing a wrong type
// with a message naming the field ("max_tokens: expected an integer").
Status ReadString(const nlohmann::json& obj, const char* field, std::string* out);
Status ReadNumber(const nlohmann::json& obj, const char* field, double* out);
Status ReadInt(const nlohmann::json& obj, const char* field, int64_t min, int64_t max,
               int64_t* out);
Status ReadBool(const nlohmann::json& obj, const char* field, bool* out);
// A string or an array of strings (stop sequences).
Status ReadStrings(const nlohmann::json& obj, const char* field, std::vector<std::string>* out);

// A call admitted to generate: a pass through the gate and a stream slot of
// its tenant (the idle watchdog sets `idle_cancelled`). Refusals are kRateLimit
// (the tenant's or the daemon's streams are all taken) or kOverloaded
// (shutting down).
struct Admission {
  std::optional<CallGate::Pass> pass;
  std::optional<StreamGuard::Slot> slot;
  std::shared_ptr<std::atomic<bool>> cancelled = std::make_shared<std::atomic<bool>>(false);
};
std::optional<ApiError> Admit(Services& s, const std::string& tenant, Admission* out);
// A pass through the gate only (calls that do not generate).
std::optional<ApiError> Enter(Services& s, std::optional<CallGate::Pass>* pass);

// The header naming the tenant a request acts for, as a gRPC request's
// tenant field does: optional; with API keys it must be the key's own
// tenant (else 403 permission_error); without keys it picks the tenant.
inline constexpr char kTenantHeader[] = "x-kvtier-tenant";

// Authenticates the key (the dialect found it in its header; "" = none),
// acting for the tenant of header x-kvtier-tenant when there is one.
std::optional<ApiError> Authenticate(const Services& s, const httplib::Request& req,
                                     const std::string& key, std::string_view how, Principal* out);

// A GenerateSink over an httplib chunked response: `encode` turns each part
// into the bytes of the dialect's stream (SSE events); `heartbeat` (may be
// empty) is written while no token comes. A failed write, or the watchdog,
// means the client is gone.
class ChunkSink final : public GenerateSink {
 public:
  using Encode = std::function<std::string(const v1::GenerateResponse&)>;
  ChunkSink(httplib::DataSink* sink, Admission* admission, Encode encode, std::string heartbeat);

  bool Send(const v1::GenerateResponse& part) override;
  std::chrono::milliseconds keepalive_interval() const override;
  bool KeepAlive() override;
  // Writes dialect bytes outside Send (the first and last events).
  bool Write(const std::string& bytes);

 private:
  httplib::DataSink* sink_;
  Admission* admission_;
  Encode encode_;
  std::string heartbeat_;
};

// A GenerateSink that keeps the text for a whole (non-streamed) answer.
class CollectSink final : public GenerateSink {
 public:
  bool Send(const v1::GenerateResponse& part) override {
    text_ += part.text();
    return true;
  }
  const std::string& text() const { return text_; }

 private:
  std::string text_;
};

// Unix seconds now.
int64_t NowSeconds(const Services& s);
// "prefix" and 24 random hex digits ("msg_…", "chatcmpl-…").
std::string NewId(std::string_view prefix);

// Each dialect adds its routes.
void AddAnthropicRoutes(httplib::Server& server, Services& s);
void AddOpenAiRoutes(httplib::Server& server, Services& s);
void AddGeminiRoutes(httplib::Server& server, Services& s);

}  // namespace kvtier::http
