// ContextApi: the context-caching API of kvtierd (DESIGN §6, §7, §9), apart
// from any wire protocol. The gRPC ContextCache service and every HTTP
// dialect (server/http/) are thin adapters over it: they authenticate the
// caller, admit the call, translate their request into a v1::GenerateRequest
// (or a named-cache request) and their answer out of the v1 messages, so every
// dialect has exactly the same caching, usage, prices and ledger records.
//
// Generate tokenizes the prompt (or takes ids or segments with cache_control
// breakpoints), runs it on the engine with the tenant's cache salt (tenants
// never share blocks), records its priced usage in the ledger (durably,
// before answering; once per request id) and answers with the text and the
// usage: what the cache gave and took.
#pragma once

#include <grpcpp/support/status.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "context/ledger.h"
#include "context/named_caches.h"
#include "context/pricing.h"
#include "engine/engine.h"
#include "model/tokenizer.h"
#include "proto/kvtier.pb.h"
#include "server/auth.h"
#include "server/cache_secret.h"
#include "server/generate_stream.h"
#include "server/metrics.h"

namespace kvtier {

// The error_details of a RESOURCE_EXHAUSTED that means "busy, retry later"
// (max_concurrent_requests) rather than "this request is too big": the HTTP
// dialects answer it with 429.
inline constexpr const char* kBusyDetail = "kvtier:busy";

struct GenerateLimits {
  size_t max_prompt_bytes = 1 << 20;   // prompt text, bytes (all segments together)
  size_t max_prompt_tokens = 1 << 20;  // token ids given directly
  size_t max_segments = 1024;          // segments per request
  size_t min_cacheable_tokens = 1024;  // shorter marked prefixes are not cached
  size_t max_stop_sequences = 16;      // stop strings per request
  size_t max_stop_bytes = 256;         // bytes per stop string
  // Requests generating at once (from Submit to the last token); beyond it
  // Generate answers RESOURCE_EXHAUSTED at once and queues nothing.
  int max_concurrent_requests = 256;
};

class ContextApi {
 public:
  // `engine`, `ledger` and `prices` must outlive the API; `tokenizer` may be
  // null (ids only), `ledger` too (nothing recorded: tests of the engine).
  // `secret` scopes a request's cache_key within its caller's cache salt.
  ContextApi(Engine& engine, const Tokenizer* tokenizer, Ledger* ledger, const PriceTable* prices,
             Clock* clock, const GenerateLimits& limits, const CacheSecret& secret);

  // Named caches (null: the named-cache calls answer FAILED_PRECONDITION).
  void set_named_caches(NamedCacheRegistry* registry) { named_ = registry; }

  // The served model, "id@revision", and its shape.
  const std::string& model() const { return model_; }
  const ModelConfig& model_config() const { return engine_.weights().config; }
  const Tokenizer* tokenizer() const { return tokenizer_; }
  const GenerateLimits& limits() const { return limits_; }

  // Runs `req` for `caller`: each batch of generated tokens goes to `sink`
  // as it is sampled (a sink that reports its client gone cancels the
  // request), and `*final` gets what the last message carries (finish
  // reason, usage, cost, request id, any text held back). The usage is in
  // the ledger before this returns OK.
  grpc::Status Generate(const Principal& caller, const v1::GenerateRequest& req, GenerateSink* sink,
                        v1::GenerateResponse* final);

  // The prompt tokens Generate would run for `req` (a named cache's
  // included), without running or billing anything.
  grpc::Status CountTokens(const Principal& caller, const v1::GenerateRequest& req,
                           uint64_t* tokens) const;

  // Every check Generate makes of `req` before it runs (CountTokens's and the
  // engine's: a prompt over the context or the KV pages, sampling
  // parameters), with the prompt's tokens; nothing runs or is billed. An API
  // that answers with a stream calls it first, so that bad input is refused
  // with an error status instead of an error event after a 200.
  grpc::Status CheckGeneration(const Principal& caller, const v1::GenerateRequest& req,
                               uint64_t* tokens) const;

  grpc::Status CreateCache(const Principal& caller, const v1::CreateCacheRequest& req,
                           v1::NamedCacheInfo* resp);
  grpc::Status GetCache(const Principal& caller, const std::string& name,
                        v1::NamedCacheInfo* resp) const;
  grpc::Status ListCaches(const Principal& caller, v1::ListCachesResponse* resp) const;
  grpc::Status UpdateCache(const Principal& caller, const v1::UpdateCacheRequest& req,
                           v1::NamedCacheInfo* resp);
  grpc::Status DeleteCache(const Principal& caller, const std::string& name);

  // Adds the API's counters and latency histograms to `m` (Prometheus).
  void AppendMetrics(MetricsText* m) const;

 private:
  // A Generate turned into an engine request, and what its bill needs
  // besides the engine's result.
  struct GeneratePlan;

  // Generate's steps: check the request, plan the engine request (prompt,
  // cache breakpoints, a named cache put first), set its sampling, and once
  // it has run, answer with its result and bill it.
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
  grpc::Status NamedCachesEnabled() const;
  // Records a usage or storage record; UNAVAILABLE when it cannot be made durable.
  grpc::Status Record(const UsageRecord& record);
  void FillCacheInfo(const NamedCache& c, v1::NamedCacheInfo* out) const;
  // The storage charge of `c` for `hours`, under an id unique to `period`.
  UsageRecord StorageRecord(const ModelPrice& price, const std::string& tenant, const NamedCache& c,
                            double hours, const std::string& period) const;

  Engine& engine_;
  const Tokenizer* tokenizer_;
  Ledger* ledger_;
  const PriceTable* prices_;
  Clock* clock_;
  NamedCacheRegistry* named_ = nullptr;
  const GenerateLimits limits_;
  const CacheSecret secret_;
  std::string model_;     // "id@revision"
  std::mutex update_mu_;  // UpdateCache calls, one at a time (context_api.cc)

  // What was billed, for /metrics.
  struct Billed {
    std::atomic<uint64_t> requests{0}, input{0}, write_5m{0}, write_1h{0}, read{0}, output{0};
    std::atomic<int64_t> cost_nanousd{0}, storage_nanousd{0};
  };
  Billed billed_;
  LatencyHistogram ttft_, total_, queue_;  // seconds, per finished Generate
  // Generate calls past their checks and not yet answered, and those refused
  // for max_concurrent_requests.
  std::atomic<int> generating_{0};
  std::atomic<uint64_t> refused_busy_{0};
};

}  // namespace kvtier
