// `generate`: a prompt (text or token ids, parts of it marked cacheable)
// through the daemon's engine; the text to stdout, the usage to stderr.
#include <cstdlib>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tools/kvtier/cli_flags.h"
#include "tools/kvtier/command.h"

namespace kvtier::cli {

using nlohmann::json;

namespace {

// --tokens with --cache-control END:TTL,...: a segment ends at each END
// (tokens), marked with TTL; the rest of the prompt follows unmarked.
Status AddTokenSegments(const std::vector<int32_t>& ids, const std::string& cache_control,
                        v1::GenerateRequest* req) {
  size_t begin = 0;
  std::stringstream items(cache_control);
  for (std::string item; std::getline(items, item, ',');) {
    const size_t colon = item.find(':');
    Result<int64_t> end = ParseInt(item.substr(0, colon));
    if (colon == std::string::npos || !end.ok() || static_cast<size_t>(*end) <= begin ||
        static_cast<size_t>(*end) > ids.size()) {
      return Status::InvalidArgument(
          "--cache-control with --tokens takes END:TTL,... with END increasing "
          "token counts within the prompt, e.g. 3000:1h,5000:5m");
    }
    v1::Segment* seg = req->add_segments();
    seg->mutable_token_ids()->Add(ids.begin() + begin, ids.begin() + *end);
    seg->mutable_cache_control()->set_ttl(item.substr(colon + 1));
    begin = static_cast<size_t>(*end);
  }
  if (begin < ids.size()) {
    req->add_segments()->mutable_token_ids()->Add(ids.begin() + begin, ids.end());
  }
  return Status::Ok();
}

// --prompt or --tokens, marked cacheable by --cache-control.
Status GeneratePrompt(const FlagSet& flags, v1::GenerateRequest* req) {
  if (flags.Has("prompt") == flags.Has("tokens")) {
    return Status::InvalidArgument("generate needs exactly one of --prompt and --tokens");
  }
  const std::string cache_control = flags.Get("cache-control");
  if (flags.Has("prompt") && cache_control.empty()) {
    req->set_prompt(flags.Get("prompt"));
  } else if (flags.Has("prompt")) {
    // The whole text, cacheable for one TTL.
    v1::Segment* seg = req->add_segments();
    seg->set_text(flags.Get("prompt"));
    seg->mutable_cache_control()->set_ttl(cache_control);
  } else {
    KVTIER_ASSIGN_OR_RETURN(const std::vector<int32_t> ids, TokensFlag(flags));
    if (!cache_control.empty()) return AddTokenSegments(ids, cache_control, req);
    for (int32_t t : ids) req->add_token_ids(t);
  }
  return Status::Ok();
}

// --max-tokens, --top-k, --seed, --temperature and --top-p.
Status SamplingFlags(const FlagSet& flags, v1::GenerateRequest* req) {
  for (auto [flag, setter] :
       {std::pair<const char*, std::function<void(int64_t)>>{
            "max-tokens", [&](int64_t v) { req->set_max_tokens(static_cast<uint32_t>(v)); }},
        {"top-k", [&](int64_t v) { req->set_top_k(static_cast<uint32_t>(v)); }},
        {"seed", [&](int64_t v) { req->set_seed(static_cast<uint64_t>(v)); }}}) {
    if (!flags.Has(flag)) continue;
    Result<int64_t> v = ParseInt(flags.Get(flag));
    if (!v.ok() || *v < 0 || *v > UINT32_MAX) {
      return Status::InvalidArgument(std::string("--") + flag + " needs a non-negative integer");
    }
    setter(*v);
  }
  for (auto [flag, setter] : {std::pair<const char*, std::function<void(float)>>{
                                  "temperature", [&](float v) { req->set_temperature(v); }},
                              {"top-p", [&](float v) { req->set_top_p(v); }}}) {
    if (!flags.Has(flag)) continue;
    char* end = nullptr;
    const std::string text = flags.Get(flag);
    const float v = std::strtof(text.c_str(), &end);
    if (text.empty() || *end != '\0') {
      return Status::InvalidArgument(std::string("--") + flag + " needs a number");
    }
    setter(v);
  }
  return Status::Ok();
}

Result<v1::GenerateRequest> GenerateRequestFromFlags(const FlagSet& flags) {
  v1::GenerateRequest req;
  KVTIER_RETURN_IF_ERROR(GeneratePrompt(flags, &req));
  req.set_request_id(flags.Get("request-id"));
  req.set_cached_content(flags.Get("cached-content"));
  KVTIER_RETURN_IF_ERROR(SamplingFlags(flags, &req));
  req.set_tenant(flags.Get("tenant"));
  req.set_no_bos(flags.Has("no-bos"));
  req.set_ignore_eos(flags.Has("ignore-eos"));
  return req;
}

json GenerateJson(const v1::GenerateResponse& r) {
  json j = {{"ok", true},
            {"text", r.text()},
            {"token_ids", std::vector<int32_t>(r.token_ids().begin(), r.token_ids().end())},
            {"prompt_tokens", r.prompt_tokens()},
            {"cached_tokens", r.cached_tokens()},
            {"cache_write_blocks", r.cache_write_blocks()},
            {"finish_reason", r.finish_reason()},
            {"ttft_ms", r.ttft_ms()},
            {"total_ms", r.total_ms()},
            {"model", r.model()},
            {"request_id", r.request_id()}};
  const v1::Usage& u = r.usage();
  j["usage"] = {{"input_tokens", u.input_tokens()},
                {"cache_creation_input_tokens", u.cache_creation_input_tokens()},
                {"cache_creation",
                 {{"ephemeral_5m_input_tokens", u.cache_creation().ephemeral_5m_input_tokens()},
                  {"ephemeral_1h_input_tokens", u.cache_creation().ephemeral_1h_input_tokens()}}},
                {"cache_read_input_tokens", u.cache_read_input_tokens()},
                {"output_tokens", u.output_tokens()}};
  return j;
}

}  // namespace

Exit Generate(const Command& c) {
  Result<v1::GenerateRequest> req = GenerateRequestFromFlags(c.flags);
  if (!req.ok()) return UsageError(req.status());
  KVTIER_ASSIGN_OR_RETURN(const v1::GenerateResponse r, c.client.Generate(*req));
  c.out.Print(GenerateJson(r), r.text() + "\n");
  if (!c.out.as_json()) {
    // The text alone goes to stdout (pipeable); the usage to stderr.
    const v1::Usage& u = r.usage();
    std::cerr << "usage: input " << u.input_tokens() << ", cache write "
              << u.cache_creation_input_tokens() << " (5m "
              << u.cache_creation().ephemeral_5m_input_tokens() << ", 1h "
              << u.cache_creation().ephemeral_1h_input_tokens() << "), cache read "
              << u.cache_read_input_tokens() << ", output " << u.output_tokens() << "\n";
  }
  return {};
}

}  // namespace kvtier::cli
