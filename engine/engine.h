// Engine: continuous batching over paged KV, with the cache before prefill
// (DESIGN §8).
//
// Requests are submitted from any thread; Step() runs one batch on the
// caller's thread (one thread steps at a time: the daemon's engine loop, or a
// test driving steps by hand). Each step:
//   1. admits waiting sequences while there are batch slots and free pages,
//      the tenant with the least weighted service first; a tenant with
//      nothing running may preempt the newest sequence of a tenant that has
//      had more service and holds more sequences (fair share), and a
//      sequence that cannot get pages may preempt the same way;
//   2. on admission looks up the longest cached prefix of the sequence's
//      tokens and hands the read of those blocks into its pages to the
//      loader thread (their KV is not recomputed); a block that fails to
//      read ends the hit there, and the rest is prefilled
//      (rematerialization);
//   3. forms one batch: one token for every decoding sequence, then prefill
//      chunks, least-served tenant first, up to the token budget. A sequence
//      whose prefix is still being read sits the step out, so a slow read
//      (flash, a cold tier) overlaps the others' compute; a step that would
//      have nothing else to run waits for the first load to land instead;
//   4. runs the forward pass, samples the next token of each sequence whose
//      chunk reached its end, and publishes every block that became full to
//      the cache (the page is the block payload);
//   5. retires finished sequences and frees their pages.
// Preemption is by recompute through the cache: the victim's full blocks are
// already published, its pages are freed, and on readmission its prefix comes
// back from the cache like any other hit (and whatever the cache has since
// dropped is prefilled again). Its sampler keeps its state, so the tokens it
// produces do not change.
//
// Determinism: a sequence's logits and tokens depend only on its own tokens,
// sampling parameters and seed, never on the batch it ran in, whether its
// prefix came from the cache, or whether it was preempted (see forward.h).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "cache/cache_manager.h"
#include "cache/namespace.h"
#include "cache/prefix_hasher.h"
#include "common/status.h"
#include "context/usage.h"
#include "model/forward.h"
#include "model/kv_pages.h"
#include "model/model_weights.h"
#include "model/sampler.h"
#include "model/thread_pool.h"

namespace kvtier {

using RequestId = uint64_t;

struct EngineOptions {
  int block_tokens = 64;         // tokens per page and per cache block
  int64_t kv_bytes = 1ll << 30;  // memory for KV pages, bytes (their side copies included)
  int max_batch_seqs = 64;       // sequences running at once
  int token_budget = 512;        // tokens computed per step (decode + prefill)
  int threads = 0;               // forward-pass threads; 0 = one per core
  // Where the forward pass runs and the KV pages live: "cpu", "cuda" (a
  // CUDA device; Open fails with kUnavailable without one) or "auto" (cuda
  // when a device answers, else cpu).
  std::string device = "cpu";
  bool gpu_bf16_weights = false;  // cuda: bf16 GEMMs on the tensor cores
  // cpu: bf16 weights and products (AVX-512 BF16 or AMX where the CPU has
  // them), f32 accumulation; attention bf16 too (AMX or AVX-512 BF16); norms and KV stay f32
  // (docs/engine.md).
  bool cpu_bf16_weights = false;
  // cpu, where attention is bf16: keep each page's staged tiles of
  // keys beside it (StagedSideBytes, counted in kv_bytes). false: 1.5 times
  // the pages in kv_bytes, and every decode step stages its whole context
  // again. The same bits either way.
  bool cpu_keep_staged_tiles = true;
  // Weight of each tenant in the fair share; tenants not listed weigh 1.
  std::map<std::string, double> tenant_weights;
  Clock* clock = SystemClock();  // request start times (cache lifetimes); not owned
  int64_t cache_ttl_ms = 0;      // TTL of published blocks (reads refresh it); 0 = none
};

struct GenerateRequest {
  std::string tenant;           // fair-share and accounting identity
  std::string cache_salt;       // namespace salt: tenants share blocks only with equal salts
  std::vector<TokenId> prompt;  // at least one token
  int max_tokens = 16;          // tokens to generate, >= 1
  SamplingParams sampling;
  std::vector<TokenId> stop_tokens;  // generation ends after sampling one of these
  bool keep_logits = false;          // return the logits of every sampled position
  // Called on the stepping thread with each token as it is sampled (for
  // streaming); must be quick and must not call into the engine.
  std::function<void(TokenId)> on_token;
  // Called on the stepping thread when the request is first admitted, with
  // its cache hit (GenerateResult::cache_hit_tokens): what a client's usage
  // needs before the first token. The same rules as on_token.
  std::function<void(uint32_t cache_hit_tokens)> on_admit;
  // Context caching (DESIGN §6). By default every full block the request
  // computes is published with the engine's TTL (the engine's own prefix
  // cache). With `breakpoints_only`, only the prefixes `breakpoints` mark are
  // written: full blocks up to the last 1h breakpoint with a 1h TTL, the
  // rest up to the last breakpoint with 5m, and at each breakpoint that
  // ends inside a block a tail record (the partial block, keyed by the last
  // full block's key and the tail's tokens), so a whole marked prefix is
  // cached. Lookups find tails at the request's own breakpoints.
  bool breakpoints_only = false;
  std::vector<CacheBreakpoint> breakpoints;  // validated (ValidateBreakpoints), cacheable
  int64_t start_ms = 0;  // Unix ms; cache lifetimes count from here (0: submission)
  // > 0: every cache write of this request expires at this fixed time (Unix
  // ms) instead of by its TTL class (a named cache's promise).
  int64_t fixed_expiry_ms = 0;
};

struct GenerateResult {
  RequestId id = 0;
  Status status;                // not OK when the request failed mid-way
  std::vector<TokenId> tokens;  // generated, including a stop token
  std::string finish_reason;    // "length", "stop", "context" (model's window full)
  uint32_t prompt_tokens = 0;
  uint32_t cached_tokens = 0;  // prompt tokens whose KV came from the cache
  // The longest cached prefix found at first admission, tails included: the
  // usage's cache read (A). It may exceed cached_tokens by the last token,
  // which is recomputed for its logits.
  uint32_t cache_hit_tokens = 0;
  uint32_t published_blocks = 0;  // blocks this request wrote to the cache
  uint32_t preemptions = 0;
  int64_t submit_step = 0;        // the step counter when it was submitted
  int64_t first_token_step = -1;  // the step that sampled its first token
  int64_t finish_step = -1;
  double queue_ms = 0;  // submission to first admission (a batch slot)
  double ttft_ms = 0;   // submission to first token, wall clock
  // Of ttft_ms, the first admission's read of its cached prefix: from the
  // load's issue to its landing (0 when nothing was read).
  double load_ms = 0;
  double total_ms = 0;                     // submission to finish
  std::vector<std::vector<float>> logits;  // with keep_logits: one row per sampled token
};

struct StepStats {
  int64_t step = 0;
  int sequences = 0;  // in the batch
  int decode_tokens = 0;
  int prefill_tokens = 0;
  int admitted = 0;
  int preempted = 0;
  int finished = 0;
  int cached_tokens = 0;  // loaded from the cache: loads that landed this step
};

struct EngineStats {
  int64_t steps = 0;
  uint64_t requests = 0, finished = 0, preemptions = 0, cancelled = 0;
  uint64_t prefill_tokens = 0, decode_tokens = 0, cached_tokens = 0;
  uint64_t published_blocks = 0, publish_failures = 0, cache_read_failures = 0;
  int running = 0, waiting = 0;
  int32_t free_pages = 0, total_pages = 0;
};

class Engine {
 public:
  using Callback = std::function<void(GenerateResult)>;

  // `weights` and `cache` (nullable: no caching) must outlive the engine.
  static Result<std::unique_ptr<Engine>> Open(const ModelWeights* weights, CacheManager* cache,
                                              const EngineOptions& options);
  // What one KV page costs of options.kv_bytes for this model: the block,
  // and on the CPU the forward pass's side copy of it (StagedSideBytes).
  static int64_t KvBytesPerPage(const ModelConfig& config, const EngineOptions& options);
  ~Engine();
  // "cpu" or "cuda": where this engine's forward pass runs.
  std::string_view device() const { return forward_->device(); }
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Queues a request; `done` runs on the stepping thread when it finishes.
  // Check's errors, and kUnavailable after Shutdown.
  Result<RequestId> Submit(GenerateRequest request, Callback done);

  // What Submit refuses, without queueing anything (so a streaming API can
  // refuse before it answers): kInvalidArgument for an empty prompt, a token
  // outside the vocabulary, bad sampling parameters, max_tokens < 1, a salt
  // too long or bad breakpoints; kResourceExhausted when the prompt does not
  // fit the model's context or the KV pages.
  Status Check(const GenerateRequest& request) const;

  // Ends request `id` at the next step (a client that went away): it is
  // delivered with finish_reason "cancelled", an OK status and the tokens
  // generated so far; its pages are freed, and the blocks it has already
  // published stay cached. Thread-safe; an id that has finished, or that was
  // never given, is ignored.
  void Cancel(RequestId id);

  // Runs one step; does nothing (and returns step stats with no sequences)
  // when there is no work.
  StepStats Step();
  bool HasWork() const;

  // Convenience for tests and tools: submits and steps until it finishes.
  // Requires that no background loop is running.
  Result<GenerateResult> Generate(GenerateRequest request);

  // Starts a thread that steps whenever there is work. Shutdown() stops it
  // and fails queued requests with kUnavailable.
  void StartLoop();
  void Shutdown();

  EngineStats Stats() const;
  const ModelWeights& weights() const { return *weights_; }
  const EngineOptions& options() const { return options_; }
  // The namespace of blocks published for `cache_salt`.
  Namespace CacheNamespace(const std::string& cache_salt) const;

 private:
  struct Sequence;
  struct PrefixLoad;
  struct Tenant;
  struct Batch;

  // `gpu`: the device backend (null: the CPU's); `pages`: KV pages to hold.
  Engine(const ModelWeights* weights, CacheManager* cache, const EngineOptions& options,
         std::unique_ptr<ForwardBackend> gpu, int32_t pages);

  // The steps of Step(), in order (the class comment tells why).
  // Moves new submissions to their tenants' queues.
  void TakeSubmissions();
  // Admits waiting sequences, least-served tenant first, while there are
  // batch slots and free pages (preempting for fair share), and loads each
  // one's cached prefix.
  void Admit(StepStats* stats);
  // Gives every running sequence a page for each token it holds. A decode
  // that crosses into a new page may have to preempt someone: the newest
  // sequence of an over-served tenant, else the newest sequence of all,
  // which may be itself.
  void EnsureRunningPages(StepStats* stats);
  // The batch: decodes first (one token each), then prefill chunks,
  // least-served tenant first, up to the token budget.
  Batch FormBatch(StepStats* stats);
  // Runs the forward pass over `batch`, then for each of its sequences in
  // order: counts the computed tokens (and the tenant's service), samples
  // where the chunk reached the sequence's end, and publishes the blocks
  // that became full. Returns the sequences that finished: those that sampled
  // their last token, or the whole batch, failed, when the pass failed.
  std::vector<Sequence*> RunBatch(const Batch& batch);
  // `seq`'s next token from row `row` of this step's output (the argmax on
  // a greedy step, else its sampler over the logits, kept with keep_logits).
  TokenId SampleRow(Sequence* seq, bool greedy, int row);
  // Adds a sampled token to `seq` and streams it; sets the finish reason on
  // a stop token, at max_tokens or when the model's context is full.
  void AppendToken(Sequence* seq, TokenId tok);
  // Takes the finished sequences out of the running set, frees their pages
  // and retires them; returns them for Deliver.
  // Retires the sequences Cancel asked for, waiting or running.
  std::vector<std::unique_ptr<Sequence>> RetireCancelled(StepStats* stats);
  std::vector<std::unique_ptr<Sequence>> RetireFinished(const std::vector<Sequence*>& finished,
                                                        StepStats* stats);
  // Counts the step in stats_ and publishes them.
  void EndStep(const StepStats& stats);
  // Counts the queues and free pages into stats_ and makes them what Stats()
  // returns.
  void PublishStats();

  // Looks up the longest cached prefix of `seq` (its usage's cache read)
  // and starts reading it into its pages on the loader thread; with shared
  // tiers the look-up runs there too (it may ask other nodes).
  void StartPrefixLoad(Sequence* seq);
  // Given the look-up's hit, what to read: the blocks (all but the last
  // token's) and a breakpoint's tail record. Thread-safe (the loader's).
  void PlanPrefixLoad(PrefixLoad* load) const;
  // The first admission's cache read: the result's, and on_admit's.
  void ReportHit(Sequence* seq, uint32_t cache_hit_tokens);
  // Lands the loads that are done; with `wait`, first waits until one is.
  void LandLoads(StepStats* stats, bool wait);
  // Waits for `seq`'s load, if it has one, and lands it (before its pages
  // are taken away: preemption, cancellation, shutdown).
  void SettleLoad(Sequence* seq, StepStats* stats);
  // The loaded blocks (and tail) become `seq`'s computed prefix.
  void FinishLoad(Sequence* seq, StepStats* stats);
  // The loader thread: runs each queued load's batched reads.
  void LoaderMain();
  // Reads a hit's blocks: in parts of at least kMinPartBlocks, side by side
  // on read_pool_ (copying and checking a large hit out of DRAM is memory
  // work one core does not saturate), results in the keys' order.
  std::vector<Result<uint64_t>> ReadInParts(std::span<const BlockKey> keys,
                                            std::span<const std::span<std::byte>> dests);
  void StopLoader();
  bool EnsurePages(Sequence* seq, int tokens);
  // A running sequence to preempt in favour of `for_tenant`, or null.
  Sequence* PickVictim(const Tenant& for_tenant, const Sequence* except);
  void Preempt(Sequence* seq);
  void Publish(Sequence* seq);
  // Marks a sequence finished (its result and the counters)...
  void Retire(Sequence* seq, Status status, std::string reason);
  // ...and hands its result to its callback.
  void Deliver(Sequence* seq);
  void ReleasePages(Sequence* seq);
  double Share(const Tenant& t) const;
  const PrefixHasher& HasherFor(const std::string& salt);
  // Extends seq->keys to the first `blocks` full blocks of its tokens.
  void EnsureKeys(Sequence* seq, int blocks);
  // The key of the tail record of `seq`'s first `end` tokens (end % B != 0).
  BlockKey TailKey(Sequence* seq, int end);
  // A page's bytes for publishing: the page itself on the CPU, else a copy
  // in page_scratch_ (valid until the next call).
  Result<std::span<const std::byte>> PageBytes(PageId page);
  // Publishes what `seq` may write under breakpoints_only.
  void PublishBreakpoints(Sequence* seq);

  const ModelWeights* weights_;
  CacheManager* cache_;
  const EngineOptions options_;
  ThreadPool pool_;
  KvPages kv_;
  std::unique_ptr<ForwardBackend> forward_;
  std::vector<std::byte> page_scratch_;  // a page's bytes when pages are not host memory

  // The stepping thread's state.
  std::vector<std::unique_ptr<Sequence>> running_;  // in admission order
  std::map<std::string, Tenant> tenants_;           // waiting queues and service
  std::unordered_map<std::string, std::unique_ptr<PrefixHasher>> hashers_;
  int64_t step_ = 0;
  EngineStats stats_;
  std::vector<float> logits_;
  std::vector<TokenId> argmax_;  // a greedy step's tokens

  // Submissions cross threads through here.
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Sequence>> incoming_;  // guarded by mu_
  RequestId next_id_ = 1;                           // guarded by mu_
  std::vector<RequestId> cancelled_;                // guarded by mu_: asked, not yet retired
  bool shutdown_ = false;                           // guarded by mu_
  std::atomic<int64_t> pending_{0};                 // requests not yet finished
  EngineStats published_stats_;                     // guarded by mu_: a copy for Stats()
  std::thread loop_;

  // Cache loads cross to the loader thread through here.
  std::mutex load_mu_;
  std::condition_variable load_cv_;
  std::deque<PrefixLoad*> load_queue_;  // guarded by load_mu_
  bool load_stop_ = false;              // guarded by load_mu_
  std::thread loader_;                  // runs while there is a cache
  // The loader's threads (itself and one more): a large hit is read in parts
  // side by side (ReadInParts).
  std::unique_ptr<ThreadPool> read_pool_;
};

}  // namespace kvtier
