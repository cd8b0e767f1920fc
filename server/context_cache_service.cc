#include "server/context_cache_service.h"

#include <utility>

#include "proto/status_codes.h"
#include "server/stream_calls.h"

namespace kvtier {
namespace {

// Generate's messages on a gRPC stream, through the call's stream slot (the
// watchdog cancels a client that stops reading).
class GrpcGenerateSink final : public GenerateSink {
 public:
  GrpcGenerateSink(grpc::ServerContext* ctx, grpc::ServerWriter<v1::GenerateResponse>* writer,
                   StreamGuard::Slot* slot)
      : ctx_(ctx), writer_(writer), slot_(slot) {}

  bool Send(const v1::GenerateResponse& part) override {
    return !ctx_->IsCancelled() && slot_->OnClient([&] { return writer_->Write(part); });
  }
  // A client that cancelled while no token came is noticed within a second.
  std::chrono::milliseconds keepalive_interval() const override {
    return std::chrono::milliseconds(1000);
  }
  bool KeepAlive() override { return !ctx_->IsCancelled(); }

 private:
  grpc::ServerContext* ctx_;
  grpc::ServerWriter<v1::GenerateResponse>* writer_;
  StreamGuard::Slot* slot_;
};

}  // namespace

grpc::Status ContextCacheService::Generate(grpc::ServerContext* ctx, const v1::GenerateRequest* req,
                                           grpc::ServerWriter<v1::GenerateResponse>* writer) {
  auto pass = gate_.Enter();
  if (!pass) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "kvtierd is shutting down");
  Principal caller;
  if (grpc::Status s = Caller(ctx, req->tenant(), &caller); !s.ok()) return s;
  // The stream holds a server thread until the last token: it takes a slot,
  // and a client that stops taking tokens is cancelled by the watchdog.
  Result<StreamGuard::Slot> slot = AdmitStream(gate_, ctx, caller.tenant);
  if (!slot.ok()) return ToGrpcStatus(slot.status());
  GrpcGenerateSink sink(ctx, writer, &*slot);
  v1::GenerateResponse final_message;
  if (grpc::Status s = api_.Generate(caller, *req, &sink, &final_message); !s.ok()) return s;
  if (!ctx->IsCancelled()) (void)slot->OnClient([&] { return writer->Write(final_message); });
  return grpc::Status::OK;
}

grpc::Status ContextCacheService::Caller(const grpc::ServerContext* ctx,
                                         const std::string& requested, Principal* caller) const {
  if (auth_ == nullptr) return grpc::Status(grpc::StatusCode::INTERNAL, "no authenticator");
  return auth_->Authenticate(ctx, requested, caller);
}

grpc::Status ContextCacheService::AdmitNamedCall(const grpc::ServerContext* ctx,
                                                 const std::string& requested,
                                                 std::optional<CallGate::Pass>* pass,
                                                 Principal* caller) {
  std::optional<CallGate::Pass> entered = gate_.Enter();
  if (!entered) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "kvtierd is shutting down");
  pass->emplace(std::move(*entered));
  return Caller(ctx, requested, caller);
}

grpc::Status ContextCacheService::CreateCache(grpc::ServerContext* ctx,
                                              const v1::CreateCacheRequest* req,
                                              v1::NamedCacheInfo* resp) {
  std::optional<CallGate::Pass> pass;
  Principal caller;
  if (grpc::Status s = AdmitNamedCall(ctx, req->tenant(), &pass, &caller); !s.ok()) return s;
  return api_.CreateCache(caller, *req, resp);
}

grpc::Status ContextCacheService::GetCache(grpc::ServerContext* ctx, const v1::CacheRef* req,
                                           v1::NamedCacheInfo* resp) {
  std::optional<CallGate::Pass> pass;
  Principal caller;
  if (grpc::Status s = AdmitNamedCall(ctx, req->tenant(), &pass, &caller); !s.ok()) return s;
  return api_.GetCache(caller, req->name(), resp);
}

grpc::Status ContextCacheService::ListCaches(grpc::ServerContext* ctx,
                                             const v1::ListCachesRequest* req,
                                             v1::ListCachesResponse* resp) {
  std::optional<CallGate::Pass> pass;
  Principal caller;
  if (grpc::Status s = AdmitNamedCall(ctx, req->tenant(), &pass, &caller); !s.ok()) return s;
  return api_.ListCaches(caller, resp);
}

grpc::Status ContextCacheService::UpdateCache(grpc::ServerContext* ctx,
                                              const v1::UpdateCacheRequest* req,
                                              v1::NamedCacheInfo* resp) {
  std::optional<CallGate::Pass> pass;
  Principal caller;
  if (grpc::Status s = AdmitNamedCall(ctx, req->tenant(), &pass, &caller); !s.ok()) return s;
  return api_.UpdateCache(caller, *req, resp);
}

grpc::Status ContextCacheService::DeleteCache(grpc::ServerContext* ctx, const v1::CacheRef* req,
                                              v1::DeleteCacheResponse*) {
  std::optional<CallGate::Pass> pass;
  Principal caller;
  if (grpc::Status s = AdmitNamedCall(ctx, req->tenant(), &pass, &caller); !s.ok()) return s;
  return api_.DeleteCache(caller, req->name());
}

}  // namespace kvtier
