#include "engine/engine.h"

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "common/clock.h"
#include "common/log.h"
#include "engine/engine_sequence.h"
#include "kernels/device.h"
#include "model/gpu_forward.h"

namespace kvtier {

struct Engine::Tenant {
  std::deque<std::unique_ptr<Sequence>> waiting;
  double service = 0;  // tokens computed, divided by the weight
  double weight = 1;
  int running = 0;
};

// One step's batch: the sequences that run and, in the same order, their
// chunks (pointing into the sequences' tokens and block tables).
struct Engine::Batch {
  std::vector<Sequence*> seqs;
  std::vector<SeqChunk> chunks;

  // Whether every sequence that samples this step (its chunk reaches its
  // end) is greedy and keeps no logits: then only the argmax of each row is
  // needed, computed where the logits are (on the GPU without moving them).
  bool NeedsOnlyArgmax() const;
};

namespace {

double MsSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

int64_t PagesFor(int64_t tokens, int block_tokens) {
  return (tokens + block_tokens - 1) / block_tokens;
}

}  // namespace

namespace {

bool OnGpu(const EngineOptions& o) {
  return o.device == "cuda" || (o.device == "auto" && DeviceAvailable());
}

// The side copy per page the CPU forward pass is to keep.
size_t SideBytes(const ModelConfig& c, const EngineOptions& o) {
  if (!o.cpu_keep_staged_tiles) return 0;
  return StagedSideBytes(c, o.block_tokens,
                         o.cpu_bf16_weights ? WeightType::kBf16 : WeightType::kF32);
}

// A page's cost of kv_bytes: its block, and on the CPU its side copy.
int64_t PageCost(const ModelConfig& c, const EngineOptions& o, bool on_gpu) {
  const auto block = static_cast<int64_t>(c.Kv(o.block_tokens, DType::kFloat32).BlockBytes());
  return block + (on_gpu ? 0 : static_cast<int64_t>(SideBytes(c, o)));
}

}  // namespace

int64_t Engine::KvBytesPerPage(const ModelConfig& c, const EngineOptions& o) {
  return PageCost(c, o, OnGpu(o));
}

Result<std::unique_ptr<Engine>> Engine::Open(const ModelWeights* weights, CacheManager* cache,
                                             const EngineOptions& options) {
  if (weights == nullptr) return Status::InvalidArgument("engine needs a model");
  KVTIER_RETURN_IF_ERROR(weights->config.Validate());
  if (!ValidBlockTokens(options.block_tokens)) {
    return Status::InvalidArgument("block_tokens must be a power of two in [16, 1024]");
  }
  if (options.clock == nullptr) return Status::InvalidArgument("engine needs a clock");
  if (options.max_batch_seqs < 1 || options.token_budget < 1) {
    return Status::InvalidArgument("max_batch_seqs and token_budget must be positive");
  }
  const bool on_gpu = OnGpu(options);  // asked once: the answer sizes the pages
  const int64_t page_bytes = PageCost(weights->config, options, on_gpu);
  const int64_t pages = options.kv_bytes / page_bytes;
  if (pages < 1) {
    return Status::InvalidArgument("kv_bytes " + std::to_string(options.kv_bytes) +
                                   " holds no page of " + std::to_string(page_bytes) + " bytes");
  }
  if (pages > INT32_MAX) return Status::InvalidArgument("kv_bytes holds too many pages");
  std::unique_ptr<ForwardBackend> gpu;
  if (on_gpu) {
    GpuForwardOptions g;
    g.weights = options.gpu_bf16_weights ? GpuWeights::kBFloat16 : GpuWeights::kFloat32;
    g.num_pages = static_cast<int32_t>(pages);
    g.block_tokens = options.block_tokens;
    g.max_batch_tokens = options.token_budget;
    g.max_batch_chunks = options.max_batch_seqs;
    KVTIER_ASSIGN_OR_RETURN(gpu, GpuForward::Create(*weights, g));
  } else if (options.device != "cpu" && options.device != "auto") {
    return Status::InvalidArgument("device must be cpu, cuda or auto, got \"" + options.device +
                                   "\"");
  }
  return std::unique_ptr<Engine>(
      new Engine(weights, cache, options, std::move(gpu), static_cast<int32_t>(pages)));
}

Engine::Engine(const ModelWeights* weights, CacheManager* cache, const EngineOptions& options,
               std::unique_ptr<ForwardBackend> gpu, int32_t pages)
    : weights_(weights),
      cache_(cache),
      options_(options),
      pool_(options.threads),
      kv_(weights->config.Kv(options.block_tokens, DType::kFloat32), pages,
          /*host_storage=*/gpu == nullptr,
          gpu == nullptr ? SideBytes(weights->config, options) : 0),
      forward_(std::move(gpu)) {
  if (forward_ == nullptr) {
    forward_ = std::make_unique<CpuBackend>(
        *weights, kv_, &pool_, options.cpu_bf16_weights ? WeightType::kBf16 : WeightType::kF32);
  }
  for (const auto& [name, w] : options_.tenant_weights) tenants_[name].weight = w > 0 ? w : 1;
  stats_.total_pages = kv_.num_pages();
  stats_.free_pages = kv_.free_pages();
  published_stats_ = stats_;
  if (cache_ != nullptr) {
    read_pool_ = std::make_unique<ThreadPool>(2);
    loader_ = std::thread([this] { LoaderMain(); });
  }
}

Engine::~Engine() { Shutdown(); }

Status Engine::Check(const GenerateRequest& request) const {
  const ModelConfig& c = weights_->config;
  if (request.prompt.empty()) return Status::InvalidArgument("the prompt has no tokens");
  for (TokenId t : request.prompt) {
    if (t < 0 || t >= c.vocab_size) {
      return Status::InvalidArgument("token id " + std::to_string(t) +
                                     " is outside the vocabulary of " +
                                     std::to_string(c.vocab_size));
    }
  }
  if (request.max_tokens < 1) return Status::InvalidArgument("max_tokens must be >= 1");
  KVTIER_RETURN_IF_ERROR(request.sampling.Validate());
  if (request.cache_salt.size() > Namespace::kMaxStringBytes) {
    return Status::InvalidArgument("cache salt longer than " +
                                   std::to_string(Namespace::kMaxStringBytes) + " bytes");
  }
  const int64_t prompt = static_cast<int64_t>(request.prompt.size());
  if (prompt > c.max_seq_len) {
    return Status::ResourceExhausted("prompt of " + std::to_string(prompt) +
                                     " tokens exceeds the model's context of " +
                                     std::to_string(c.max_seq_len));
  }
  const int64_t most = std::min<int64_t>(prompt + request.max_tokens, c.max_seq_len);
  if (PagesFor(most, options_.block_tokens) > kv_.num_pages()) {
    return Status::ResourceExhausted("a sequence of " + std::to_string(most) +
                                     " tokens needs more KV pages than the engine has (" +
                                     std::to_string(kv_.num_pages()) + ")");
  }
  KVTIER_RETURN_IF_ERROR(ValidateBreakpoints(request.breakpoints, request.prompt.size()));
  return Status::Ok();
}

Result<RequestId> Engine::Submit(GenerateRequest request, Callback done) {
  KVTIER_RETURN_IF_ERROR(Check(request));
  const int64_t prompt = static_cast<int64_t>(request.prompt.size());
  if (request.start_ms == 0) request.start_ms = options_.clock->NowMs();
  auto seq = std::make_unique<Sequence>();
  seq->tokens = request.prompt;
  seq->sampler.emplace(request.sampling);
  seq->result.prompt_tokens = static_cast<uint32_t>(prompt);
  seq->req = std::move(request);
  seq->done = std::move(done);
  seq->submitted = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> lock(mu_);
  if (shutdown_) return Status::Unavailable("the engine is shut down");
  seq->id = next_id_++;
  seq->result.id = seq->id;
  seq->result.submit_step = step_;
  const RequestId id = seq->id;
  incoming_.push_back(std::move(seq));
  pending_.fetch_add(1);
  cv_.notify_all();
  return id;
}

bool Engine::HasWork() const { return pending_.load() > 0; }

void Engine::Cancel(RequestId id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shutdown_ || id <= 0 || id >= next_id_) return;
    cancelled_.push_back(id);
  }
  cv_.notify_all();
}

std::vector<std::unique_ptr<Engine::Sequence>> Engine::RetireCancelled(StepStats* stats) {
  std::vector<RequestId> ids;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ids.swap(cancelled_);
  }
  std::vector<std::unique_ptr<Sequence>> done;
  auto retire = [&](std::unique_ptr<Sequence> s) {
    Retire(s.get(), Status::Ok(), "cancelled");
    ++stats_.cancelled;
    ++stats->finished;
    done.push_back(std::move(s));
  };
  for (RequestId id : ids) {
    auto run =
        std::find_if(running_.begin(), running_.end(), [&](const auto& s) { return s->id == id; });
    if (run != running_.end()) {
      SettleLoad(run->get(), stats);  // its pages are still being written
      std::unique_ptr<Sequence> s = std::move(*run);
      running_.erase(run);
      ReleasePages(s.get());
      --tenants_[s->req.tenant].running;
      retire(std::move(s));
      continue;
    }
    for (auto& [name, t] : tenants_) {
      auto wait = std::find_if(t.waiting.begin(), t.waiting.end(),
                               [&](const auto& s) { return s->id == id; });
      if (wait == t.waiting.end()) continue;
      std::unique_ptr<Sequence> s = std::move(*wait);
      t.waiting.erase(wait);
      ReleasePages(s.get());  // a preempted sequence may hold none; harmless
      retire(std::move(s));
      break;
    }
  }
  return done;
}

void Engine::TakeSubmissions() {
  std::deque<std::unique_ptr<Sequence>> in;
  {
    std::lock_guard<std::mutex> lock(mu_);
    in.swap(incoming_);
  }
  for (auto& s : in) {
    Tenant& t = tenants_[s->req.tenant];
    // A tenant that was idle starts level with the least-served active
    // tenant, so banked idleness does not buy a burst ahead of everyone.
    if (t.waiting.empty() && t.running == 0) {
      double floor = -1;
      for (const auto& [name, other] : tenants_) {
        if (&other == &t || (other.waiting.empty() && other.running == 0)) continue;
        floor = floor < 0 ? Share(other) : std::min(floor, Share(other));
      }
      if (floor >= 0) t.service = std::max(t.service, floor * t.weight);
    }
    t.waiting.push_back(std::move(s));
    ++stats_.requests;
  }
}

double Engine::Share(const Tenant& t) const { return t.service / t.weight; }

Engine::Sequence* Engine::PickVictim(const Tenant& for_tenant, const Sequence* except) {
  // The newest sequence of the tenant that holds the most sequences among
  // those that have had more service than `for_tenant` and hold more
  // sequences than it does.
  const Tenant* victim_tenant = nullptr;
  for (const auto& [name, t] : tenants_) {
    if (&t == &for_tenant || t.running <= for_tenant.running) continue;
    if (Share(t) <= Share(for_tenant)) continue;
    if (victim_tenant == nullptr || t.running > victim_tenant->running ||
        (t.running == victim_tenant->running && Share(t) > Share(*victim_tenant))) {
      victim_tenant = &t;
    }
  }
  if (victim_tenant == nullptr) return nullptr;
  for (auto it = running_.rbegin(); it != running_.rend(); ++it) {
    Sequence* s = it->get();
    if (s != except && &tenants_[s->req.tenant] == victim_tenant) return s;
  }
  return nullptr;
}

void Engine::ReleasePages(Sequence* seq) {
  for (PageId p : seq->pages) kv_.Free(p);
  seq->pages.clear();
}

void Engine::Preempt(Sequence* seq) {
  // Its full blocks are in the cache already (published as they filled); the
  // pages go back to the pool and it waits at the head of its tenant's queue.
  SettleLoad(seq, nullptr);
  ReleasePages(seq);
  seq->computed = 0;
  seq->published = 0;
  ++seq->result.preemptions;
  ++stats_.preemptions;
  Tenant& t = tenants_[seq->req.tenant];
  --t.running;
  auto it =
      std::find_if(running_.begin(), running_.end(), [&](const auto& s) { return s.get() == seq; });
  t.waiting.push_front(std::move(*it));
  running_.erase(it);
}

bool Engine::EnsurePages(Sequence* seq, int tokens) {
  while (static_cast<int64_t>(seq->pages.size()) < PagesFor(tokens, options_.block_tokens)) {
    std::optional<PageId> p = kv_.Allocate();
    if (!p) return false;
    seq->pages.push_back(*p);
  }
  return true;
}

void Engine::Admit(StepStats* stats) {
  for (;;) {
    Tenant* best = nullptr;
    for (auto& [name, t] : tenants_) {
      if (t.waiting.empty()) continue;
      // The least-served tenant; on a tie, the one whose request waited longest.
      if (best == nullptr || Share(t) < Share(*best) ||
          (Share(t) == Share(*best) && t.waiting.front()->id < best->waiting.front()->id)) {
        best = &t;
      }
    }
    if (best == nullptr) return;
    Sequence* seq = best->waiting.front().get();
    if (static_cast<int>(running_.size()) >= options_.max_batch_seqs) {
      Sequence* victim = PickVictim(*best, nullptr);
      if (victim == nullptr) return;
      Preempt(victim);
      ++stats->preempted;
    }
    const int64_t need =
        PagesFor(static_cast<int64_t>(seq->tokens.size()) + 1, options_.block_tokens);
    while (kv_.free_pages() < need) {
      Sequence* victim = PickVictim(*best, nullptr);
      if (victim == nullptr) break;
      Preempt(victim);
      ++stats->preempted;
    }
    if (kv_.free_pages() < need) return;  // it waits, first in line, for pages
    std::unique_ptr<Sequence> owned = std::move(best->waiting.front());
    best->waiting.pop_front();
    (void)EnsurePages(seq, static_cast<int>(seq->tokens.size()));
    if (!seq->admitted_before) seq->result.queue_ms = MsSince(seq->submitted);
    StartPrefixLoad(seq);
    seq->admitted_before = true;
    ++best->running;
    ++stats->admitted;
    running_.push_back(std::move(owned));
  }
}

void Engine::Retire(Sequence* seq, Status status, std::string reason) {
  seq->result.status = std::move(status);
  seq->result.finish_reason = std::move(reason);
  seq->result.finish_step = step_;
  seq->result.total_ms = MsSince(seq->submitted);
  ++stats_.finished;
}

void Engine::Deliver(Sequence* seq) {
  if (seq->done) seq->done(std::move(seq->result));
  pending_.fetch_sub(1);
}

void Engine::EnsureRunningPages(StepStats* stats) {
  for (;;) {
    Sequence* lacking = nullptr;
    for (auto& r : running_) {
      if (!EnsurePages(r.get(), static_cast<int>(r->tokens.size()))) {
        lacking = r.get();
        break;
      }
    }
    if (lacking == nullptr) return;
    Sequence* victim = PickVictim(tenants_[lacking->req.tenant], lacking);
    if (victim == nullptr) victim = running_.back().get();
    Preempt(victim);
    ++stats->preempted;
  }
}

Engine::Batch Engine::FormBatch(StepStats* stats) {
  std::vector<Sequence*> order;
  for (auto& s : running_) order.push_back(s.get());
  std::stable_sort(order.begin(), order.end(), [&](Sequence* a, Sequence* b) {
    const bool da = a->pending() == 1, db = b->pending() == 1;
    if (da != db) return da;
    if (da) return false;
    return Share(tenants_[a->req.tenant]) < Share(tenants_[b->req.tenant]);
  });
  int budget = options_.token_budget;
  Batch batch;
  for (Sequence* s : order) {
    if (budget == 0) break;
    if (s->load) continue;  // its prefix is still being read
    const int n = std::min(s->pending(), budget);
    if (n <= 0) continue;
    budget -= n;
    SeqChunk ch;
    ch.tokens = std::span<const TokenId>(s->tokens.data() + s->computed, n);
    ch.start_pos = s->computed;
    ch.pages = s->pages;
    ch.want_logits = s->computed + n == static_cast<int>(s->tokens.size());
    batch.chunks.push_back(ch);
    batch.seqs.push_back(s);
    if (s->pending() == 1) {
      ++stats->decode_tokens;
    } else {
      stats->prefill_tokens += n;
    }
  }
  stats->sequences = static_cast<int>(batch.seqs.size());
  return batch;
}

bool Engine::Batch::NeedsOnlyArgmax() const {
  for (size_t i = 0; i < seqs.size(); ++i) {
    if (chunks[i].want_logits &&
        (seqs[i]->req.sampling.temperature != 0.0f || seqs[i]->req.keep_logits)) {
      return false;
    }
  }
  return true;
}

std::vector<Engine::Sequence*> Engine::RunBatch(const Batch& batch) {
  const bool greedy = batch.NeedsOnlyArgmax();
  const Status fs =
      greedy ? forward_->RunArgmax(batch.chunks, &argmax_) : forward_->Run(batch.chunks, &logits_);
  if (!fs.ok()) {
    for (Sequence* s : batch.seqs) {
      s->result.status = fs;
      s->result.finish_reason = "error";
    }
    return batch.seqs;
  }
  std::vector<Sequence*> finished;
  int row = 0;  // the output row of the next chunk that wants logits
  for (size_t i = 0; i < batch.seqs.size(); ++i) {
    Sequence* s = batch.seqs[i];
    const int n = static_cast<int>(batch.chunks[i].tokens.size());
    s->computed += n;
    Tenant& t = tenants_[s->req.tenant];
    t.service += n / t.weight;
    if (batch.chunks[i].want_logits) {
      AppendToken(s, SampleRow(s, greedy, row++));
      if (!s->result.finish_reason.empty()) finished.push_back(s);
    }
    Publish(s);
  }
  return finished;
}

TokenId Engine::SampleRow(Sequence* seq, bool greedy, int row) {
  if (greedy) return argmax_[row];
  const int vocab = weights_->config.vocab_size;
  std::span<const float> lg(&logits_[static_cast<size_t>(row) * vocab], vocab);
  const TokenId tok = seq->sampler->Sample(lg);
  if (seq->req.keep_logits) seq->result.logits.emplace_back(lg.begin(), lg.end());
  return tok;
}

void Engine::AppendToken(Sequence* seq, TokenId tok) {
  seq->tokens.push_back(tok);
  seq->result.tokens.push_back(tok);
  if (seq->req.on_token) seq->req.on_token(tok);
  if (seq->result.first_token_step < 0) {
    seq->result.first_token_step = step_;
    seq->result.ttft_ms = MsSince(seq->submitted);
  }
  const bool stop = std::find(seq->req.stop_tokens.begin(), seq->req.stop_tokens.end(), tok) !=
                    seq->req.stop_tokens.end();
  if (stop) {
    seq->result.finish_reason = "stop";
  } else if (seq->generated() >= seq->req.max_tokens) {
    seq->result.finish_reason = "length";
  } else if (static_cast<int>(seq->tokens.size()) >= weights_->config.max_seq_len) {
    seq->result.finish_reason = "context";
  }
}

std::vector<std::unique_ptr<Engine::Sequence>> Engine::RetireFinished(
    const std::vector<Sequence*>& finished, StepStats* stats) {
  std::vector<std::unique_ptr<Sequence>> done;
  for (Sequence* s : finished) {
    auto it =
        std::find_if(running_.begin(), running_.end(), [&](const auto& r) { return r.get() == s; });
    done.push_back(std::move(*it));
    running_.erase(it);
    ReleasePages(s);
    --tenants_[s->req.tenant].running;
    Retire(s, s->result.status, s->result.finish_reason);
    ++stats->finished;
  }
  return done;
}

void Engine::EndStep(const StepStats& stats) {
  stats_.prefill_tokens += stats.prefill_tokens;
  stats_.decode_tokens += stats.decode_tokens;
  ++step_;
  stats_.steps = step_;
  PublishStats();
}

void Engine::PublishStats() {
  stats_.running = static_cast<int>(running_.size());
  int waiting = 0;
  for (const auto& [name, t] : tenants_) waiting += static_cast<int>(t.waiting.size());
  stats_.waiting = waiting;
  stats_.free_pages = kv_.free_pages();
  std::lock_guard<std::mutex> lock(mu_);
  published_stats_ = stats_;
}

StepStats Engine::Step() {
  StepStats st;
  st.step = step_;
  TakeSubmissions();
  std::vector<std::unique_ptr<Sequence>> done = RetireCancelled(&st);
  LandLoads(&st, /*wait=*/false);
  Admit(&st);
  EnsureRunningPages(&st);
  Batch batch = FormBatch(&st);
  if (batch.seqs.empty() && std::any_of(running_.begin(), running_.end(),
                                        [](const auto& s) { return s->load != nullptr; })) {
    // Nothing else to run: the step is the first load to land.
    LandLoads(&st, /*wait=*/true);
    batch = FormBatch(&st);
  }
  if (batch.seqs.empty()) {
    PublishStats();
    for (auto& s : done) Deliver(s.get());
    return st;
  }
  const std::vector<Sequence*> finished = RunBatch(batch);
  for (auto& s : RetireFinished(finished, &st)) done.push_back(std::move(s));
  EndStep(st);
  // Callbacks last, so whoever they wake sees this step in Stats().
  for (auto& s : done) Deliver(s.get());
  return st;
}

Result<GenerateResult> Engine::Generate(GenerateRequest request) {
  std::optional<GenerateResult> out;
  KVTIER_RETURN_IF_ERROR(
      Submit(std::move(request), [&](GenerateResult r) { out = std::move(r); }).status());
  while (!out) Step();
  if (!out->status.ok()) return out->status;
  return std::move(*out);
}

void Engine::StartLoop() {
  loop_ = std::thread([this] {
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return shutdown_ || pending_.load() > 0; });
        if (shutdown_) return;
      }
      Step();
    }
  });
}

void Engine::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shutdown_) return;
    shutdown_ = true;
  }
  cv_.notify_all();
  if (loop_.joinable()) loop_.join();
  // No thread steps any more: fail what is left.
  TakeSubmissions();
  const Status gone = Status::Unavailable("the engine shut down");
  for (auto& s : running_) SettleLoad(s.get(), nullptr);
  StopLoader();
  for (auto& s : running_) {
    ReleasePages(s.get());
    Retire(s.get(), gone, "shutdown");
    Deliver(s.get());
  }
  running_.clear();
  for (auto& [name, t] : tenants_) {
    for (auto& s : t.waiting) {
      Retire(s.get(), gone, "shutdown");
      Deliver(s.get());
    }
    t.waiting.clear();
    t.running = 0;
  }
}

EngineStats Engine::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return published_stats_;
}

}  // namespace kvtier
