#include "server/http/http_api.h"

#include <httplib.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <random>
#include <utility>

#include "common/log.h"
#include "server/http/http_dialect.h"
#include "server/listen_address.h"

namespace kvtier {
namespace http {

ApiError ErrorOf(const grpc::Status& s) {
  if (s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED && s.error_details() == kBusyDetail) {
    return {ErrorKind::kRateLimit, s.error_message()};  // busy: retry later
  }
  switch (s.error_code()) {
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::OUT_OF_RANGE:
    case grpc::StatusCode::RESOURCE_EXHAUSTED:  // a limit or the context: the request is too big
      return {ErrorKind::kInvalidRequest, s.error_message()};
    case grpc::StatusCode::UNAUTHENTICATED:
      return {ErrorKind::kAuthentication, s.error_message()};
    case grpc::StatusCode::PERMISSION_DENIED:
      return {ErrorKind::kPermission, s.error_message()};
    case grpc::StatusCode::NOT_FOUND:
      return {ErrorKind::kNotFound, s.error_message()};
    case grpc::StatusCode::UNAVAILABLE:
      return {ErrorKind::kOverloaded, s.error_message()};
    default:
      return {ErrorKind::kInternal, s.error_message()};
  }
}

int HttpStatusOf(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidRequest:
      return 400;
    case ErrorKind::kAuthentication:
      return 401;
    case ErrorKind::kPermission:
      return 403;
    case ErrorKind::kNotFound:
      return 404;
    case ErrorKind::kTooLarge:
      return 413;
    case ErrorKind::kRateLimit:
      return 429;
    case ErrorKind::kOverloaded:
      return 503;
    case ErrorKind::kInternal:
      return 500;
  }
  return 500;
}

Result<nlohmann::json> ParseBody(const httplib::Request& req) {
  bool too_deep = false;
  // Values past the depth are dropped as they are parsed (so none is built),
  // and the body is refused.
  const auto limit_depth = [&too_deep](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
    if (depth > kMaxJsonDepth) too_deep = true;
    return !too_deep;
  };
  nlohmann::json j = nlohmann::json::parse(req.body, limit_depth, /*allow_exceptions=*/false);
  if (too_deep) {
    return Status::InvalidArgument("the request body nests deeper than " +
                                   std::to_string(kMaxJsonDepth) + " levels");
  }
  if (j.is_discarded()) return Status::InvalidArgument("the request body is not valid JSON");
  if (!j.is_object()) return Status::InvalidArgument("the request body must be a JSON object");
  return j;
}

std::string Dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', /*ensure_ascii=*/false, nlohmann::json::error_handler_t::replace);
}

namespace {

Status WrongType(const char* field, const char* want) {
  return Status::InvalidArgument(std::string(field) + ": expected " + want);
}

}  // namespace

Status ReadString(const nlohmann::json& obj, const char* field, std::string* out) {
  auto it = obj.find(field);
  if (it == obj.end() || it->is_null()) return Status::Ok();
  if (!it->is_string()) return WrongType(field, "a string");
  *out = it->get<std::string>();
  return Status::Ok();
}

Status ReadNumber(const nlohmann::json& obj, const char* field, double* out) {
  auto it = obj.find(field);
  if (it == obj.end() || it->is_null()) return Status::Ok();
  if (!it->is_number()) return WrongType(field, "a number");
  *out = it->get<double>();
  return Status::Ok();
}

Status ReadInt(const nlohmann::json& obj, const char* field, int64_t min, int64_t max,
               int64_t* out) {
  auto it = obj.find(field);
  if (it == obj.end() || it->is_null()) return Status::Ok();
  if (!it->is_number_integer()) return WrongType(field, "an integer");
  const int64_t v = it->get<int64_t>();
  if (v < min || v > max) {
    return Status::InvalidArgument(std::string(field) + ": " + std::to_string(v) + " is outside " +
                                   std::to_string(min) + ".." + std::to_string(max));
  }
  *out = v;
  return Status::Ok();
}

Status ReadBool(const nlohmann::json& obj, const char* field, bool* out) {
  auto it = obj.find(field);
  if (it == obj.end() || it->is_null()) return Status::Ok();
  if (!it->is_boolean()) return WrongType(field, "true or false");
  *out = it->get<bool>();
  return Status::Ok();
}

Status ReadStrings(const nlohmann::json& obj, const char* field, std::vector<std::string>* out) {
  auto it = obj.find(field);
  if (it == obj.end() || it->is_null()) return Status::Ok();
  if (it->is_string()) {
    out->push_back(it->get<std::string>());
    return Status::Ok();
  }
  if (!it->is_array()) return WrongType(field, "a string or an array of strings");
  for (const nlohmann::json& v : *it) {
    if (!v.is_string()) return WrongType(field, "an array of strings");
    out->push_back(v.get<std::string>());
  }
  return Status::Ok();
}

std::optional<ApiError> Enter(Services& s, std::optional<CallGate::Pass>* pass) {
  std::optional<CallGate::Pass> entered = s.gate.Enter();
  if (!entered) return ApiError{ErrorKind::kOverloaded, "kvtierd is shutting down"};
  pass->emplace(std::move(*entered));
  return std::nullopt;
}

std::optional<ApiError> Admit(Services& s, const std::string& tenant, Admission* out) {
  if (auto e = Enter(s, &out->pass)) return e;
  // The watchdog ends a stream whose client stopped reading: the next write
  // or heartbeat sees the flag and gives up.
  // A tenant at its own limit is rate limited (429); a daemon serving its
  // limit of streams is overloaded (529 in Anthropic's dialect, 503 elsewhere).
  StreamGuard::Limit refused_by = StreamGuard::Limit::kTenant;
  Result<StreamGuard::Slot> slot = s.gate.streams().Admit(
      tenant, [flag = out->cancelled] { flag->store(true); }, &refused_by);
  if (!slot.ok()) {
    return ApiError{
        refused_by == StreamGuard::Limit::kDaemon ? ErrorKind::kOverloaded : ErrorKind::kRateLimit,
        slot.status().message()};
  }
  out->slot.emplace(std::move(*slot));
  return std::nullopt;
}

std::optional<ApiError> Authenticate(const Services& s, const httplib::Request& req,
                                     const std::string& key, std::string_view how, Principal* out) {
  grpc::Status st = s.auth.AuthenticateKey(key, req.get_header_value(kTenantHeader), how, out);
  if (!st.ok()) return ErrorOf(st);
  return std::nullopt;
}

ChunkSink::ChunkSink(httplib::DataSink* sink, Admission* admission, Encode encode,
                     std::string heartbeat)
    : sink_(sink),
      admission_(admission),
      encode_(std::move(encode)),
      heartbeat_(std::move(heartbeat)) {}

bool ChunkSink::Write(const std::string& bytes) {
  if (admission_->cancelled->load()) return false;
  if (bytes.empty()) return true;
  return admission_->slot->OnClient([&] { return sink_->write(bytes.data(), bytes.size()); });
}

bool ChunkSink::Send(const v1::GenerateResponse& part) { return Write(encode_(part)); }

std::chrono::milliseconds ChunkSink::keepalive_interval() const {
  return std::chrono::milliseconds(1000);
}

bool ChunkSink::KeepAlive() {
  if (admission_->cancelled->load() || !sink_->is_writable()) return false;
  return Write(heartbeat_);
}

int64_t NowSeconds(const Services& s) { return s.clock->NowMs() / 1000; }

bool IsServedModel(const Services& s, const std::string& model) {
  const std::string& full = s.api.model();
  return model == s.model_id || model == full || model == full.substr(0, full.find('@'));
}

Result<std::vector<ChatPiece>> RenderChat(const Services& s, const std::vector<ChatMessage>& m) {
  return s.chat.Render(m);
}

void SetSegments(const std::vector<ChatPiece>& pieces, v1::GenerateRequest* req) {
  for (const ChatPiece& p : pieces) {
    v1::Segment* seg = req->add_segments();
    seg->set_text(p.text);
    if (!p.cache_ttl.empty()) seg->mutable_cache_control()->set_ttl(p.cache_ttl);
  }
}

std::string NewId(std::string_view prefix) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[32];
  std::snprintf(buf, sizeof buf, "%016llx%08llx", static_cast<unsigned long long>(rng()),
                static_cast<unsigned long long>(rng() & 0xffffffffu));
  return std::string(prefix) + buf;
}

namespace {

// GET /v1/models in the shape the client asks for: Anthropic's SDK sends
// anthropic-version, everyone else gets OpenAI's.
void AddServerRoutes(httplib::Server& server, Services& s) {
  server.Get("/health", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("{\"status\":\"ok\"}", "application/json");
  });
  server.Get("/v1/models", [&s](const httplib::Request& req, httplib::Response& res) {
    nlohmann::json j;
    if (req.has_header("anthropic-version")) {
      j = {{"data",
            {{{"id", s.model_id},
              {"type", "model"},
              {"display_name", s.model_id},
              {"created_at", "1970-01-01T00:00:00Z"}}}},
           {"has_more", false},
           {"first_id", s.model_id},
           {"last_id", s.model_id}};
    } else {
      j = {{"object", "list"},
           {"data",
            {{{"id", s.model_id}, {"object", "model"}, {"created", 0}, {"owned_by", "kvtier"}}}}};
    }
    res.set_content(Dump(j), "application/json");
  });
}

// The route a request matched, for metrics: one of a fixed set of labels
// (paths with ids collapse; any other method, path or Gemini method is
// "other"), so that no client can grow the counters' label set or put its
// bytes in a label.
std::string EndpointOf(const httplib::Request& req) {
  static const char* methods[] = {"GET", "POST", "PATCH", "DELETE"};
  const char* method = nullptr;
  for (const char* m : methods) {
    if (req.method == m) method = m;
  }
  if (method == nullptr) return "other";
  const std::string& p = req.path;
  if (p.rfind("/v1beta/cachedContents/", 0) == 0)
    return std::string(method) + " /v1beta/cachedContents/{id}";
  if (p.rfind("/v1beta/models/", 0) == 0) {
    static const char* gemini[] = {":generateContent", ":streamGenerateContent", ":countTokens"};
    const size_t colon = p.rfind(':');
    const std::string call = colon == std::string::npos ? "" : p.substr(colon);
    for (const char* g : gemini) {
      if (call == g) return std::string(method) + " /v1beta/models/{model}" + g;
    }
    return "other";
  }
  static const char* known[] = {"/health",
                                "/v1/models",
                                "/v1/messages",
                                "/v1/messages/count_tokens",
                                "/v1/chat/completions",
                                "/v1/completions",
                                "/v1beta/cachedContents"};
  for (const char* k : known) {
    if (p == k) return std::string(method) + " " + p;
  }
  return "other";
}

}  // namespace
}  // namespace http

Result<std::unique_ptr<HttpApi>> HttpApi::Start(const HttpApiOptions& options, ContextApi& api,
                                                const Authenticator& auth, CallGate& gate,
                                                Clock* clock) {
  if (options.threads < 1 || options.threads > 1024) {
    return Status::InvalidArgument("--http-threads must be 1..1024, not " +
                                   std::to_string(options.threads));
  }
  if (options.client_timeout_s < 1 || options.client_timeout_s > 600) {
    return Status::InvalidArgument("HTTP client timeout must be 1..600 s");
  }
  std::string host;
  int port = 0;
  KVTIER_RETURN_IF_ERROR(
      ParseListenAddress(options.listen, "--http-listen", "127.0.0.1:8000", &host, &port));

  KVTIER_ASSIGN_OR_RETURN(ChatTemplate chat, ChatTemplate::ForModel(options.model_dir));
  std::unique_ptr<HttpApi> self(new HttpApi());
  auto services = std::make_shared<http::Services>(http::Services{
      api, auth, gate, clock, options,
      options.served_model_name.empty() ? api.model().substr(0, api.model().find('@'))
                                        : options.served_model_name,
      chat});
  try {
    auto server = std::make_unique<httplib::Server>();
    const size_t threads = static_cast<size_t>(options.threads);
    server->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
    server->set_socket_options([](socket_t sock) {
      int yes = 1;
      setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    });
    server->set_read_timeout(options.client_timeout_s, 0);
    server->set_write_timeout(options.client_timeout_s, 0);
    server->set_keep_alive_timeout(5);
    server->set_payload_max_length(options.max_body_bytes);
    HttpApi* raw = self.get();
    server->set_logger([raw](const httplib::Request& req, const httplib::Response& res) {
      raw->Count(http::EndpointOf(req), res.status);
    });
    http::AddServerRoutes(*server, *services);
    http::AddAnthropicRoutes(*server, *services);
    http::AddOpenAiRoutes(*server, *services);
    http::AddGeminiRoutes(*server, *services);
    // Services must outlive the routes: the server's handlers hold it.
    server->set_error_handler([services](const httplib::Request&, httplib::Response& res) {
      if (!res.body.empty()) return;
      if (res.status == 413) {
        res.set_content(
            "{\"error\":{\"type\":\"request_too_large\",\"message\":\"the request "
            "body exceeds " +
                std::to_string(services->options.max_body_bytes) + " bytes\"}}",
            "application/json");
      } else if (res.status == 404) {
        res.set_content(
            "{\"error\":{\"type\":\"not_found_error\",\"message\":\"no such endpoint\"}}",
            "application/json");
      }
    });

    errno = 0;
    int bound = port;
    if (port == 0) {
      bound = server->bind_to_any_port(host);
    } else if (!server->bind_to_port(host, port)) {
      bound = -1;
    }
    if (bound <= 0) {
      return Status::Unavailable("cannot listen for HTTP on " + options.listen + ": " +
                                 (errno != 0 ? std::strerror(errno) : "bind failed"));
    }
    self->port_ = bound;
    self->server_ = std::move(server);
  } catch (const std::exception& e) {
    return Status::Unavailable(std::string("cannot start the HTTP API: ") + e.what());
  }
  httplib::Server* srv = self->server_.get();
  self->thread_ = std::thread([srv] {
    // A client that hangs up mid-response costs that response, not the process.
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
    srv->listen_after_bind();
  });
  LogInfo("kvtierd_http", LogFields().Add("listen", host + ":" + std::to_string(self->port_)));
  return self;
}

HttpApi::~HttpApi() { Stop(); }

void HttpApi::Stop() {
  if (stopped_.exchange(true)) return;
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

void HttpApi::Count(const std::string& endpoint, int status) {
  std::lock_guard<std::mutex> lock(mu_);
  ++requests_[{endpoint, status}];
}

void HttpApi::AppendMetrics(MetricsText* m) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [key, n] : requests_) {
    m->Counter("kvtier_http_requests_total", "HTTP API requests, by endpoint and status.",
               static_cast<double>(n),
               {{"endpoint", key.first}, {"status", std::to_string(key.second)}});
  }
}

}  // namespace kvtier
