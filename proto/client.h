// Client: a small C++ client of kvtierd's BlockStore, ContextCache and Admin
// services.
//
// Thread-safe (one channel, shared). Every call has a deadline (timeout_ms)
// and returns a kvtier Status; the gRPC code's name leads its message
// ("NOT_FOUND: block ... is not cached").
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/block_key.h"
#include "common/status.h"
#include "proto/kvtier.grpc.pb.h"

namespace kvtier {

struct ClientOptions {
  std::string address = "127.0.0.1:50051";  // host:port of kvtierd
  int64_t timeout_ms = 30'000;              // deadline of each call
  uint32_t chunk_bytes = 1 << 20;           // payload bytes per streamed message (<= 4 MiB)
  std::string api_key;                      // sent as x-api-key when not empty
  std::string tls_ca_pem;                   // PEM roots: connect over TLS; "" = plaintext
  // A connection of its own. gRPC otherwise shares one between clients of
  // the same address and options, and one connection carries at most the
  // daemon's --max-streams-per-connection calls at once (the rest wait).
  bool own_connection = false;
};

struct FetchedBlock {
  v1::BlockInfo info;
  std::string payload;
};

// One block of a BatchGet: its status, and with it OK its info and payload
// (empty when it went to shared memory), checksum verified.
struct BatchFetched {
  Status status;
  v1::BlockInfo info;
  std::string payload;
};

// One block of a BatchPut: key, parent, payload (size and XXH3-64 are filled
// in by BatchPut), tokens; with a region, the payload's offset in it instead.
struct BatchPutItem {
  BlockKey key;
  std::optional<BlockKey> parent;
  std::span<const std::byte> payload;  // its bytes (or, with a region, what they are)
  uint64_t shm_offset = 0;
  uint32_t tokens = 0;
};

// A same-host shared-memory region of kvtierd (server/shm_regions.h),
// mapped here; unmapped, and released by the daemon, when destroyed.
class ShmMapping {
 public:
  // The handshake on the daemon's Unix socket (Health's shm_socket).
  static Result<std::unique_ptr<ShmMapping>> Open(const std::string& socket_path, uint64_t bytes,
                                                  const std::string& api_key);
  ~ShmMapping();
  ShmMapping(const ShmMapping&) = delete;
  ShmMapping& operator=(const ShmMapping&) = delete;
  const std::string& id() const { return id_; }
  std::span<std::byte> bytes() const { return {base_, size_}; }

 private:
  ShmMapping(int sock, std::string id, std::byte* base, size_t size)
      : sock_(sock), id_(std::move(id)), base_(base), size_(size) {}
  int sock_;
  std::string id_;
  std::byte* base_;
  size_t size_;
};

class Client {
 public:
  explicit Client(const ClientOptions& options);

  Result<v1::HealthResponse> Health();
  Result<v1::StatsResponse> Stats();
  // Where a block is and why (kNotFound when it is not cached). Block keys
  // are scoped to a tenant and a namespace (proto/kvtier.proto): `ns` and
  // `tenant` ("" = the caller's) say whose key it is; fields left empty take
  // the daemon's defaults.
  Result<v1::ExplainResponse> Explain(const BlockKey& key, const v1::Namespace& ns = {},
                                      const std::string& tenant = "");
  Result<v1::LookupResponse> Lookup(const v1::LookupRequest& request);
  // Sends header (size and XXH3-64 filled in here) and payload.
  Result<v1::PutResponse> Put(v1::PutHeader header, std::span<const std::byte> payload);
  // Fetches a block of namespace `ns` and verifies its XXH3-64 against the
  // header's.
  Result<FetchedBlock> Get(const BlockKey& key, const v1::Namespace& ns = {});
  Status Delete(const BlockKey& key, const v1::Namespace& ns = {});
  // The batched calls for engines (docs/block-api.md).
  Result<v1::BatchLookupResponse> BatchLookup(const v1::BatchLookupRequest& request);
  Result<v1::ExistsResponse> Exists(const v1::ExistsRequest& request);
  Status Release(const std::string& lease_id);
  // One entry per key, in order. With `region`, `request.shm_offsets` say
  // where each payload lands in it and no payload comes back here; the daemon
  // verified each block as it copied it there, and `verify` checks it again
  // here (a pass over the bytes: off for a load that trusts its own host).
  Result<std::vector<BatchFetched>> BatchGet(v1::BatchGetRequest request,
                                             const ShmMapping* region = nullptr,
                                             bool verify = true);
  // One result per item, in order. With `region`, each payload must already
  // be at its shm_offset in it (its bytes are still given, for the checksum).
  Result<v1::BatchPutResponse> BatchPut(v1::BatchPutHeader header,
                                        std::span<const BatchPutItem> items,
                                        const ShmMapping* region = nullptr);
  Result<v1::BillingReportResponse> BillingReport(const v1::BillingReportRequest& request);
  // Runs a prompt through the daemon's engine; the streamed answer gathered
  // into one response (all tokens and text, then the final fields).
  grpc::Status GenerateRaw(const v1::GenerateRequest& request, v1::GenerateResponse* response);
  // Runs a prompt through the daemon's engine.
  Result<v1::GenerateResponse> Generate(const v1::GenerateRequest& request);

  // The generated stubs, for callers (tests) that need raw access.
  v1::BlockStore::Stub& block_store() { return *block_store_; }
  v1::Admin::Stub& admin() { return *admin_; }
  v1::ContextCache::Stub& context_cache() { return *context_cache_; }
  v1::Billing::Stub& billing() { return *billing_; }
  // A context with this client's deadline.
  std::unique_ptr<grpc::ClientContext> NewContext() const;

 private:
  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::BlockStore::Stub> block_store_;
  std::unique_ptr<v1::Admin::Stub> admin_;
  std::unique_ptr<v1::ContextCache::Stub> context_cache_;
  std::unique_ptr<v1::Billing::Stub> billing_;
};

}  // namespace kvtier
