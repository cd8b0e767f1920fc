// AdminService: health and statistics of a running kvtierd.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "cache/cache_manager.h"
#include "cache/namespace.h"
#include "common/clock.h"
#include "engine/engine.h"
#include "proto/kvtier.grpc.pb.h"
#include "server/auth.h"
#include "server/call_gate.h"

namespace kvtier {

// Health is served on gRPC's callback threads, not the synchronous server's
// bounded pool: however many calls hold server threads, Health answers.
class AdminService final : public v1::Admin::WithCallbackMethod_Health<v1::Admin::Service> {
 public:
  // `engine` may be null (kvtierd without a model).
  AdminService(CacheManager& cache, const Engine* engine, const Namespace& default_namespace,
               Clock* clock, CallGate& gate);
  // May be called while the service is serving (the port is known only then).
  void set_listen_address(std::string address, std::string metrics_address = "",
                          std::string http_address = "") {
    std::lock_guard<std::mutex> lock(mu_);
    listen_ = std::move(address);
    metrics_listen_ = std::move(metrics_address);
    http_listen_ = std::move(http_address);
  }
  void set_shm_socket(std::string path) {
    std::lock_guard<std::mutex> lock(mu_);
    shm_socket_ = std::move(path);
  }

  grpc::ServerUnaryReactor* Health(grpc::CallbackServerContext* ctx, const v1::HealthRequest* req,
                                   v1::HealthResponse* resp) override;
  grpc::Status Stats(grpc::ServerContext* ctx, const v1::StatsRequest* req,
                     v1::StatsResponse* resp) override;
  grpc::Status Explain(grpc::ServerContext* ctx, const v1::ExplainRequest* req,
                       v1::ExplainResponse* resp) override;
  // API keys (set once, before serving; default: open).
  void set_authenticator(const Authenticator* auth) { auth_ = auth; }
  // The eviction policy of each tier, for Stats (set once, before serving).
  void set_tier_policies(std::vector<std::string> names) { policies_ = std::move(names); }
  // The peer and cluster tiers (owned by the cache; null when not
  // configured), for Stats (set once, before serving).
  void set_scale_out(Tier* peers, Tier* cluster) {
    peer_tier_ = peers;
    cluster_tier_ = cluster;
  }

 private:
  CacheManager& cache_;
  const Engine* engine_;
  const Namespace default_namespace_;
  Clock* const clock_;
  const int64_t started_ms_;
  CallGate& gate_;
  std::vector<std::string> policies_;
  const Authenticator* auth_ = nullptr;
  Tier* peer_tier_ = nullptr;
  Tier* cluster_tier_ = nullptr;
  std::mutex mu_;
  std::string listen_;          // guarded by mu_
  std::string metrics_listen_;  // guarded by mu_
  std::string http_listen_;     // guarded by mu_
  std::string shm_socket_;      // guarded by mu_
};

// The version string kvtierd reports.
const char* KvtierVersion();

}  // namespace kvtier
