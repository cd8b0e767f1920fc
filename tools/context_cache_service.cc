#include "tools/context_cache_service.h"

#include <grpcpp/grpcpp.h>

#include <future>

#include "proto/status_codes.h"

namespace kvtier {
namespace {

grpc::Status Invalid(std::string msg) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::move(msg));
}

}  // namespace

ContextCacheService::ContextCacheService(Engine& engine, const Tokenizer* tokenizer,
                                         const GenerateLimits& limits, CallGate& gate)
    : engine_(engine), tokenizer_(tokenizer), limits_(limits), gate_(gate) {
  const Namespace ns = engine.CacheNamespace("");
  model_ = ns.model_id + "@" + ns.model_revision;
}

grpc::Status ContextCacheService::Generate(grpc::ServerContext*, const v1::GenerateRequest* req,
                                           v1::GenerateResponse* resp) {
  auto pass = gate_.Enter();
  if (!pass) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "kvtierd is shutting down");
  const bool has_text = req->has_prompt(), has_ids = req->token_ids_size() > 0;
  if (has_text == has_ids) return Invalid("give exactly one of prompt and token_ids");
  if (req->prompt().size() > limits_.max_prompt_bytes) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        "prompt of " + std::to_string(req->prompt().size()) +
                            " bytes exceeds the limit of " +
                            std::to_string(limits_.max_prompt_bytes));
  }
  if (static_cast<size_t>(req->token_ids_size()) > limits_.max_prompt_tokens) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        "more than " + std::to_string(limits_.max_prompt_tokens) + " token ids");
  }
  const ModelConfig& model = engine_.weights().config;
  if (req->max_tokens() > static_cast<uint32_t>(model.max_seq_len)) {
    return Invalid("max_tokens exceeds the model's context of " +
                   std::to_string(model.max_seq_len));
  }

  GenerateRequest g;
  g.tenant = req->tenant().empty() ? "default" : req->tenant();
  g.cache_salt = g.tenant;
  if (has_text) {
    if (tokenizer_ == nullptr) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          "the model has no tokenizer: send token_ids");
    }
    Result<std::vector<TokenId>> ids = tokenizer_->Encode(req->prompt(), !req->no_bos(), false);
    if (!ids.ok()) return ToGrpcStatus(ids.status());
    g.prompt = std::move(*ids);
  } else {
    g.prompt.assign(req->token_ids().begin(), req->token_ids().end());
  }
  g.max_tokens = req->max_tokens() == 0 ? 16 : static_cast<int>(req->max_tokens());
  g.sampling.temperature = req->temperature();
  g.sampling.top_p = req->top_p() == 0 ? 1.0f : req->top_p();
  g.sampling.top_k = static_cast<int>(std::min<uint32_t>(req->top_k(), INT32_MAX));
  g.sampling.seed = req->seed();
  if (!req->ignore_eos() && tokenizer_ != nullptr) {
    for (TokenId t : {tokenizer_->bos_id(), tokenizer_->eos_id()}) {
      if (t >= 0) g.stop_tokens.push_back(t);
    }
  }
  const TokenId last_prompt_token = g.prompt.back();

  std::promise<GenerateResult> done;
  std::future<GenerateResult> result = done.get_future();
  Result<RequestId> id =
      engine_.Submit(std::move(g), [&done](GenerateResult r) { done.set_value(std::move(r)); });
  if (!id.ok()) return ToGrpcStatus(id.status());
  // The engine finishes every request it accepted (at the latest when it
  // shuts down), so this wait ends.
  GenerateResult r = result.get();
  if (!r.status.ok()) return ToGrpcStatus(r.status);

  if (tokenizer_ != nullptr) {
    // The text leaves out the stop token, as llama2.c's run.c does.
    std::span<const TokenId> shown(r.tokens);
    if (r.finish_reason == "stop" && !shown.empty()) shown = shown.first(shown.size() - 1);
    resp->set_text(tokenizer_->Decode(last_prompt_token, shown));
  }
  for (TokenId t : r.tokens) resp->add_token_ids(t);
  resp->set_prompt_tokens(r.prompt_tokens);
  resp->set_cached_tokens(r.cached_tokens);
  resp->set_cache_write_blocks(r.published_blocks);
  resp->set_finish_reason(r.finish_reason);
  resp->set_ttft_ms(r.ttft_ms);
  resp->set_total_ms(r.total_ms);
  resp->set_model(model_);
  return grpc::Status::OK;
}

}  // namespace kvtier
