#include "tools/context_cache_service.h"

#include <grpcpp/grpcpp.h>

#include <future>

#include "cache/context_usage.h"
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
  const bool has_text = req->has_prompt(), has_ids = req->token_ids_size() > 0,
             has_segments = req->segments_size() > 0;
  if (int(has_text) + int(has_ids) + int(has_segments) != 1) {
    return Invalid("give exactly one of prompt, token_ids and segments");
  }
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
  std::vector<CacheBreakpoint> marked;  // every breakpoint asked for
  if (has_segments) {
    if (static_cast<size_t>(req->segments_size()) > limits_.max_segments) {
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          "more than " + std::to_string(limits_.max_segments) + " segments");
    }
    size_t text_bytes = 0;
    for (int i = 0; i < req->segments_size(); ++i) {
      const v1::Segment& seg = req->segments(i);
      if (seg.has_text() == (seg.token_ids_size() > 0)) {
        return Invalid("segment " + std::to_string(i) + " needs exactly one of text and token_ids");
      }
      text_bytes += seg.text().size();
      if (text_bytes > limits_.max_prompt_bytes) {
        return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                            "the segments' text exceeds the limit of " +
                                std::to_string(limits_.max_prompt_bytes) + " bytes");
      }
      if (seg.has_text()) {
        if (tokenizer_ == nullptr) {
          return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                              "the model has no tokenizer: send token_ids");
        }
        Result<std::vector<TokenId>> ids =
            tokenizer_->Encode(seg.text(), i == 0 && !req->no_bos(), false);
        if (!ids.ok()) return ToGrpcStatus(ids.status());
        g.prompt.insert(g.prompt.end(), ids->begin(), ids->end());
      } else {
        g.prompt.insert(g.prompt.end(), seg.token_ids().begin(), seg.token_ids().end());
      }
      if (g.prompt.size() > limits_.max_prompt_tokens) {
        return grpc::Status(
            grpc::StatusCode::RESOURCE_EXHAUSTED,
            "the prompt exceeds " + std::to_string(limits_.max_prompt_tokens) + " tokens");
      }
      if (seg.has_cache_control()) {
        std::optional<TtlClass> ttl = ParseTtlClass(seg.cache_control().ttl());
        if (!ttl) {
          return Invalid("segment " + std::to_string(i) + ": cache_control ttl must be \"5m\" " +
                         "or \"1h\", not \"" + seg.cache_control().ttl() + "\"");
        }
        if (g.prompt.empty()) {
          return Invalid("segment " + std::to_string(i) + " marks an empty prefix as cacheable");
        }
        marked.push_back(CacheBreakpoint{static_cast<uint32_t>(g.prompt.size()), *ttl});
      }
    }
    if (g.prompt.empty()) return Invalid("the prompt is empty");
    if (Status s = ValidateBreakpoints(marked, g.prompt.size()); !s.ok()) {
      return ToGrpcStatus(s);
    }
    g.breakpoints_only = true;
    g.breakpoints = CacheableBreakpoints(marked, limits_.min_cacheable_tokens);
  } else if (has_text) {
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
  const std::vector<CacheBreakpoint> breakpoints = g.breakpoints;
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
  // Usage (DESIGN §6). Automatic caching (no segments) writes nothing the
  // request is billed for: its hit is a read, the rest input.
  const Usage u = ComputeUsage(r.prompt_tokens, r.cache_hit_tokens, breakpoints, r.tokens.size());
  v1::Usage* out = resp->mutable_usage();
  out->set_input_tokens(u.input_tokens);
  out->set_cache_creation_input_tokens(u.cache_creation_input_tokens());
  out->mutable_cache_creation()->set_ephemeral_5m_input_tokens(u.cache_creation_5m);
  out->mutable_cache_creation()->set_ephemeral_1h_input_tokens(u.cache_creation_1h);
  out->set_cache_read_input_tokens(u.cache_read_input_tokens);
  out->set_output_tokens(u.output_tokens);
  resp->set_request_id(req->request_id());
  return grpc::Status::OK;
}

}  // namespace kvtier
