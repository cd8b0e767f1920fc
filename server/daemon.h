// Daemon: kvtierd's body. Opens the data directory and the cache, serves the
// gRPC services on a real socket, and shuts down cleanly.
//
// Start() returns once the server listens; Wait() blocks until Shutdown()
// (from another thread, e.g. the signal thread) has drained the server.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "cache/cache_manager.h"
#include "common/status.h"
#include "context/ledger.h"
#include "context/named_caches.h"
#include "context/pricing.h"
#include "engine/engine.h"
#include "model/model_weights.h"
#include "model/tokenizer.h"
#include "server/auth.h"
#include "server/connection_listener.h"
#include "server/daemon_flags.h"
#include "server/http/http_api.h"
#include "server/metrics.h"
#include "server/metrics_http.h"
#include "server/shm_regions.h"

namespace grpc {
class Server;
class ServerBuilder;
}  // namespace grpc

namespace kvtier {

class Daemon {
 public:
  ~Daemon();
  static Result<std::unique_ptr<Daemon>> Open(const DaemonOptions& options);

  Status Start();
  void Wait();
  void Shutdown();
  // host:port actually bound (the chosen port when listen asked for 0).
  const std::string& bound_address() const { return bound_address_; }

 private:
  explicit Daemon(const DaemonOptions& options);

  // Open's steps, in order. Each sets the members it builds.
  Status LockDataDir();
  Status OpenEngine();  // weights_, tokenizer_, engine_ (running)
  Status OpenServices(std::vector<std::string> tier_policies);  // services_, named_caches_

  // Start's steps.
  void ConfigureServer(grpc::ServerBuilder* builder);
  // Tells the standard health service that each of our services is serving.
  void MarkServing();
  // Build and start server_ listening on options_.listen; return the bound port.
  Result<int> ServePlaintext(grpc::ServerBuilder* builder, size_t max_connections);
  Result<int> ServeTls(grpc::ServerBuilder* builder);
  Status StartMetrics();
  Status StartHttp();
  Status OpenShm();  // shm_
  // The serving line: every address bound (ports chosen when asked for :0).
  void LogServing(const std::string& metrics, const std::string& http) const;

  DaemonOptions options_;
  int lock_fd_ = -1;
  std::unique_ptr<CacheManager> cache_;
  Tier* rocks_tier_ = nullptr;         // the cold tier, owned by cache_ (for its stats)
  Tier* cluster_tier_ = nullptr;       // the shared cluster tier, owned by cache_; may be null
  Tier* peer_tier_ = nullptr;          // the other nodes (--peers), owned by cache_; may be null
  size_t peer_tier_index_ = SIZE_MAX;  // its place in the stack
  std::unique_ptr<ModelWeights> weights_;
  std::unique_ptr<Tokenizer> tokenizer_;  // null when the model has none
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<Ledger> ledger_;
  std::unique_ptr<NamedCacheRegistry> named_caches_;
  PriceTable prices_;
  std::unique_ptr<Authenticator> auth_;  // open, or the API keys; set by Open
  std::unique_ptr<MetricsHttpServer> metrics_;
  std::unique_ptr<HttpApi> http_;                 // null: off, busy or no engine
  std::string model_path_;                        // the served model's checkpoint or directory
  std::unique_ptr<ConnectionListener> listener_;  // null with TLS (gRPC listens)
  std::unique_ptr<ShmRegistry> shm_;              // null: off (or the default path unusable)
  // Renders the Prometheus text of the cache, the engine and the ledger.
  std::string RenderMetrics() const;
  void AppendTokenMetrics(const CacheStats& s, MetricsText* m) const;
  void AppendBlockApiMetrics(MetricsText* m) const;
  std::string ServedModelName() const;
  struct Services;
  std::unique_ptr<Services> services_;
  std::unique_ptr<grpc::Server> server_;
  std::atomic<bool> shut_down_{false};
  std::string bound_address_;
};

}  // namespace kvtier
