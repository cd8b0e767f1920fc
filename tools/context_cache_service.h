// ContextCacheService: inference through kvtierd's engine (DESIGN §9).
//
// Generate tokenizes the prompt (or takes ids or segments with cache_control
// breakpoints), runs it on the engine with the tenant's cache salt (tenants
// never share blocks), records its priced usage in the ledger (durably,
// before answering; once per request id) and answers with the text and the
// usage: what the cache gave and took (DESIGN §6, §7).
#pragma once

#include <cstdint>
#include <string>

#include "cache/ledger.h"
#include "cache/pricing.h"
#include "engine/engine.h"
#include "engine/tokenizer.h"
#include "proto/kvtier.grpc.pb.h"
#include "tools/auth.h"
#include "tools/call_gate.h"

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

  grpc::Status Generate(grpc::ServerContext* ctx, const v1::GenerateRequest* req,
                        v1::GenerateResponse* resp) override;

 private:
  Engine& engine_;
  const Tokenizer* tokenizer_;
  Ledger* ledger_;
  const PriceTable* prices_;
  Clock* clock_;
  const Authenticator* auth_ = nullptr;
  const GenerateLimits limits_;
  CallGate& gate_;
  std::string model_;  // "id@revision"
};

}  // namespace kvtier
