// Counts every gRPC call kvtierd answers, by service, method and status code
// (kvtier_grpc_requests_total), the gRPC side of what the HTTP API counts per
// endpoint and status. A server interceptor sees each call's final status, so
// every service is counted the same way, ours and the standard ones (health,
// reflection). Thread-safe.
#pragma once

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/server_interceptor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#include "server/metrics.h"

namespace kvtier {

class GrpcRequestMetrics {
 public:
  // An interceptor factory for ServerBuilder; `this` must outlive the server.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> InterceptorFactory();

  // `method` is gRPC's full name, "/package.Service/Method".
  void Count(const std::string& method, grpc::StatusCode code);
  void AppendMetrics(MetricsText* m) const;

 private:
  mutable std::mutex mu_;
  // (service, method, code name) -> calls; guarded by mu_.
  std::map<std::tuple<std::string, std::string, std::string>, uint64_t> calls_;
};

}  // namespace kvtier
