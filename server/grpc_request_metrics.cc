#include "server/grpc_request_metrics.h"

#include <string_view>

namespace kvtier {
namespace {

using grpc::experimental::InterceptionHookPoints;

// The names grpc-status codes go by (grpc/doc/statuscodes.md).
std::string_view CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "UNKNOWN";
  }
}

class CountingInterceptor final : public grpc::experimental::Interceptor {
 public:
  CountingInterceptor(GrpcRequestMetrics* metrics, const char* method)
      : metrics_(metrics), method_(method ? method : "") {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* batch) override {
    if (batch->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      metrics_->Count(method_, batch->GetSendStatus().error_code());
    }
    batch->Proceed();
  }

 private:
  GrpcRequestMetrics* metrics_;
  const std::string method_;
};

class CountingFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit CountingFactory(GrpcRequestMetrics* metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new CountingInterceptor(metrics_, info->method());
  }

 private:
  GrpcRequestMetrics* metrics_;
};

}  // namespace

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
GrpcRequestMetrics::InterceptorFactory() {
  return std::make_unique<CountingFactory>(this);
}

void GrpcRequestMetrics::Count(const std::string& method, grpc::StatusCode code) {
  // "/kvtier.v1.ContextCache/Generate" -> ("kvtier.v1.ContextCache", "Generate").
  const size_t slash = method.rfind('/');
  std::string service = slash == std::string::npos ? std::string() : method.substr(0, slash);
  if (!service.empty() && service[0] == '/') service.erase(0, 1);
  std::string name = slash == std::string::npos ? method : method.substr(slash + 1);
  std::lock_guard<std::mutex> lock(mu_);
  ++calls_[{std::move(service), std::move(name), std::string(CodeName(code))}];
}

void GrpcRequestMetrics::AppendMetrics(MetricsText* m) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [key, n] : calls_) {
    const auto& [service, method, code] = key;
    m->Counter("kvtier_grpc_requests_total", "gRPC calls answered, by service, method and status.",
               static_cast<double>(n), {{"service", service}, {"method", method}, {"code", code}});
  }
}

}  // namespace kvtier
