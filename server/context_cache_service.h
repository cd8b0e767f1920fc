// ContextCacheService: the gRPC face of the context-caching API
// (server/context_api.h). It authenticates the caller from the call's
// metadata, admits the call (the call gate; a stream slot for Generate) and
// relays to ContextApi; everything else is ContextApi's.
#pragma once

#include <grpcpp/grpcpp.h>

#include <optional>
#include <string>

#include "proto/kvtier.grpc.pb.h"
#include "server/auth.h"
#include "server/call_gate.h"
#include "server/context_api.h"

namespace kvtier {

class ContextCacheService final : public v1::ContextCache::Service {
 public:
  // `api` and `gate` must outlive the service.
  ContextCacheService(ContextApi& api, CallGate& gate) : api_(api), gate_(gate) {}

  // API keys (set once, before serving; default: open).
  void set_authenticator(const Authenticator* auth) { auth_ = auth; }

  grpc::Status Generate(grpc::ServerContext* ctx, const v1::GenerateRequest* req,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override;
  grpc::Status CreateCache(grpc::ServerContext* ctx, const v1::CreateCacheRequest* req,
                           v1::NamedCacheInfo* resp) override;
  grpc::Status GetCache(grpc::ServerContext* ctx, const v1::CacheRef* req,
                        v1::NamedCacheInfo* resp) override;
  grpc::Status ListCaches(grpc::ServerContext* ctx, const v1::ListCachesRequest* req,
                          v1::ListCachesResponse* resp) override;
  grpc::Status UpdateCache(grpc::ServerContext* ctx, const v1::UpdateCacheRequest* req,
                           v1::NamedCacheInfo* resp) override;
  grpc::Status DeleteCache(grpc::ServerContext* ctx, const v1::CacheRef* req,
                           v1::DeleteCacheResponse* resp) override;

 private:
  // The tenant a call acts for (auth, or the request's, or "default").
  grpc::Status Caller(const grpc::ServerContext* ctx, const std::string& requested,
                      Principal* caller) const;
  // Admits a named-cache call: a pass through the gate (held in *pass for
  // the call) and the caller.
  grpc::Status AdmitNamedCall(const grpc::ServerContext* ctx, const std::string& requested,
                              std::optional<CallGate::Pass>* pass, Principal* caller);

  ContextApi& api_;
  CallGate& gate_;
  const Authenticator* auth_ = nullptr;
};

}  // namespace kvtier
