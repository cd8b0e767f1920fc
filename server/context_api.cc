#include "server/context_api.h"

#include <algorithm>
#include <cstdio>
#include <future>
#include <memory>
#include <optional>
#include <random>
#include <utility>
#include <vector>

#include "common/log.h"
#include "context/usage.h"
#include "proto/status_codes.h"

namespace kvtier {
namespace {

grpc::Status Invalid(const std::string& msg) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, msg);
}

// "req_" and 24 random hex digits: the id of a request that brought none.
std::string NewRequestId() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[32];
  std::snprintf(buf, sizeof buf, "req_%016llx%08llx", static_cast<unsigned long long>(rng()),
                static_cast<unsigned long long>(rng() & 0xffffffffu));
  return buf;
}

void FillUsage(const Usage& u, v1::Usage* out) {
  out->set_input_tokens(u.input_tokens);
  out->set_cache_creation_input_tokens(u.cache_creation_input_tokens());
  out->mutable_cache_creation()->set_ephemeral_5m_input_tokens(u.cache_creation_5m);
  out->mutable_cache_creation()->set_ephemeral_1h_input_tokens(u.cache_creation_1h);
  out->set_cache_read_input_tokens(u.cache_read_input_tokens);
  out->set_output_tokens(u.output_tokens);
}

// The ledger keeps one record per (tenant, request id). The records kvtierd
// makes itself (a named cache's creation and each storage charge) have ids
// under these prefixes, which a client's request id may not use: one that
// did would make the ledger take the charge for a retry of the client's
// request and drop it.
constexpr std::string_view kCreateIdPrefix = "create/";
constexpr std::string_view kStorageIdPrefix = "storage/";

grpc::Status CheckClientRequestId(const std::string& id) {
  for (std::string_view reserved : {kCreateIdPrefix, kStorageIdPrefix}) {
    if (id.starts_with(reserved)) {
      return Invalid("request_id may not begin with \"" + std::string(reserved) +
                     "\" (kvtierd's own records use it)");
    }
  }
  return grpc::Status::OK;
}

}  // namespace

ContextApi::ContextApi(Engine& engine, const Tokenizer* tokenizer, Ledger* ledger,
                       const PriceTable* prices, Clock* clock, const GenerateLimits& limits,
                       const CacheSecret& secret)
    : engine_(engine),
      tokenizer_(tokenizer),
      ledger_(ledger),
      prices_(prices),
      clock_(clock),
      limits_(limits),
      secret_(secret) {
  const Namespace ns = engine.CacheNamespace("");
  model_ = ns.model_id + "@" + ns.model_revision;
}

// A Generate turned into an engine request, and what its bill needs besides
// the engine's result. Submit takes `request`; the rest stays for the bill.
struct ContextApi::GeneratePlan {
  GenerateRequest request;
  std::vector<CacheBreakpoint> marked;  // every breakpoint the segments asked for
  // The cache writes the request is billed for: the cacheable breakpoints
  // asked for (none for a named cache, whose writes its storage pays for).
  std::vector<CacheBreakpoint> billed_breakpoints;
  uint64_t named_tokens = 0;  // a named cache's tokens put first, billed as reads
};

grpc::Status ContextApi::Generate(const Principal& caller, const v1::GenerateRequest& req,
                                  GenerateSink* sink, v1::GenerateResponse* final) {
  if (grpc::Status s = CheckGenerate(req, caller.tenant); !s.ok()) return s;
  // Backpressure: a bounded number of requests generate at once; the next
  // one is told so at once rather than queued without bound.
  struct Slot {
    std::atomic<int>& n;
    ~Slot() { n.fetch_sub(1); }
  } slot{generating_};
  if (generating_.fetch_add(1) >= limits_.max_concurrent_requests) {
    ++refused_busy_;
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        "kvtierd is serving its limit of " +
                            std::to_string(limits_.max_concurrent_requests) +
                            " generation requests (--max-concurrent-requests); retry later",
                        kBusyDetail);
  }
  GeneratePlan plan;
  if (grpc::Status s = PlanPrompt(req, caller, &plan); !s.ok()) return s;
  SetSampling(req, &plan.request);

  GenerateMessages messages(tokenizer_, plan.request.stop_tokens, plan.request.prompt.back(),
                            {req.stop_sequences().begin(), req.stop_sequences().end()});
  std::shared_ptr<GenerateStream> stream = GenerateStream::Attach(&plan.request);
  const uint64_t prompt_tokens = plan.request.prompt.size();
  Result<RequestId> id = engine_.Submit(std::move(plan.request), stream->OnDone());
  if (!id.ok()) return ToGrpcStatus(id.status());
  // What the prompt reads and writes is known once the engine admits it.
  auto prompt_usage = [&](uint32_t hit) {
    v1::Usage u;
    FillUsage(ComputeUsage(prompt_tokens, std::max<uint64_t>(hit, plan.named_tokens),
                           plan.billed_breakpoints, 0),
              &u);
    return u;
  };
  // The engine finishes every request it accepted (at the latest when it
  // shuts down), so this returns.
  const GenerateResult r = stream->Relay(engine_, *id, sink, &messages, prompt_usage);
  if (!r.status.ok()) return ToGrpcStatus(r.status);
  final->Clear();
  FillResult(r, final);
  messages.Finish(final);
  return Bill(req, caller.tenant, plan, r, final);
}

grpc::Status ContextApi::CountTokens(const Principal& caller, const v1::GenerateRequest& req,
                                     uint64_t* tokens) const {
  if (grpc::Status s = CheckGenerate(req, caller.tenant); !s.ok()) return s;
  GeneratePlan plan;
  if (grpc::Status s = PlanPrompt(req, caller, &plan); !s.ok()) return s;
  *tokens = plan.request.prompt.size();
  return grpc::Status::OK;
}

grpc::Status ContextApi::CheckGeneration(const Principal& caller, const v1::GenerateRequest& req,
                                         uint64_t* tokens) const {
  if (grpc::Status s = CheckGenerate(req, caller.tenant); !s.ok()) return s;
  GeneratePlan plan;
  if (grpc::Status s = PlanPrompt(req, caller, &plan); !s.ok()) return s;
  SetSampling(req, &plan.request);
  if (Status s = engine_.Check(plan.request); !s.ok()) return ToGrpcStatus(s);
  *tokens = plan.request.prompt.size();
  return grpc::Status::OK;
}

grpc::Status ContextApi::CheckGenerate(const v1::GenerateRequest& req,
                                       const std::string& tenant) const {
  const bool has_text = req.has_prompt(), has_ids = req.token_ids_size() > 0,
             has_segments = req.segments_size() > 0;
  if (int(has_text) + int(has_ids) + int(has_segments) != 1) {
    return Invalid("give exactly one of prompt, token_ids and segments");
  }
  if (!req.model().empty() && req.model() != model_ &&
      req.model() != model_.substr(0, model_.find('@'))) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        "unknown model '" + req.model() + "': this kvtierd serves " + model_);
  }
  {
    // The ledger's rules for what it records, checked before any work.
    UsageRecord probe;
    probe.request_id = req.request_id().empty() ? "r" : req.request_id();
    probe.tenant = tenant;
    probe.model = "m";
    if (!ValidateUsageRecord(probe).ok()) {
      return Invalid("tenant and request_id must be printable ASCII of at most 256 bytes");
    }
  }
  if (grpc::Status s = CheckClientRequestId(req.request_id()); !s.ok()) return s;
  if (req.prompt().size() > limits_.max_prompt_bytes) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        "prompt of " + std::to_string(req.prompt().size()) +
                            " bytes exceeds the limit of " +
                            std::to_string(limits_.max_prompt_bytes));
  }
  if (static_cast<size_t>(req.token_ids_size()) > limits_.max_prompt_tokens) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        "more than " + std::to_string(limits_.max_prompt_tokens) + " token ids");
  }
  if (static_cast<size_t>(req.stop_sequences_size()) > limits_.max_stop_sequences) {
    return Invalid("more than " + std::to_string(limits_.max_stop_sequences) + " stop sequences");
  }
  for (const std::string& stop : req.stop_sequences()) {
    if (stop.empty() || stop.size() > limits_.max_stop_bytes) {
      return Invalid("a stop sequence must have 1 to " + std::to_string(limits_.max_stop_bytes) +
                     " bytes");
    }
  }
  if (req.stop_sequences_size() > 0 && tokenizer_ == nullptr) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "the model has no tokenizer: stop sequences need one");
  }
  const ModelConfig& model = engine_.weights().config;
  if (req.max_tokens() > static_cast<uint32_t>(model.max_seq_len)) {
    return Invalid("max_tokens exceeds the model's context of " +
                   std::to_string(model.max_seq_len));
  }
  return grpc::Status::OK;
}

grpc::Status ContextApi::PlanPrompt(const v1::GenerateRequest& req, const Principal& caller,
                                    GeneratePlan* plan) const {
  GenerateRequest& g = plan->request;
  g.tenant = caller.tenant;
  // A client's cache key partitions its tenant's cache; it never reaches
  // another tenant's, whose salt is another scope.
  g.cache_salt = secret_.ScopedSalt(caller.cache_salt, req.cache_key());
  if (req.segments_size() > 0) {
    if (grpc::Status s = PromptFromSegments(req, plan); !s.ok()) return s;
  } else if (req.has_prompt()) {
    if (grpc::Status s = Tokenize(req.prompt(), !req.no_bos(), &g.prompt); !s.ok()) return s;
  } else {
    g.prompt.assign(req.token_ids().begin(), req.token_ids().end());
  }
  plan->billed_breakpoints = g.breakpoints;
  if (!req.cached_content().empty()) {
    if (grpc::Status s = SpliceNamedCache(req, caller.tenant, plan); !s.ok()) return s;
  }
  if (g.prompt.empty()) return Invalid("the prompt is empty");
  return grpc::Status::OK;
}

// Segments: their text tokenized (BOS before the first unless no_bos) and
// their ids, in order; a segment with cache_control marks the prefix up to
// its end as cacheable, and only marked prefixes are written.
grpc::Status ContextApi::PromptFromSegments(const v1::GenerateRequest& req,
                                            GeneratePlan* plan) const {
  GenerateRequest& g = plan->request;
  if (static_cast<size_t>(req.segments_size()) > limits_.max_segments) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        "more than " + std::to_string(limits_.max_segments) + " segments");
  }
  size_t text_bytes = 0;
  for (int i = 0; i < req.segments_size(); ++i) {
    const v1::Segment& seg = req.segments(i);
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
      std::vector<TokenId> ids;
      if (grpc::Status s = Tokenize(seg.text(), i == 0 && !req.no_bos(), &ids); !s.ok()) return s;
      g.prompt.insert(g.prompt.end(), ids.begin(), ids.end());
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
      plan->marked.push_back(CacheBreakpoint{static_cast<uint32_t>(g.prompt.size()), *ttl});
    }
  }
  if (g.prompt.empty()) return Invalid("the prompt is empty");
  if (Status s = ValidateBreakpoints(plan->marked, g.prompt.size()); !s.ok()) {
    return ToGrpcStatus(s);
  }
  g.breakpoints_only = true;
  g.breakpoints = CacheableBreakpoints(plan->marked, limits_.min_cacheable_tokens);
  return grpc::Status::OK;
}

// A named cache's tokens come first; they are billed as reads (the cache is
// a promise: whatever of its KV is gone is recomputed, and written back to
// live until the cache expires).
grpc::Status ContextApi::SpliceNamedCache(const v1::GenerateRequest& req, const std::string& tenant,
                                          GeneratePlan* plan) const {
  GenerateRequest& g = plan->request;
  if (named_ == nullptr) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "named caches are not enabled");
  }
  if (!plan->marked.empty()) return Invalid("cache_control cannot be combined with cached_content");
  Result<NamedCache> nc = named_->Get(tenant, req.cached_content());
  if (!nc.ok()) return ToGrpcStatus(nc.status());
  if (nc->model != model_) {
    return grpc::Status(
        grpc::StatusCode::FAILED_PRECONDITION,
        "named cache " + nc->name + " was made for model " + nc->model + ", not " + model_);
  }
  // The text that follows a cache is not the start of a prompt: no BOS.
  const bool tokenized = req.has_prompt() || req.segments_size() > 0;
  if (tokenized && tokenizer_ != nullptr && !g.prompt.empty() &&
      g.prompt.front() == tokenizer_->bos_id()) {
    g.prompt.erase(g.prompt.begin());
  }
  plan->named_tokens = nc->tokens.size();
  std::vector<TokenId> prompt(nc->tokens.begin(), nc->tokens.end());
  prompt.insert(prompt.end(), g.prompt.begin(), g.prompt.end());
  if (prompt.size() > limits_.max_prompt_tokens) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        "the named cache and the prompt exceed " +
                            std::to_string(limits_.max_prompt_tokens) + " tokens");
  }
  g.prompt = std::move(prompt);
  g.breakpoints_only = true;
  g.breakpoints = {CacheBreakpoint{static_cast<uint32_t>(plan->named_tokens), TtlClass::k1h}};
  g.fixed_expiry_ms = nc->expire_time_ms;
  plan->billed_breakpoints.clear();
  return grpc::Status::OK;
}

void ContextApi::SetSampling(const v1::GenerateRequest& req, GenerateRequest* g) const {
  g->max_tokens = req.max_tokens() == 0 ? 16 : static_cast<int>(req.max_tokens());
  g->sampling.temperature = req.temperature();
  g->sampling.top_p = req.top_p() == 0 ? 1.0f : req.top_p();
  g->sampling.top_k = static_cast<int>(std::min<uint32_t>(req.top_k(), INT32_MAX));
  g->sampling.seed = req.seed();
  if (!req.ignore_eos() && tokenizer_ != nullptr) {
    for (TokenId t : {tokenizer_->bos_id(), tokenizer_->eos_id()}) {
      if (t >= 0) g->stop_tokens.push_back(t);
    }
  }
}

void ContextApi::FillResult(const GenerateResult& r, v1::GenerateResponse* out) const {
  out->set_prompt_tokens(r.prompt_tokens);
  out->set_cached_tokens(r.cached_tokens);
  out->set_cache_write_blocks(r.published_blocks);
  out->set_finish_reason(r.finish_reason);
  out->set_ttft_ms(r.ttft_ms);
  out->set_total_ms(r.total_ms);
  out->set_model(model_);
}

grpc::Status ContextApi::Bill(const v1::GenerateRequest& req, const std::string& tenant,
                              const GeneratePlan& plan, const GenerateResult& r,
                              v1::GenerateResponse* out) {
  // Usage (DESIGN §6). Automatic caching (no segments) writes nothing the
  // request is billed for: its hit is a read, the rest input.
  const Usage u =
      ComputeUsage(r.prompt_tokens, std::max<uint64_t>(r.cache_hit_tokens, plan.named_tokens),
                   plan.billed_breakpoints, r.tokens.size());
  FillUsage(u, out->mutable_usage());
  // The usage is recorded, durably and once per request id, before the
  // answer leaves: a client that gets an answer is billed exactly once.
  UsageRecord rec;
  rec.request_id = req.request_id().empty() ? NewRequestId() : req.request_id();
  rec.tenant = tenant;
  rec.model = model_;
  rec.time_ms = clock_->NowMs();
  rec.usage = u;
  if (prices_ != nullptr) rec.cost = Price(prices_->For(model_), u);
  if (grpc::Status s = Record(rec); !s.ok()) return s;
  out->set_request_id(rec.request_id);
  out->set_cost_usd(FormatUsd(rec.cost.total()));
  ++billed_.requests;
  billed_.input += u.input_tokens;
  billed_.write_5m += u.cache_creation_5m;
  billed_.write_1h += u.cache_creation_1h;
  billed_.read += u.cache_read_input_tokens;
  billed_.output += u.output_tokens;
  billed_.cost_nanousd += rec.cost.total();
  ttft_.Observe(r.ttft_ms / 1000.0);
  total_.Observe(r.total_ms / 1000.0);
  queue_.Observe(r.queue_ms / 1000.0);
  return grpc::Status::OK;
}

grpc::Status ContextApi::Tokenize(const std::string& text, bool bos,
                                  std::vector<TokenId>* ids) const {
  if (tokenizer_ == nullptr) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "the model has no tokenizer: send token_ids");
  }
  Result<std::vector<TokenId>> encoded = tokenizer_->Encode(text, bos, false);
  if (!encoded.ok()) return ToGrpcStatus(encoded.status());
  *ids = std::move(*encoded);
  return grpc::Status::OK;
}

grpc::Status ContextApi::NamedCachesEnabled() const {
  if (named_ == nullptr) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "named caches are not enabled");
  }
  return grpc::Status::OK;
}

grpc::Status ContextApi::Record(const UsageRecord& record) {
  if (ledger_ == nullptr) return grpc::Status::OK;
  if (Status s = ledger_->Append(record); !s.ok()) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "the usage could not be recorded (" + s.message() +
                            "); retry with request_id " + record.request_id);
  }
  return grpc::Status::OK;
}

UsageRecord ContextApi::StorageRecord(const ModelPrice& price, const std::string& tenant,
                                      const NamedCache& c, double hours,
                                      const std::string& period) const {
  UsageRecord r;
  // One charge per period, billed once.
  r.request_id = std::string(kStorageIdPrefix) + c.name + "/" + period;
  r.tenant = tenant;
  r.model = c.model;
  r.time_ms = clock_->NowMs();
  r.kind = RecordKind::kStorage;
  r.cache_name = c.name;
  r.storage_tokens = c.token_count;
  r.storage_hours = hours;
  r.storage_cost = StorageCharge(price, c.token_count, hours);
  return r;
}

void ContextApi::AppendMetrics(MetricsText* m) const {
  m->Counter("kvtier_billed_requests_total", "Generate requests recorded in the ledger.",
             billed_.requests);
  for (auto [kind, value] :
       {std::pair{"input", billed_.input.load()},
        std::pair{"cache_write_5m", billed_.write_5m.load()},
        std::pair{"cache_write_1h", billed_.write_1h.load()},
        std::pair{"cache_read", billed_.read.load()}, std::pair{"output", billed_.output.load()}}) {
    m->Counter("kvtier_billed_tokens_total", "Tokens billed, by kind (DESIGN 6).", value,
               {{"kind", kind}});
  }
  m->Counter("kvtier_billed_usd_total", "Dollars billed for requests.",
             static_cast<double>(billed_.cost_nanousd.load()) / kNanoUsdPerUsd);
  m->Counter("kvtier_billed_storage_usd_total", "Dollars billed for named-cache storage.",
             static_cast<double>(billed_.storage_nanousd.load()) / kNanoUsdPerUsd);
  m->Gauge("kvtier_generate_in_flight", "Generation requests being served now.",
           generating_.load());
  m->Counter("kvtier_generate_refused_busy_total",
             "Generation requests refused at --max-concurrent-requests.", refused_busy_.load());
  m->Histogram("kvtier_generate_ttft_seconds", "Time to the first token of a Generate.",
               ttft_.Snapshot());
  m->Histogram("kvtier_generate_seconds", "Time from submission to the end of a Generate.",
               total_.Snapshot());
  m->Histogram("kvtier_generate_queue_seconds",
               "Time a Generate waited for the engine to admit it (a batch slot and KV pages).",
               queue_.Snapshot());
}

void ContextApi::FillCacheInfo(const NamedCache& c, v1::NamedCacheInfo* out) const {
  out->set_name(c.name);
  out->set_model(c.model);
  out->set_tokens(c.token_count);
  out->set_create_time_ms(c.create_time_ms);
  out->set_expire_time_ms(c.expire_time_ms);
  out->set_ttl_seconds(c.ttl_ms / 1000);
  out->set_display_name(c.display_name);
}

namespace {

// The expiry a request asks for: exactly one of ttl_seconds and expire_time_ms.
Result<NamedCacheExpiry> ExpiryOf(uint32_t ttl_seconds, int64_t expire_time_ms) {
  if ((ttl_seconds != 0) == (expire_time_ms != 0)) {
    return Status::InvalidArgument("give exactly one of ttl_seconds and expire_time_ms");
  }
  return ttl_seconds != 0 ? NamedCacheExpiry::Ttl(int64_t{ttl_seconds} * 1000)
                          : NamedCacheExpiry::At(expire_time_ms);
}

}  // namespace

grpc::Status ContextApi::CreateCache(const Principal& caller, const v1::CreateCacheRequest& request,
                                     v1::NamedCacheInfo* resp) {
  if (grpc::Status s = NamedCachesEnabled(); !s.ok()) return s;
  const v1::CreateCacheRequest* req = &request;
  const std::string& tenant = caller.tenant;
  if (req->has_text() == (req->token_ids_size() > 0)) {
    return Invalid("give exactly one of text and token_ids");
  }
  if (req->text().size() > limits_.max_prompt_bytes) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        "text of " + std::to_string(req->text().size()) +
                            " bytes exceeds the limit of " +
                            std::to_string(limits_.max_prompt_bytes));
  }
  Result<NamedCacheExpiry> expiry = ExpiryOf(req->ttl_seconds(), req->expire_time_ms());
  if (!expiry.ok()) return ToGrpcStatus(expiry.status());
  std::vector<TokenId> tokens;
  if (req->has_text()) {
    if (grpc::Status s = Tokenize(req->text(), !req->no_bos(), &tokens); !s.ok()) return s;
  } else {
    tokens.assign(req->token_ids().begin(), req->token_ids().end());
  }
  const ModelConfig& model = engine_.weights().config;
  for (TokenId t : tokens) {
    if (t < 0 || t >= model.vocab_size) {
      return Invalid("token id " + std::to_string(t) + " is outside the vocabulary of " +
                     std::to_string(model.vocab_size));
    }
  }
  if (tokens.size() + 1 > static_cast<size_t>(model.max_seq_len)) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        "a cache of " + std::to_string(tokens.size()) +
                            " tokens leaves no room in the model's context of " +
                            std::to_string(model.max_seq_len));
  }
  if (grpc::Status s = CheckClientRequestId(req->request_id()); !s.ok()) return s;
  (void)named_->Sweep();  // expired caches do not count against the tenant's limit
  // Idempotent on the request id: a retry returns the cache the first call
  // made, and the records below (keyed by the cache's name, which is never
  // reused) are billed once. A request id whose cache was deleted makes a
  // new cache, billed as such.
  Result<NamedCache> c =
      named_->Create(tenant, model_, tokens, *expiry, req->display_name(), req->request_id());
  if (!c.ok()) return ToGrpcStatus(c.status());

  // Its KV, computed once now (and again whenever it has been dropped),
  // lives until the cache expires.
  GenerateRequest g;
  g.tenant = tenant;
  g.cache_salt = caller.cache_salt;
  g.prompt = tokens;
  g.max_tokens = 1;
  g.breakpoints_only = true;
  g.breakpoints = {CacheBreakpoint{static_cast<uint32_t>(tokens.size()), TtlClass::k1h}};
  g.fixed_expiry_ms = c->expire_time_ms;
  std::promise<GenerateResult> done;
  std::future<GenerateResult> result = done.get_future();
  Result<RequestId> id =
      engine_.Submit(std::move(g), [&done](GenerateResult r) { done.set_value(std::move(r)); });
  if (id.ok()) (void)result.get();  // a failure only means the KV is computed at first use

  // Billed: its tokens once as input, and storage for its whole lifetime.
  const int64_t now = clock_->NowMs();
  const ModelPrice& price = prices_ != nullptr ? prices_->For(model_) : ModelPrice();
  const double hours = static_cast<double>(c->expire_time_ms - c->create_time_ms) / 3.6e6;
  UsageRecord create;
  create.request_id = std::string(kCreateIdPrefix) + c->name;
  create.tenant = tenant;
  create.model = model_;
  create.time_ms = now;
  create.usage.input_tokens = tokens.size();
  create.cost = Price(price, create.usage);
  const UsageRecord storage =
      StorageRecord(price, tenant, *c, hours, std::to_string(c->create_time_ms));
  grpc::Status recorded = Record(create);
  if (recorded.ok()) recorded = Record(storage);
  if (!recorded.ok()) {
    // Unbilled, the cache is not kept. If the creation record was written
    // and only the storage one failed, that record stays: the tenant is
    // billed the cache's input tokens once, for a cache deleted here (a
    // retry makes a new cache, with a new name and records of its own).
    if (Status s = named_->Delete(tenant, c->name); !s.ok()) {
      LogError("named_cache_unbilled",
               LogFields().Add("tenant", tenant).Add("name", c->name).Add("error", s.message()));
    }
    return recorded;
  }
  billed_.storage_nanousd += storage.storage_cost;
  FillCacheInfo(*c, resp);
  resp->set_storage_cost_usd(FormatUsd(storage.storage_cost));
  return grpc::Status::OK;
}

grpc::Status ContextApi::GetCache(const Principal& caller, const std::string& name,
                                  v1::NamedCacheInfo* resp) const {
  if (grpc::Status s = NamedCachesEnabled(); !s.ok()) return s;
  Result<NamedCache> c = named_->Get(caller.tenant, name);
  if (!c.ok()) return ToGrpcStatus(c.status());
  FillCacheInfo(*c, resp);
  return grpc::Status::OK;
}

grpc::Status ContextApi::ListCaches(const Principal& caller, v1::ListCachesResponse* resp) const {
  if (grpc::Status s = NamedCachesEnabled(); !s.ok()) return s;
  Result<std::vector<NamedCache>> list = named_->List(caller.tenant);
  if (!list.ok()) return ToGrpcStatus(list.status());
  for (const NamedCache& c : *list) FillCacheInfo(c, resp->add_caches());
  return grpc::Status::OK;
}

grpc::Status ContextApi::UpdateCache(const Principal& caller, const v1::UpdateCacheRequest& request,
                                     v1::NamedCacheInfo* resp) {
  if (grpc::Status s = NamedCachesEnabled(); !s.ok()) return s;
  const v1::UpdateCacheRequest* req = &request;
  const std::string& tenant = caller.tenant;
  Result<NamedCacheExpiry> expiry = ExpiryOf(req->ttl_seconds(), req->expire_time_ms());
  if (!expiry.ok()) return ToGrpcStatus(expiry.status());
  // One update at a time: each is charged for the time it added to the one
  // before it (concurrent updates all read the same old expiry and were
  // each charged for the whole extension), and one whose charge cannot be
  // recorded is undone before another comes.
  std::lock_guard<std::mutex> lock(update_mu_);
  Result<NamedCache> before = named_->Get(tenant, req->name());
  if (!before.ok()) return ToGrpcStatus(before.status());
  const int64_t previous = before->expire_time_ms;
  Result<int64_t> until = named_->UpdateTtl(tenant, req->name(), *expiry);
  if (!until.ok()) return ToGrpcStatus(until.status());
  // Storage for the time added (a shortened cache is not refunded).
  NamedCache after = *before;
  after.expire_time_ms = *until;
  after.ttl_ms = expiry->ttl_ms.value_or(0);
  NanoUsd charge = 0;
  if (*until > previous) {
    const ModelPrice& price = prices_ != nullptr ? prices_->For(model_) : ModelPrice();
    const UsageRecord storage =
        StorageRecord(price, tenant, *before, static_cast<double>(*until - previous) / 3.6e6,
                      std::to_string(previous) + "-" + std::to_string(*until));
    charge = storage.storage_cost;
    if (grpc::Status s = Record(storage); !s.ok()) {
      // Unbilled, the extension is undone: the cache expires when it did
      // (its ttl_seconds then reads 0, as for a cache given an expire time).
      (void)named_->UpdateTtl(tenant, req->name(), NamedCacheExpiry::At(previous));
      return s;
    }
    billed_.storage_nanousd += charge;
  }
  FillCacheInfo(after, resp);
  resp->set_storage_cost_usd(FormatUsd(charge));
  return grpc::Status::OK;
}

grpc::Status ContextApi::DeleteCache(const Principal& caller, const std::string& name) {
  if (grpc::Status s = NamedCachesEnabled(); !s.ok()) return s;
  return ToGrpcStatus(named_->Delete(caller.tenant, name));
}

}  // namespace kvtier
