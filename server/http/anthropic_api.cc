// Anthropic's Messages API (docs/http-api.md): POST /v1/messages (unary and
// SSE) and POST /v1/messages/count_tokens, with prompt caching by
// cache_control breakpoints and Anthropic's usage fields.
#include <httplib.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "server/http/http_dialect.h"

namespace kvtier::http {
namespace {

using nlohmann::json;

const char* TypeOf(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidRequest:
      return "invalid_request_error";
    case ErrorKind::kAuthentication:
      return "authentication_error";
    case ErrorKind::kPermission:
      return "permission_error";
    case ErrorKind::kNotFound:
      return "not_found_error";
    case ErrorKind::kTooLarge:
      return "request_too_large";
    case ErrorKind::kRateLimit:
      return "rate_limit_error";
    case ErrorKind::kOverloaded:
      return "overloaded_error";
    case ErrorKind::kInternal:
      return "api_error";
  }
  return "api_error";
}

json ErrorBody(const ApiError& e) {
  return {{"type", "error"}, {"error", {{"type", TypeOf(e.kind)}, {"message", e.message}}}};
}

void Reply(httplib::Response& res, const ApiError& e) {
  res.status = e.kind == ErrorKind::kOverloaded ? 529 : HttpStatusOf(e.kind);
  res.set_content(Dump(ErrorBody(e)), "application/json");
}

ApiError Invalid(const Status& s) {
  return {s.code() == StatusCode::kNotFound ? ErrorKind::kNotFound : ErrorKind::kInvalidRequest,
          s.message()};
}

// The key: x-api-key, or Authorization: Bearer (the SDK's auth_token).
std::string KeyOf(const httplib::Request& req) {
  if (req.has_header("x-api-key")) return req.get_header_value("x-api-key");
  const std::string auth = req.get_header_value("authorization");
  constexpr std::string_view kBearer = "Bearer ";
  return auth.rfind(kBearer, 0) == 0 ? auth.substr(kBearer.size()) : "";
}

// {"type": "ephemeral", "ttl": "5m" | "1h"} (ttl defaults to 5m).
Status ReadCacheControl(const json& block, const std::string& where, std::string* ttl) {
  auto it = block.find("cache_control");
  if (it == block.end() || it->is_null()) return Status::Ok();
  if (!it->is_object() || it->value("type", json()) != "ephemeral") {
    return Status::InvalidArgument(where + ".cache_control: expected {\"type\": \"ephemeral\"}");
  }
  const json t = it->value("ttl", json("5m"));
  if (t != "5m" && t != "1h") {
    return Status::InvalidArgument(where + ".cache_control.ttl: must be \"5m\" or \"1h\", not " +
                                   Dump(t));
  }
  *ttl = t.get<std::string>();
  return Status::Ok();
}

// A string, or an array of text blocks (other block types are refused); not
// empty.
Status ReadContent(const json& content, const std::string& where, std::vector<ChatBlock>* out) {
  if (content.is_string()) {
    out->push_back({content.get<std::string>(), ""});
  } else if (content.is_array()) {
    for (size_t i = 0; i < content.size(); ++i) {
      const json& b = content[i];
      const std::string at = where + "[" + std::to_string(i) + "]";
      if (!b.is_object()) return Status::InvalidArgument(at + ": expected a content block object");
      const json type = b.value("type", json());
      if (type != "text") {
        return Status::InvalidArgument(at + ".type: " + Dump(type) +
                                       " is not supported (kvtier serves text blocks only)");
      }
      if (!b.contains("text") || !b["text"].is_string()) {
        return Status::InvalidArgument(at + ".text: expected a string");
      }
      ChatBlock block{b["text"].get<std::string>(), ""};
      KVTIER_RETURN_IF_ERROR(ReadCacheControl(b, at, &block.cache_ttl));
      out->push_back(std::move(block));
    }
  } else {
    return Status::InvalidArgument(where + ": expected a string or an array of content blocks");
  }
  for (const ChatBlock& b : *out) {
    if (!b.text.empty()) return Status::Ok();
  }
  return Status::InvalidArgument(where + ": the content is empty");
}

// A Messages request as a GenerateRequest. `for_count`: count_tokens, which
// takes no max_tokens and ignores sampling.
Status ParseMessages(const Services& s, const json& body, bool for_count, v1::GenerateRequest* req,
                     std::string* model, bool* stream) {
  KVTIER_RETURN_IF_ERROR(ReadString(body, "model", model));
  if (model->empty()) return Status::InvalidArgument("model: required");
  if (!IsServedModel(s, *model)) {
    return Status::NotFound("model: '" + *model + "' is not served here (this server serves '" +
                            s.model_id + "')");
  }
  for (const char* unsupported : {"tools", "tool_choice"}) {
    if (body.contains(unsupported) && !body[unsupported].is_null() &&
        !(body[unsupported].is_array() && body[unsupported].empty())) {
      return Status::InvalidArgument(std::string(unsupported) + ": tools are not supported");
    }
  }
  const int64_t context = s.api.model_config().max_seq_len;
  if (!for_count) {
    if (!body.contains("max_tokens")) return Status::InvalidArgument("max_tokens: required");
    int64_t max_tokens = 0;
    KVTIER_RETURN_IF_ERROR(ReadInt(body, "max_tokens", 1, context, &max_tokens));
    req->set_max_tokens(static_cast<uint32_t>(max_tokens));
    double temperature = 1.0, top_p = 1.0;
    int64_t top_k = 0;
    KVTIER_RETURN_IF_ERROR(ReadNumber(body, "temperature", &temperature));
    if (temperature < 0 || temperature > 1) {
      return Status::InvalidArgument("temperature: must be within 0..1");
    }
    KVTIER_RETURN_IF_ERROR(ReadNumber(body, "top_p", &top_p));
    if (!(top_p > 0 && top_p <= 1)) return Status::InvalidArgument("top_p: must be within (0, 1]");
    KVTIER_RETURN_IF_ERROR(ReadInt(body, "top_k", 0, INT32_MAX, &top_k));
    req->set_temperature(static_cast<float>(temperature));
    req->set_top_p(static_cast<float>(top_p));
    req->set_top_k(static_cast<uint32_t>(top_k));
    std::vector<std::string> stops;
    KVTIER_RETURN_IF_ERROR(ReadStrings(body, "stop_sequences", &stops));
    for (std::string& stop : stops) req->add_stop_sequences(std::move(stop));
    KVTIER_RETURN_IF_ERROR(ReadBool(body, "stream", stream));
    if (body.contains("metadata") && !body["metadata"].is_null()) {
      if (!body["metadata"].is_object())
        return Status::InvalidArgument("metadata: expected an object");
      std::string user;
      KVTIER_RETURN_IF_ERROR(ReadString(body["metadata"], "user_id", &user));
    }
  }

  std::vector<ChatMessage> chat;
  if (body.contains("system") && !body["system"].is_null()) {
    ChatMessage system{"system", {}};
    KVTIER_RETURN_IF_ERROR(ReadContent(body["system"], "system", &system.content));
    chat.push_back(std::move(system));
  }
  if (!body.contains("messages") || !body["messages"].is_array() || body["messages"].empty()) {
    return Status::InvalidArgument("messages: expected a non-empty array");
  }
  const json& messages = body["messages"];
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string at = "messages[" + std::to_string(i) + "]";
    const json& m = messages[i];
    if (!m.is_object()) return Status::InvalidArgument(at + ": expected an object");
    const json role = m.value("role", json());
    if (role != "user" && role != "assistant") {
      return Status::InvalidArgument(at + ".role: must be \"user\" or \"assistant\", not " +
                                     Dump(role));
    }
    ChatMessage msg{role.get<std::string>(), {}};
    if (!m.contains("content")) return Status::InvalidArgument(at + ".content: required");
    KVTIER_RETURN_IF_ERROR(ReadContent(m["content"], at + ".content", &msg.content));
    chat.push_back(std::move(msg));
  }
  // A top-level cache_control marks the end of the last message (automatic
  // caching: the whole conversation so far is written for the next turn).
  std::string last_ttl;
  KVTIER_RETURN_IF_ERROR(ReadCacheControl(body, "request", &last_ttl));
  if (!last_ttl.empty() && chat.back().content.back().cache_ttl.empty()) {
    chat.back().content.back().cache_ttl = last_ttl;
  }
  KVTIER_ASSIGN_OR_RETURN(std::vector<ChatPiece> pieces, RenderChat(s, chat));
  SetSegments(pieces, req);
  return Status::Ok();
}

json UsageJson(const v1::Usage& u) {
  return {{"input_tokens", u.input_tokens()},
          {"cache_creation_input_tokens", u.cache_creation_input_tokens()},
          {"cache_read_input_tokens", u.cache_read_input_tokens()},
          {"cache_creation",
           {{"ephemeral_5m_input_tokens", u.cache_creation().ephemeral_5m_input_tokens()},
            {"ephemeral_1h_input_tokens", u.cache_creation().ephemeral_1h_input_tokens()}}},
          {"output_tokens", u.output_tokens()}};
}

// finish_reason → stop_reason.
std::string StopReason(const std::string& finish) {
  if (finish == "stop_sequence") return "stop_sequence";
  if (finish == "length" || finish == "context") return "max_tokens";
  return "end_turn";
}

json MessageJson(const std::string& id, const std::string& model, const std::string& text,
                 const v1::GenerateResponse& final) {
  json stop_sequence = final.stop_sequence().empty() ? json() : json(final.stop_sequence());
  return {{"id", id},
          {"type", "message"},
          {"role", "assistant"},
          {"model", model},
          {"content", json::array({{{"type", "text"}, {"text", text}}})},
          {"stop_reason", StopReason(final.finish_reason())},
          {"stop_sequence", stop_sequence},
          {"usage", UsageJson(final.usage())}};
}

std::string Event(const char* name, const json& data) {
  return std::string("event: ") + name + "\ndata: " + Dump(data) + "\n\n";
}

// The SSE events of a streamed message (Anthropic's order): message_start
// with the prompt's usage once the engine admits it, a text content block
// of deltas, pings while waiting, then message_delta and message_stop.
class MessageEvents {
 public:
  MessageEvents(std::string id, std::string model) : id_(std::move(id)), model_(std::move(model)) {}

  std::string Start(const v1::Usage& prompt_usage) {
    started_ = true;
    json message = {{"id", id_},
                    {"type", "message"},
                    {"role", "assistant"},
                    {"model", model_},
                    {"content", json::array()},
                    {"stop_reason", nullptr},
                    {"stop_sequence", nullptr},
                    {"usage", UsageJson(prompt_usage)}};
    return Event("message_start", {{"type", "message_start"}, {"message", message}}) +
           Event("content_block_start", {{"type", "content_block_start"},
                                         {"index", 0},
                                         {"content_block", {{"type", "text"}, {"text", ""}}}});
  }
  std::string Delta(const std::string& text) const {
    if (text.empty()) return "";
    return Event("content_block_delta", {{"type", "content_block_delta"},
                                         {"index", 0},
                                         {"delta", {{"type", "text_delta"}, {"text", text}}}});
  }
  std::string Ping() const { return started_ ? Event("ping", {{"type", "ping"}}) : ""; }
  std::string Finish(const v1::GenerateResponse& final) {
    std::string out = started_ ? "" : Start(final.usage());
    out += Delta(final.text());
    json stop_sequence = final.stop_sequence().empty() ? json() : json(final.stop_sequence());
    out += Event("content_block_stop", {{"type", "content_block_stop"}, {"index", 0}});
    out += Event(
        "message_delta",
        {{"type", "message_delta"},
         {"delta",
          {{"stop_reason", StopReason(final.finish_reason())}, {"stop_sequence", stop_sequence}}},
         {"usage", UsageJson(final.usage())}});
    out += Event("message_stop", {{"type", "message_stop"}});
    return out;
  }
  bool started() const { return started_; }

 private:
  std::string id_, model_;
  bool started_ = false;
};

// A ChunkSink that also writes message_start when the prompt's usage is known.
class MessageSink final : public GenerateSink {
 public:
  MessageSink(ChunkSink* chunks, MessageEvents* events) : chunks_(chunks), events_(events) {}
  bool Begin(const v1::Usage& usage) override { return chunks_->Write(events_->Start(usage)); }
  bool Send(const v1::GenerateResponse& part) override { return chunks_->Send(part); }
  std::chrono::milliseconds keepalive_interval() const override {
    return chunks_->keepalive_interval();
  }
  bool KeepAlive() override { return chunks_->KeepAlive() && chunks_->Write(events_->Ping()); }

 private:
  ChunkSink* chunks_;
  MessageEvents* events_;
};

void StreamMessage(Services& s, const Principal& caller, std::shared_ptr<Admission> admission,
                   v1::GenerateRequest req, const std::string& model, httplib::Response& res) {
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [&s, caller, admission, req = std::move(req), model](size_t, httplib::DataSink& out) {
        auto events = std::make_shared<MessageEvents>(NewId("msg_"), model);
        ChunkSink chunks(
            &out, admission.get(),
            [events](const v1::GenerateResponse& part) { return events->Delta(part.text()); }, "");
        MessageSink sink(&chunks, events.get());
        v1::GenerateResponse final;
        grpc::Status st = s.api.Generate(caller, req, &sink, &final);
        if (st.ok()) {
          (void)chunks.Write(events->Finish(final));
        } else {
          (void)chunks.Write(Event("error", ErrorBody(ErrorOf(st))));
        }
        out.done();
        return true;
      });
}

void HandleMessages(Services& s, const httplib::Request& http, httplib::Response& res) {
  Principal caller;
  if (auto e = Authenticate(s, http, KeyOf(http), "header x-api-key", &caller))
    return Reply(res, *e);
  Result<json> body = ParseBody(http);
  if (!body.ok()) return Reply(res, Invalid(body.status()));
  v1::GenerateRequest req;
  std::string model;
  bool stream = false;
  if (Status st = ParseMessages(s, *body, false, &req, &model, &stream); !st.ok()) {
    return Reply(res, Invalid(st));
  }
  // Every check a generation makes, before a byte of the answer is sent.
  uint64_t prompt_tokens = 0;
  if (grpc::Status st = s.api.CheckGeneration(caller, req, &prompt_tokens); !st.ok()) {
    return Reply(res, ErrorOf(st));
  }
  auto admission = std::make_shared<Admission>();
  if (auto e = Admit(s, caller.tenant, admission.get())) return Reply(res, *e);
  if (stream) return StreamMessage(s, caller, admission, std::move(req), model, res);
  CollectSink sink;
  v1::GenerateResponse final;
  if (grpc::Status st = s.api.Generate(caller, req, &sink, &final); !st.ok()) {
    return Reply(res, ErrorOf(st));
  }
  res.set_content(Dump(MessageJson(NewId("msg_"), model, sink.text() + final.text(), final)),
                  "application/json");
}

void HandleCountTokens(Services& s, const httplib::Request& http, httplib::Response& res) {
  Principal caller;
  if (auto e = Authenticate(s, http, KeyOf(http), "header x-api-key", &caller))
    return Reply(res, *e);
  Result<json> body = ParseBody(http);
  if (!body.ok()) return Reply(res, Invalid(body.status()));
  v1::GenerateRequest req;
  std::string model;
  bool stream = false;
  if (Status st = ParseMessages(s, *body, true, &req, &model, &stream); !st.ok()) {
    return Reply(res, Invalid(st));
  }
  std::optional<CallGate::Pass> pass;
  if (auto e = Enter(s, &pass)) return Reply(res, *e);
  uint64_t tokens = 0;
  if (grpc::Status st = s.api.CountTokens(caller, req, &tokens); !st.ok()) {
    return Reply(res, ErrorOf(st));
  }
  res.set_content(Dump(json{{"input_tokens", tokens}}), "application/json");
}

}  // namespace

void AddAnthropicRoutes(httplib::Server& server, Services& s) {
  server.Post("/v1/messages", [&s](const httplib::Request& req, httplib::Response& res) {
    HandleMessages(s, req, res);
  });
  server.Post("/v1/messages/count_tokens",
              [&s](const httplib::Request& req, httplib::Response& res) {
                HandleCountTokens(s, req, res);
              });
}

}  // namespace kvtier::http
