// Client: a small C++ client of kvtierd's BlockStore, ContextCache and Admin
// services.
//
// Thread-safe (one channel, shared). Every call has a deadline (timeout_ms)
// and returns a kvtier Status; the gRPC code's name leads its message
// ("NOT_FOUND: block ... is not cached").
#pragma once

#include <cstdint>
#include <memory>
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
};

struct FetchedBlock {
  v1::BlockInfo info;
  std::string payload;
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
