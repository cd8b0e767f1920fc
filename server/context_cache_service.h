// ContextCacheService: inference through kvtierd's engine (DESIGN §9).
//
// Generate tokenizes the prompt (or takes ids or segments with cache_control
// breakpoints), runs it on the engine with the tenant's cache salt (tenants
// never share blocks), records its priced usage in the ledger (durably,
// before answering; once per request id) and answers with the text and the
// usage: what the cache gave and took (DESIGN §6, §7).
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "context/ledger.h"
#include "context/named_caches.h"
#include "context/pricing.h"
#include "engine/engine.h"
#include "model/tokenizer.h"
#include "proto/kvtier.grpc.pb.h"
#include "server/auth.h"
#include "server/call_gate.h"
#include "server/metrics.h"

namespace kvtier {

struct GenerateLimits {
  size_t max_prompt_bytes = 1 << 20;   // prompt text, bytes (all segments together)
  size_t max_prompt_tokens = 1 << 20;  // token ids given directly
  size_t max_segments = 1024;          // segments per request
  size_t min_cacheable_tokens = 1024;  // shorter marked prefixes are not cached
};

class ContextCacheService final : public v1::ContextCache::Service {
 public:
  // `engine`, `ledger` and `prices` must outlive the service; `tokenizer` may
  // be null (ids only), `ledger` too (nothing recorded: tests of the engine).
  ContextCacheService(Engine& engine, const Tokenizer* tokenizer, Ledger* ledger,
                      const PriceTable* prices, Clock* clock, const GenerateLimits& limits,
                      CallGate& gate);

  // API keys (set once, before serving; default: open).
  void set_authenticator(const Authenticator* auth) { auth_ = auth; }

  // Adds the service's counters and latency histograms to `m` (Prometheus).
  void AppendMetrics(MetricsText* m) const;

  // Named caches (null: the named-cache calls answer FAILED_PRECONDITION).
  void set_named_caches(NamedCacheRegistry* registry) { named_ = registry; }

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
  Engine& engine_;
  const Tokenizer* tokenizer_;
  Ledger* ledger_;
  const PriceTable* prices_;
  Clock* clock_;
  const Authenticator* auth_ = nullptr;
  NamedCacheRegistry* named_ = nullptr;

  // What was billed, for /metrics.
  struct Billed {
    std::atomic<uint64_t> requests{0}, input{0}, write_5m{0}, write_1h{0}, read{0}, output{0};
    std::atomic<int64_t> cost_nanousd{0}, storage_nanousd{0};
  };
  Billed billed_;
  LatencyHistogram ttft_, total_;  // seconds, per finished Generate

  // Generate's steps: check the request, plan the engine request (prompt,
  // cache breakpoints, a named cache put first), set its sampling, and once
  // it has run, answer with its result and bill it.
  struct GeneratePlan;
  grpc::Status CheckGenerate(const v1::GenerateRequest& req, const std::string& tenant) const;
  grpc::Status PlanPrompt(const v1::GenerateRequest& req, const Principal& caller,
                          GeneratePlan* plan) const;
  grpc::Status PromptFromSegments(const v1::GenerateRequest& req, GeneratePlan* plan) const;
  grpc::Status SpliceNamedCache(const v1::GenerateRequest& req, const std::string& tenant,
                                GeneratePlan* plan) const;
  void SetSampling(const v1::GenerateRequest& req, GenerateRequest* g) const;
  void FillResult(const GenerateResult& r, v1::GenerateResponse* out) const;
  // Puts the usage and cost in `out` after recording them in the ledger.
  grpc::Status Bill(const v1::GenerateRequest& req, const std::string& tenant,
                    const GeneratePlan& plan, const GenerateResult& r, v1::GenerateResponse* out);
  // `text` as token ids (BOS first when `bos`); FAILED_PRECONDITION when the
  // model has no tokenizer.
  grpc::Status Tokenize(const std::string& text, bool bos, std::vector<TokenId>* ids) const;
  // The tenant a call acts for (auth, or the request's, or "default").
  grpc::Status Caller(const grpc::ServerContext* ctx, const std::string& requested,
                      Principal* caller) const;
  // Admits a named-cache call: a pass through the gate (held in *pass for
  // the call), named caches enabled, and the caller.
  grpc::Status AdmitNamedCall(const grpc::ServerContext* ctx, const std::string& requested,
                              std::optional<CallGate::Pass>* pass, Principal* caller);
  // Records a usage or storage record; UNAVAILABLE when it cannot be made durable.
  grpc::Status Record(const UsageRecord& record);
  void FillCacheInfo(const NamedCache& c, v1::NamedCacheInfo* out) const;
  // The storage charge of `c` for `hours`, under an id unique to `period`.
  UsageRecord StorageRecord(const ModelPrice& price, const std::string& tenant, const NamedCache& c,
                            double hours, const std::string& period) const;
  const GenerateLimits limits_;
  CallGate& gate_;
  std::string model_;  // "id@revision"
};

}  // namespace kvtier
