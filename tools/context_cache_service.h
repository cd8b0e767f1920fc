// ContextCacheService: inference through kvtierd's engine (DESIGN §9).
//
// Generate tokenizes the prompt (or takes ids), runs it on the engine with
// the tenant's cache salt (tenants never share blocks), and answers with the
// text and what the cache gave and took. The context-caching API of TTL
// classes, named caches and billing grows from here.
#pragma once

#include <cstdint>
#include <string>

#include "engine/engine.h"
#include "engine/tokenizer.h"
#include "proto/kvtier.grpc.pb.h"
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
  // `engine` must outlive the service; `tokenizer` may be null (ids only).
  ContextCacheService(Engine& engine, const Tokenizer* tokenizer, const GenerateLimits& limits,
                      CallGate& gate);

  grpc::Status Generate(grpc::ServerContext* ctx, const v1::GenerateRequest* req,
                        v1::GenerateResponse* resp) override;

 private:
  Engine& engine_;
  const Tokenizer* tokenizer_;
  const GenerateLimits limits_;
  CallGate& gate_;
  std::string model_;  // "id@revision"
};

}  // namespace kvtier
