// BlockStoreService: the BlockStore gRPC service over a CacheManager.
//
// Every request is checked before it changes anything; a refused request
// leaves the cache as it was. Limits (sizes, counts, buffered bytes) bound the
// daemon's memory whatever the clients send.
#pragma once

#include <atomic>
#include <cstdint>

#include "cache/cache_manager.h"
#include "cache/namespace.h"
#include "common/clock.h"
#include "proto/kvtier.grpc.pb.h"
#include "tools/auth.h"
#include "tools/call_gate.h"

namespace kvtier {

struct BlockStoreLimits {
  uint64_t max_block_bytes = 64ull << 20;
  size_t max_tokens = 1 << 20;
  size_t max_keys = 1 << 16;
  uint64_t max_inflight_payload_bytes = 1ull << 30;  // held by all Put and Get calls
  int64_t default_ttl_s = 0;                         // 0 = no expiry
};

class BlockStoreService final : public v1::BlockStore::Service {
 public:
  BlockStoreService(CacheManager& cache, const Namespace& default_namespace,
                    const BlockStoreLimits& limits, Clock* clock, CallGate& gate);

  // API keys (set once, before serving; default: open). With keys, every
  // call needs one, and a namespace's cache salt is always the caller's
  // tenant: blocks named by tokens are the tenant's own. Calls that name
  // blocks by key (Lookup by keys, Get, Delete) are authenticated but not
  // scoped to a tenant: a key is unguessable, but one leaked is readable.
  void set_authenticator(const Authenticator* auth) { auth_ = auth; }

  grpc::Status Lookup(grpc::ServerContext* ctx, const v1::LookupRequest* req,
                      v1::LookupResponse* resp) override;
  grpc::Status Put(grpc::ServerContext* ctx, grpc::ServerReader<v1::PutRequest>* reader,
                   v1::PutResponse* resp) override;
  grpc::Status Get(grpc::ServerContext* ctx, const v1::GetRequest* req,
                   grpc::ServerWriter<v1::GetResponse>* writer) override;
  grpc::Status Delete(grpc::ServerContext* ctx, const v1::DeleteRequest* req,
                      v1::DeleteResponse* resp) override;

 private:
  // The request's namespace with the daemon's defaults filled in, validated.
  Result<Namespace> ResolveNamespace(bool present, const v1::Namespace& ns) const;
  void FillInfo(const BlockKey& key, const IndexEntry& e, v1::BlockInfo* info) const;
  // Authenticates the caller; with keys, sets ns's salt (when given) to its tenant.
  grpc::Status Authorize(const grpc::ServerContext* ctx, Namespace* ns) const;

  CacheManager& cache_;
  const Namespace default_namespace_;
  const BlockStoreLimits limits_;
  Clock* const clock_;
  CallGate& gate_;
  std::atomic<uint64_t> inflight_payload_bytes_{0};
  const Authenticator* auth_ = nullptr;
};

}  // namespace kvtier
