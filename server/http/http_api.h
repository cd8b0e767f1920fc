// HttpApi: kvtierd's HTTP/1.1 API (docs/http-api.md), the dialects clients
// already speak, over the same ContextApi as gRPC (server/context_api.h):
//   Anthropic  POST /v1/messages, /v1/messages/count_tokens
//   OpenAI     POST /v1/chat/completions, /v1/completions
//   Gemini     /v1beta/cachedContents[/{id}], /v1beta/models/{m}:generateContent
//   both       GET /v1/models (the shape the client's headers ask for), GET /health
// Same tenants and API keys, same admission (the call gate, a stream slot per
// generation, per-tenant stream limits), same engine, cache, ledger and
// metrics. cpp-httplib serves it on its own threads; nlohmann_json reads and
// writes every body.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/clock.h"
#include "common/status.h"
#include "server/auth.h"
#include "server/call_gate.h"
#include "server/context_api.h"
#include "server/metrics.h"

namespace httplib {
class Server;
}

namespace kvtier {

struct HttpApiOptions {
  // "host:port"; port 0 picks a free port (bound_port() tells which).
  std::string listen = "127.0.0.1:8000";
  int threads = 64;                  // connections served at once, 1..1024
  size_t max_body_bytes = 4u << 20;  // a larger request body is refused with 413
  int client_timeout_s = 30;         // each read and write of a connection, 1..600
  std::string served_model_name;     // the id clients send; "" = the model's id
  // The model's directory or checkpoint: its chat template (model/chat_template.h).
  std::string model_dir;
};

class HttpApi {
 public:
  // Binds and serves from new threads. InvalidArgument for bad options;
  // Unavailable, naming the address, when it cannot be bound.
  static Result<std::unique_ptr<HttpApi>> Start(const HttpApiOptions& options, ContextApi& api,
                                                const Authenticator& auth, CallGate& gate,
                                                Clock* clock);
  ~HttpApi();
  HttpApi(const HttpApi&) = delete;
  HttpApi& operator=(const HttpApi&) = delete;

  int bound_port() const { return port_; }
  // Stops accepting and waits for the serving threads. Idempotent.
  void Stop();

  // kvtier_http_requests_total{endpoint, status}.
  void AppendMetrics(MetricsText* m) const;

 private:
  HttpApi() = default;
  void Count(const std::string& endpoint, int status);

  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
  std::atomic<bool> stopped_{false};
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;  // guarded by mu_
};

}  // namespace kvtier
