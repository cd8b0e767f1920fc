// OpenAI's Chat Completions and (legacy) Completions APIs (docs/http-api.md):
// POST /v1/chat/completions and POST /v1/completions, unary and SSE, with
// automatic prefix caching (OpenAI has no cache_control): the rendered chat
// runs as one prompt, its cached prefix is reported as
// usage.prompt_tokens_details.cached_tokens, and prompt_cache_key (or vLLM's
// cache_salt) partitions the caller's cache within its tenant.
#include <httplib.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "server/http/http_dialect.h"

namespace kvtier::http {
namespace {

using nlohmann::json;

// A chat without max_tokens may use the rest of the context, but no more
// than this: an unbounded default would let one forgotten field hold a
// stream slot for the whole context.
constexpr int64_t kDefaultChatMaxTokens = 4096;
// OpenAI's default for /v1/completions.
constexpr int64_t kDefaultCompletionMaxTokens = 16;
constexpr size_t kMaxStops = 4;

const char* TypeOf(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidRequest:
    case ErrorKind::kAuthentication:  // OpenAI's type for a bad key, with code invalid_api_key
    case ErrorKind::kTooLarge:
      return "invalid_request_error";
    case ErrorKind::kPermission:
      return "permission_error";
    case ErrorKind::kNotFound:
      return "not_found_error";
    case ErrorKind::kRateLimit:
      return "rate_limit_exceeded";
    case ErrorKind::kOverloaded:
    case ErrorKind::kInternal:
      return "server_error";
  }
  return "server_error";
}

// OpenAI's machine-readable code, or null.
json CodeOf(const ApiError& e) {
  switch (e.kind) {
    case ErrorKind::kAuthentication:
      return "invalid_api_key";
    case ErrorKind::kNotFound:
      return e.message.rfind("model:", 0) == 0 ? json("model_not_found") : json();
    case ErrorKind::kRateLimit:
      return "rate_limit_exceeded";
    case ErrorKind::kTooLarge:
      return "request_too_large";
    default:
      return json();
  }
}

// The field a message names first ("max_tokens: ..." → "max_tokens"), or null.
json ParamOf(const ApiError& e) {
  if (e.kind != ErrorKind::kInvalidRequest && e.kind != ErrorKind::kNotFound) return json();
  const size_t colon = e.message.find(": ");
  if (colon == std::string::npos || e.message.find(' ') < colon) return json();
  return e.message.substr(0, colon);
}

json ErrorBody(const ApiError& e) {
  return {{"error",
           {{"message", e.message},
            {"type", TypeOf(e.kind)},
            {"param", ParamOf(e)},
            {"code", CodeOf(e)}}}};
}

void Reply(httplib::Response& res, const ApiError& e) {
  res.status = HttpStatusOf(e.kind);
  res.set_content(Dump(ErrorBody(e)), "application/json");
}

ApiError Invalid(const Status& s) {
  return {s.code() == StatusCode::kNotFound ? ErrorKind::kNotFound : ErrorKind::kInvalidRequest,
          s.message()};
}

// Authorization: Bearer KEY.
std::string KeyOf(const httplib::Request& req) {
  const std::string auth = req.get_header_value("authorization");
  constexpr std::string_view kBearer = "Bearer ";
  return auth.rfind(kBearer, 0) == 0 ? auth.substr(kBearer.size()) : "";
}

bool Given(const json& body, const char* field) {
  auto it = body.find(field);
  return it != body.end() && !it->is_null();
}

// The two endpoints differ in their prompt, their default max_tokens and
// the shape of their answer.
enum class Endpoint { kChat, kCompletion };

// What a request asks of the answer besides the GenerateRequest.
struct Ask {
  std::string model;
  bool stream = false;
  bool include_usage = false;
  bool default_max_tokens = false;  // chat without max_tokens: set once the prompt is counted
};

// A string, or an array of {type: "text", text} parts.
Status ReadContent(const json& content, const std::string& where, std::vector<ChatBlock>* out) {
  if (content.is_string()) {
    out->push_back({content.get<std::string>(), ""});
    return Status::Ok();
  }
  if (!content.is_array()) {
    return Status::InvalidArgument(where + ": expected a string or an array of content parts");
  }
  for (size_t i = 0; i < content.size(); ++i) {
    const json& part = content[i];
    const std::string at = where + "[" + std::to_string(i) + "]";
    if (!part.is_object()) return Status::InvalidArgument(at + ": expected a content part object");
    const json type = part.value("type", json());
    if (type != "text") {
      return Status::InvalidArgument(at + ".type: " + Dump(type) +
                                     " is not supported (kvtier serves text parts only)");
    }
    if (!part.contains("text") || !part["text"].is_string()) {
      return Status::InvalidArgument(at + ".text: expected a string");
    }
    out->push_back({part["text"].get<std::string>(), ""});
  }
  return Status::Ok();
}

// messages → the chat, developer messages being system messages.
Status ReadMessages(const json& body, std::vector<ChatMessage>* chat) {
  if (!body.contains("messages") || !body["messages"].is_array() || body["messages"].empty()) {
    return Status::InvalidArgument("messages: expected a non-empty array");
  }
  const json& messages = body["messages"];
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string at = "messages[" + std::to_string(i) + "]";
    const json& m = messages[i];
    if (!m.is_object()) return Status::InvalidArgument(at + ": expected an object");
    const json role = m.value("role", json());
    if (role != "system" && role != "developer" && role != "user" && role != "assistant") {
      return Status::InvalidArgument(
          at + ".role: must be \"system\", \"developer\", \"user\" or \"assistant\", not " +
          Dump(role));
    }
    for (const char* unsupported : {"tool_calls", "function_call"}) {
      if (Given(m, unsupported)) {
        return Status::InvalidArgument(at + "." + unsupported + ": tools are not supported");
      }
    }
    ChatMessage msg{role == "developer" ? "system" : role.get<std::string>(), {}};
    if (!Given(m, "content")) return Status::InvalidArgument(at + ".content: required");
    KVTIER_RETURN_IF_ERROR(ReadContent(m["content"], at + ".content", &msg.content));
    chat->push_back(std::move(msg));
  }
  return Status::Ok();
}

// The chat rendered by the model's template as ONE prompt: OpenAI has no
// breakpoints, so the engine's automatic prefix cache serves it (hits are
// reads, nothing is billed as a write).
Status SetChatPrompt(const Services& s, const json& body, v1::GenerateRequest* req) {
  std::vector<ChatMessage> chat;
  KVTIER_RETURN_IF_ERROR(ReadMessages(body, &chat));
  KVTIER_ASSIGN_OR_RETURN(std::vector<ChatPiece> pieces, RenderChat(s, chat));
  std::string prompt;
  for (const ChatPiece& p : pieces) prompt += p.text;
  req->set_prompt(std::move(prompt));
  return Status::Ok();
}

Status SetCompletionPrompt(const json& body, v1::GenerateRequest* req) {
  if (!body.contains("prompt")) return Status::InvalidArgument("prompt: required");
  if (!body["prompt"].is_string()) {
    return Status::InvalidArgument(
        "prompt: expected a string (arrays of prompts or of token ids are not supported)");
  }
  req->set_prompt(body["prompt"].get<std::string>());
  return Status::Ok();
}

// Fields kvtier does not serve, refused rather than silently ignored.
Status RefuseUnsupported(const json& body, Endpoint endpoint) {
  for (const char* tools : {"tools", "tool_choice", "functions", "function_call"}) {
    if (Given(body, tools) && !(body[tools].is_array() && body[tools].empty())) {
      return Status::InvalidArgument(std::string(tools) + ": tools are not supported");
    }
  }
  const bool logprobs = Given(body, "logprobs") && body["logprobs"] != false &&
                        !(endpoint == Endpoint::kCompletion && body["logprobs"] == 0);
  if (logprobs) return Status::InvalidArgument("logprobs: not supported");
  if (endpoint == Endpoint::kCompletion) {
    if (Given(body, "echo") && body["echo"] != false) {
      return Status::InvalidArgument("echo: not supported");
    }
    if (Given(body, "suffix")) return Status::InvalidArgument("suffix: not supported");
  }
  return Status::Ok();
}

// max_tokens / max_completion_tokens, temperature, top_p, stop, seed, n.
Status ReadSampling(const Services& s, const json& body, Endpoint endpoint,
                    v1::GenerateRequest* req, Ask* ask) {
  const int64_t context = s.api.model_config().max_seq_len;
  int64_t max_tokens = 0;
  KVTIER_RETURN_IF_ERROR(ReadInt(body, "max_tokens", 1, context, &max_tokens));
  KVTIER_RETURN_IF_ERROR(ReadInt(body, "max_completion_tokens", 1, context, &max_tokens));
  if (max_tokens == 0 && endpoint == Endpoint::kCompletion) {
    max_tokens = kDefaultCompletionMaxTokens;
  }
  ask->default_max_tokens = max_tokens == 0;
  req->set_max_tokens(static_cast<uint32_t>(max_tokens));

  double temperature = 1.0, top_p = 1.0;
  KVTIER_RETURN_IF_ERROR(ReadNumber(body, "temperature", &temperature));
  if (temperature < 0 || temperature > 2) {
    return Status::InvalidArgument("temperature: must be within 0..2");
  }
  KVTIER_RETURN_IF_ERROR(ReadNumber(body, "top_p", &top_p));
  if (!(top_p > 0 && top_p <= 1)) return Status::InvalidArgument("top_p: must be within (0, 1]");
  req->set_temperature(static_cast<float>(temperature));
  req->set_top_p(static_cast<float>(top_p));

  std::vector<std::string> stops;
  KVTIER_RETURN_IF_ERROR(ReadStrings(body, "stop", &stops));
  if (stops.size() > kMaxStops) {
    return Status::InvalidArgument("stop: at most " + std::to_string(kMaxStops) + " sequences");
  }
  for (std::string& stop : stops) req->add_stop_sequences(std::move(stop));

  int64_t seed = 0;
  KVTIER_RETURN_IF_ERROR(ReadInt(body, "seed", INT64_MIN, INT64_MAX, &seed));
  req->set_seed(static_cast<uint64_t>(seed));
  int64_t n = 1;
  KVTIER_RETURN_IF_ERROR(ReadInt(body, "n", INT64_MIN, INT64_MAX, &n));
  if (n != 1)
    return Status::InvalidArgument("n: only 1 choice is supported, not " + std::to_string(n));
  return Status::Ok();
}

// stream and stream_options.include_usage.
Status ReadStreaming(const json& body, Ask* ask) {
  KVTIER_RETURN_IF_ERROR(ReadBool(body, "stream", &ask->stream));
  if (!Given(body, "stream_options")) return Status::Ok();
  if (!ask->stream) {
    return Status::InvalidArgument("stream_options: only allowed when stream is true");
  }
  if (!body["stream_options"].is_object()) {
    return Status::InvalidArgument("stream_options: expected an object");
  }
  Status st = ReadBool(body["stream_options"], "include_usage", &ask->include_usage);
  if (!st.ok()) return Status::InvalidArgument("stream_options." + st.message());
  return Status::Ok();
}

// prompt_cache_key (OpenAI) or cache_salt (vLLM): one key, scoped to the
// caller's tenant by ContextApi.
Status ReadCacheKey(const json& body, v1::GenerateRequest* req) {
  std::string key, salt, user;
  KVTIER_RETURN_IF_ERROR(ReadString(body, "prompt_cache_key", &key));
  KVTIER_RETURN_IF_ERROR(ReadString(body, "cache_salt", &salt));
  KVTIER_RETURN_IF_ERROR(ReadString(body, "user", &user));  // accepted, not used
  if (!key.empty() && !salt.empty() && key != salt) {
    return Status::InvalidArgument("cache_salt: differs from prompt_cache_key (give one)");
  }
  req->set_cache_key(key.empty() ? salt : key);
  return Status::Ok();
}

// A request of either endpoint as a GenerateRequest.
Status ParseRequest(const Services& s, const json& body, Endpoint endpoint,
                    v1::GenerateRequest* req, Ask* ask) {
  KVTIER_RETURN_IF_ERROR(ReadString(body, "model", &ask->model));
  if (ask->model.empty()) return Status::InvalidArgument("model: required");
  if (!IsServedModel(s, ask->model)) {
    return Status::NotFound("model: '" + ask->model + "' is not served here (this server serves '" +
                            s.model_id + "')");
  }
  KVTIER_RETURN_IF_ERROR(RefuseUnsupported(body, endpoint));
  KVTIER_RETURN_IF_ERROR(ReadSampling(s, body, endpoint, req, ask));
  KVTIER_RETURN_IF_ERROR(ReadStreaming(body, ask));
  KVTIER_RETURN_IF_ERROR(ReadCacheKey(body, req));
  return endpoint == Endpoint::kChat ? SetChatPrompt(s, body, req) : SetCompletionPrompt(body, req);
}

// OpenAI's usage: the prompt whole (input, cache reads and writes together),
// its cached part, and the completion.
json UsageJson(const v1::Usage& u) {
  const uint64_t prompt =
      u.input_tokens() + u.cache_read_input_tokens() + u.cache_creation_input_tokens();
  return {{"prompt_tokens", prompt},
          {"completion_tokens", u.output_tokens()},
          {"total_tokens", prompt + u.output_tokens()},
          {"prompt_tokens_details", {{"cached_tokens", u.cache_read_input_tokens()}}}};
}

// finish_reason: "length" when max_tokens or the context ended it, "stop"
// for EOS or a stop sequence.
std::string FinishReason(const std::string& finish) {
  return finish == "length" || finish == "context" ? "length" : "stop";
}

// What both endpoints put in each answer and chunk.
json Envelope(Endpoint endpoint, bool chunk, const std::string& id, int64_t created,
              const std::string& model) {
  const char* object = endpoint == Endpoint::kChat
                           ? (chunk ? "chat.completion.chunk" : "chat.completion")
                           : "text_completion";
  return {{"id", id}, {"object", object}, {"created", created}, {"model", model}};
}

// A choice: the message (chat) or text (completions), and its finish reason
// (null while streaming).
json Choice(Endpoint endpoint, bool chunk, const json& content, const json& finish) {
  json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish}};
  if (endpoint == Endpoint::kCompletion) {
    choice["text"] = content.is_null() ? json("") : content;
  } else if (chunk) {
    choice["delta"] = content.is_null() ? json::object() : json{{"content", content}};
  } else {
    choice["message"] = {{"role", "assistant"}, {"content", content}};
  }
  return choice;
}

json AnswerJson(Endpoint endpoint, const std::string& id, int64_t created, const std::string& model,
                const std::string& text, const v1::GenerateResponse& final) {
  json answer = Envelope(endpoint, false, id, created, model);
  answer["choices"] =
      json::array({Choice(endpoint, false, text, FinishReason(final.finish_reason()))});
  answer["usage"] = UsageJson(final.usage());
  return answer;
}

std::string Data(const json& data) { return "data: " + Dump(data) + "\n\n"; }

// The SSE chunks of a streamed answer (OpenAI's order): for chat, a first
// chunk opening the assistant's message once the engine admits the prompt;
// content chunks; a last chunk with the finish reason; with include_usage a
// chunk with no choices and the usage (every other chunk has "usage": null);
// then data: [DONE].
class AnswerChunks {
 public:
  AnswerChunks(Endpoint endpoint, const Services& s, std::string model, bool include_usage)
      : endpoint_(endpoint),
        id_(NewId(endpoint == Endpoint::kChat ? "chatcmpl-" : "cmpl-")),
        created_(NowSeconds(s)),
        model_(std::move(model)),
        include_usage_(include_usage) {}

  std::string Start() {
    if (started_) return "";
    started_ = true;
    if (endpoint_ != Endpoint::kChat) return "";
    json first = Chunk(json::array({Choice(endpoint_, true, "", nullptr)}));
    first["choices"][0]["delta"]["role"] = "assistant";
    return Data(first);
  }
  std::string Delta(const std::string& text) const {
    if (text.empty()) return "";
    return Data(Chunk(json::array({Choice(endpoint_, true, text, nullptr)})));
  }
  std::string Finish(const v1::GenerateResponse& final) {
    std::string out = Start() + Delta(final.text());
    out += Data(Chunk(
        json::array({Choice(endpoint_, true, nullptr, FinishReason(final.finish_reason()))})));
    if (include_usage_) {
      json usage = Chunk(json::array());
      usage["usage"] = UsageJson(final.usage());
      out += Data(usage);
    }
    return out + Done();
  }
  static std::string Error(const ApiError& e) { return Data(ErrorBody(e)) + Done(); }

 private:
  static std::string Done() { return "data: [DONE]\n\n"; }
  json Chunk(json choices) const {
    json chunk = Envelope(endpoint_, true, id_, created_, model_);
    chunk["choices"] = std::move(choices);
    if (include_usage_) chunk["usage"] = nullptr;
    return chunk;
  }

  Endpoint endpoint_;
  std::string id_;
  int64_t created_;
  std::string model_;
  bool include_usage_;
  bool started_ = false;
};

// A ChunkSink that opens the answer when the engine admits the prompt.
class AnswerSink final : public GenerateSink {
 public:
  AnswerSink(ChunkSink* chunks, AnswerChunks* answer) : chunks_(chunks), answer_(answer) {}
  bool Begin(const v1::Usage&) override { return chunks_->Write(answer_->Start()); }
  bool Send(const v1::GenerateResponse& part) override { return chunks_->Send(part); }
  std::chrono::milliseconds keepalive_interval() const override {
    return chunks_->keepalive_interval();
  }
  bool KeepAlive() override { return chunks_->KeepAlive(); }

 private:
  ChunkSink* chunks_;
  AnswerChunks* answer_;
};

void StreamAnswer(Services& s, Endpoint endpoint, const Principal& caller,
                  std::shared_ptr<Admission> admission, v1::GenerateRequest req, const Ask& ask,
                  httplib::Response& res) {
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [&s, endpoint, caller, admission, req = std::move(req), ask](size_t, httplib::DataSink& out) {
        auto answer = std::make_shared<AnswerChunks>(endpoint, s, ask.model, ask.include_usage);
        // An SSE comment while no token comes: clients skip it, and a failed
        // write tells a client that went away.
        ChunkSink chunks(
            &out, admission.get(),
            [answer](const v1::GenerateResponse& part) { return answer->Delta(part.text()); },
            ": ping\n\n");
        AnswerSink sink(&chunks, answer.get());
        v1::GenerateResponse final;
        grpc::Status st = s.api.Generate(caller, req, &sink, &final);
        (void)chunks.Write(st.ok() ? answer->Finish(final) : AnswerChunks::Error(ErrorOf(st)));
        out.done();
        return true;
      });
}

// Refuses a prompt the context cannot hold (before a stream begins, so the
// client gets a 400, not an error chunk), and sets a chat's default
// max_tokens: the rest of the context, at most kDefaultChatMaxTokens.
Status FitMaxTokens(const Services& s, Endpoint endpoint, uint64_t prompt_tokens, const Ask& ask,
                    v1::GenerateRequest* req) {
  const int64_t context = s.api.model_config().max_seq_len;
  const int64_t rest = context - static_cast<int64_t>(prompt_tokens);
  if (rest < 0) {
    return Status::InvalidArgument(
        std::string(endpoint == Endpoint::kChat ? "messages" : "prompt") + ": " +
        std::to_string(prompt_tokens) + " prompt tokens exceed the model's context of " +
        std::to_string(context));
  }
  if (ask.default_max_tokens) {
    req->set_max_tokens(static_cast<uint32_t>(std::clamp<int64_t>(rest, 1, kDefaultChatMaxTokens)));
  }
  return Status::Ok();
}

void HandleGenerate(Services& s, Endpoint endpoint, const httplib::Request& http,
                    httplib::Response& res) {
  Principal caller;
  if (auto e = Authenticate(s, http, KeyOf(http), "header Authorization: Bearer", &caller)) {
    return Reply(res, *e);
  }
  Result<json> body = ParseBody(http);
  if (!body.ok()) return Reply(res, Invalid(body.status()));
  v1::GenerateRequest req;
  Ask ask;
  if (Status st = ParseRequest(s, *body, endpoint, &req, &ask); !st.ok()) {
    return Reply(res, Invalid(st));
  }
  // Every check a generation makes, before a byte of the answer is sent.
  uint64_t prompt_tokens = 0;
  if (grpc::Status st = s.api.CountTokens(caller, req, &prompt_tokens); !st.ok()) {
    return Reply(res, ErrorOf(st));
  }
  if (Status st = FitMaxTokens(s, endpoint, prompt_tokens, ask, &req); !st.ok()) {
    return Reply(res, Invalid(st));
  }
  // A stream's answer starts with 200: the engine's checks come first.
  if (ask.stream) {
    if (grpc::Status st = s.api.CheckGeneration(caller, req, &prompt_tokens); !st.ok()) {
      return Reply(res, ErrorOf(st));
    }
  }
  auto admission = std::make_shared<Admission>();
  if (auto e = Admit(s, caller.tenant, admission.get())) return Reply(res, *e);
  if (ask.stream) return StreamAnswer(s, endpoint, caller, admission, std::move(req), ask, res);
  CollectSink sink;
  v1::GenerateResponse final;
  if (grpc::Status st = s.api.Generate(caller, req, &sink, &final); !st.ok()) {
    return Reply(res, ErrorOf(st));
  }
  const std::string id = NewId(endpoint == Endpoint::kChat ? "chatcmpl-" : "cmpl-");
  res.set_content(
      Dump(AnswerJson(endpoint, id, NowSeconds(s), ask.model, sink.text() + final.text(), final)),
      "application/json");
}

}  // namespace

void AddOpenAiRoutes(httplib::Server& server, Services& s) {
  server.Post("/v1/chat/completions", [&s](const httplib::Request& req, httplib::Response& res) {
    HandleGenerate(s, Endpoint::kChat, req, res);
  });
  server.Post("/v1/completions", [&s](const httplib::Request& req, httplib::Response& res) {
    HandleGenerate(s, Endpoint::kCompletion, req, res);
  });
}

}  // namespace kvtier::http
