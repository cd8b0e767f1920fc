// BlockStoreService: the BlockStore gRPC service over a CacheManager: the
// one-block calls (block_store_service.cc) and the batched ones engines'
// connectors use, with leases and shared memory (block_batch.cc;
// docs/block-api.md).
//
// Every call is authenticated before anything of it is read or checked, then
// checked before it changes anything; a refused request leaves the cache as it
// was. Limits (sizes, counts, buffered bytes, per tenant and daemon-wide)
// bound the daemon's memory whatever the clients send.
//
// Tenant scope (DESIGN §2): a call's namespace always carries the caller's
// secret salt (a salt the request gives only refines it within the tenant),
// and block keys cross the API masked by the namespace's key scope
// (server/cache_secret.h), so every call by key acts on the caller's own
// blocks of that namespace and nobody else's.
#pragma once

#include <cstdint>

#include "cache/cache_manager.h"
#include "cache/namespace.h"
#include "common/clock.h"
#include "proto/kvtier.grpc.pb.h"
#include "server/auth.h"
#include "server/block_scope.h"
#include "server/call_gate.h"
#include "server/leases.h"
#include "server/payload_budget.h"
#include "server/shm_regions.h"

namespace kvtier {

struct BlockStoreLimits {
  uint64_t max_block_bytes = 64ull << 20;
  size_t max_tokens = 1 << 20;
  size_t max_keys = 1 << 16;
  uint64_t max_inflight_payload_bytes = 1ull << 30;  // held by all Put and Get calls
  // Held by one tenant's Put and Get calls (at most the above).
  uint64_t max_tenant_payload_bytes = 256ull << 20;
  int64_t default_ttl_s = 0;  // 0 = no expiry
};

class BlockStoreService final : public v1::BlockStore::Service {
 public:
  // `auth` (API keys, or open), `leases` and `shm` (null: no shared memory)
  // must outlive the service.
  BlockStoreService(CacheManager& cache, const Namespace& default_namespace,
                    const BlockStoreLimits& limits, CallGate& gate, const Authenticator& auth,
                    LeaseTable& leases, const ShmRegistry* shm);

  grpc::Status Lookup(grpc::ServerContext* ctx, const v1::LookupRequest* req,
                      v1::LookupResponse* resp) override;
  grpc::Status Put(grpc::ServerContext* ctx, grpc::ServerReader<v1::PutRequest>* reader,
                   v1::PutResponse* resp) override;
  grpc::Status Get(grpc::ServerContext* ctx, const v1::GetRequest* req,
                   grpc::ServerWriter<v1::GetResponse>* writer) override;
  grpc::Status Delete(grpc::ServerContext* ctx, const v1::DeleteRequest* req,
                      v1::DeleteResponse* resp) override;

  grpc::Status BatchLookup(grpc::ServerContext* ctx, const v1::BatchLookupRequest* req,
                           v1::BatchLookupResponse* resp) override;
  grpc::Status Exists(grpc::ServerContext* ctx, const v1::ExistsRequest* req,
                      v1::ExistsResponse* resp) override;
  grpc::Status BatchGet(grpc::ServerContext* ctx, const v1::BatchGetRequest* req,
                        grpc::ServerWriter<v1::BatchGetResponse>* writer) override;
  grpc::Status BatchPut(grpc::ServerContext* ctx, grpc::ServerReader<v1::BatchPutRequest>* reader,
                        v1::BatchPutResponse* resp) override;
  grpc::Status Release(grpc::ServerContext* ctx, const v1::ReleaseRequest* req,
                       v1::ReleaseResponse* resp) override;

 private:
  // The stored keys a request names: every full block of `token_ids`, else
  // `visible_keys` (as the caller sees them). Errors name the field.
  Result<std::vector<BlockKey>> StoredKeys(
      const BlockScope& scope, const google::protobuf::RepeatedField<int32_t>& token_ids,
      const google::protobuf::RepeatedPtrField<std::string>& visible_keys) const;
  Status CheckKeyCount(int n) const;
  // The caller's region `id` ("" = none: null).
  Result<std::shared_ptr<ShmRegion>> RegionOf(const Principal& caller, const std::string& id) const;
  // One block of a BatchPut, read and checked: its payload from the stream
  // or the region. A bad block fails alone (*result); false when the stream
  // itself is broken (*fatal says why).
  struct PutStream;
  bool ReadBatchBlock(PutStream& put, const v1::BatchPutBlock& block, v1::BatchPutResult* result,
                      grpc::Status* fatal);
  Result<BlockScope> ResolveScope(const Principal& caller, bool present,
                                  const v1::Namespace& ns) const;
  // `key` is the stored key; the answer shows the caller's view of it.
  void FillInfo(const BlockScope& scope, const BlockKey& key, const IndexEntry& e,
                v1::BlockInfo* info) const;
  // The info of a block this call just put (`size` bytes): where it is,
  // or no tier when it is not stored (declined, or already evicted).
  void FillStoredInfo(const BlockScope& scope, const BlockKey& key, uint64_t size,
                      v1::BlockInfo* info) const;
  // A Lookup's or BatchLookup's answer: the run found for `keys` (stored
  // keys), each hit's info, and with `return_keys` every key as the caller
  // sees it; hit_tokens only for a query by tokens.
  template <typename LookupAnswer>
  void FillRun(const BlockScope& scope, const std::vector<BlockKey>& keys, const PrefixHit& hit,
               bool return_keys, bool by_tokens, LookupAnswer* resp) const {
    const int block_tokens = scope.ns.block_tokens;
    resp->set_query_blocks(static_cast<uint32_t>(keys.size()));
    resp->set_hit_blocks(static_cast<uint32_t>(hit.blocks));
    resp->set_block_tokens(static_cast<uint32_t>(block_tokens));
    resp->set_hit_tokens(by_tokens ? static_cast<uint32_t>(hit.blocks * block_tokens) : 0);
    for (size_t i = 0; i < hit.blocks; ++i) {
      FillInfo(scope, keys[i], hit.entries[i], resp->add_hits());
    }
    if (return_keys) {
      for (const BlockKey& k : keys) resp->add_keys(scope.Visible(k).ToByteString());
    }
  }

  CacheManager& cache_;
  const Namespace default_namespace_;
  const BlockStoreLimits limits_;
  CallGate& gate_;
  const Authenticator& auth_;
  LeaseTable& leases_;
  const ShmRegistry* const shm_;
  PayloadBudget budget_;
};

}  // namespace kvtier
