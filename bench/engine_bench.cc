// engine_bench: the engine's throughput and time to first token, each set
// against its own baseline in the same run (DESIGN §11).
//
//  - decode tokens/s at batch 1, 8, 32 and 64, and the ratio to batch 1: what
//    continuous batching buys when one weight read serves many sequences;
//  - time to first token of a long prompt, cold and with all but its last
//    block in the DRAM tier, and the ratio: what the cache buys;
//  - our matrix product (weights packed once, as the engine holds them)
//    against OpenBLAS's sgemm on the same shape and threads (with bf16
//    weights also oneDNN's bf16 matmul, where it is built in: the faster
//    library is the peak), and prefill FLOP/s as a fraction of that peak.
//    Without OpenBLAS the bench refuses to run (tools/deps.sh --bench
//    installs it and oneDNN).
//
// The model is a deterministic random-weight Llama (preset bench50m: ~50M
// parameters, 200 MB of fp32 weights, far beyond L2 and L3).
//
// Usage: engine_bench [--json] [--preset NAME] [--threads N]
//                     [--prompt-tokens N] [--decode-steps N] [--cpu-weights f32|bf16]
//                     [--seq-len N]
// The weights are RandomModel(preset, seed 1): `kvtier-mkmodel --preset P
// --seed 1` writes the same model for a peer engine.
#include <stdlib.h>   // mkdtemp
#include <strings.h>  // strcasecmp
#include <unistd.h>   // execv

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "cache/prefix_hasher.h"
#include "engine/engine.h"
#include "model/cpu_math.h"
#include "model/model_weights.h"
#include "model/thread_pool.h"
#include "tiers/dram/dram_tier.h"
#include "tiers/flash/flash_tier.h"

#ifdef KVTIER_HAVE_OPENBLAS
#include <cblas.h>
#endif
#ifdef KVTIER_HAVE_DNNL
#include <omp.h>

#include <dnnl.hpp>
#endif

namespace kvtier {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

std::vector<TokenId> Prompt(int n, uint32_t salt, int vocab) {
  std::vector<TokenId> p;
  uint32_t x = salt * 2654435761u + 12345;
  for (int i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    p.push_back(3 + static_cast<TokenId>((x >> 8) % static_cast<uint32_t>(vocab - 3)));
  }
  return p;
}

struct Args {
  bool json = false;
  std::string preset = "bench50m";
  int threads = 0;
  int prompt_tokens = 2048;
  int decode_steps = 8;
  bool bf16 = false;  // --cpu-weights bf16
  int seq_len = 0;    // the model's context; 0: the preset's
};

// FLOP/s of an m x n x k product y = x w^T: ours (on w packed once, as the
// engine packs its weights when it loads a model), OpenBLAS's sgemm (which
// packs inside every call, O(n k) against the product's O(m n k)) and, with
// bf16 weights, oneDNN's bf16 matmul; best of 40 each (of 10, a shared
// machine's noisy spells moved the ratios by up to 0.2 run to run).
struct GemmPair {
  double openblas = 0, ours = 0;
  double onednn = 0;  // bf16 only, where oneDNN is built in; 0 otherwise
  double Peak() const { return std::max(openblas, onednn); }
};

#ifdef KVTIER_HAVE_DNNL
// oneDNN's matmul of bf16 x (m x k) by bf16 w^T (k x n) into f32 on
// `threads` threads, set up once: w in oneDNN's own layout (reordered once,
// as we pack once) and x already bf16 (ours rounds x inside the timed
// call). oneDNN picks its kernel (AMX where the CPU has it).
class OneDnnBf16 {
 public:
  OneDnnBf16(int threads, const std::vector<float>& a, const std::vector<float>& b, int m, int n,
             int k)
      : eng_(dnnl::engine::kind::cpu, 0), s_(eng_) {
    using dnnl::memory;
    omp_set_num_threads(threads);
    const memory::desc a32({m, k}, memory::data_type::f32, memory::format_tag::ab);
    const memory::desc a16({m, k}, memory::data_type::bf16, memory::format_tag::ab);
    const memory::desc b32({k, n}, memory::data_type::f32, memory::format_tag::ba);
    const memory::desc b_any({k, n}, memory::data_type::bf16, memory::format_tag::any);
    const memory::desc c32({m, n}, memory::data_type::f32, memory::format_tag::ab);
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a16, b_any, c32), eng_);
    memory a_f(a32, eng_, const_cast<float*>(a.data()));
    memory b_f(b32, eng_, const_cast<float*>(b.data()));
    a_ = memory(a16, eng_);
    b_ = memory(pd.weights_desc(), eng_);
    c_ = memory(c32, eng_);
    dnnl::reorder(a_f, a_).execute(s_, a_f, a_);
    dnnl::reorder(b_f, b_).execute(s_, b_f, b_);
    s_.wait();
    mm_ = dnnl::matmul(pd);
  }
  void Run() {
    mm_.execute(s_, {{DNNL_ARG_SRC, a_}, {DNNL_ARG_WEIGHTS, b_}, {DNNL_ARG_DST, c_}});
    s_.wait();
  }

 private:
  dnnl::engine eng_;
  dnnl::stream s_;
  dnnl::memory a_, b_, c_;
  dnnl::matmul mm_;
};
#endif

// Ours and oneDNN alternate call by call, so that this shared machine's
// load falls on both alike; OpenBLAS runs after them (its threads spin a
// while after each call and would take the cores from the others).
GemmPair GemmFlops(ThreadPool& pool, int m, int n, int k, bool bf16) {
  std::vector<float> a(static_cast<size_t>(m) * k), b(static_cast<size_t>(n) * k),
      c(static_cast<size_t>(m) * n);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(i % 13) * 0.01f;
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>(i % 7) * 0.01f;
  const double flops = 2.0 * m * n * k;
  constexpr int kRounds = 40;
  auto seconds = [](auto fn) {
    const auto t0 = Clock::now();
    fn();
    return Seconds(t0, Clock::now());
  };
  GemmPair g;
  const PackedMatrix packed(b.data(), n, k, bf16 ? WeightType::kBf16 : WeightType::kF32);
  auto ours = [&] { MatMul(a.data(), m, packed, c.data(), &pool); };
  double ours_s = 1e30;
#ifdef KVTIER_HAVE_DNNL
  if (bf16) {
    OneDnnBf16 peer(pool.size(), a, b, m, n, k);
    double peer_s = 1e30;
    for (int r = 0; r < kRounds; ++r) {
      ours_s = std::min(ours_s, seconds(ours));
      peer_s = std::min(peer_s, seconds([&] { peer.Run(); }));
    }
    g.onednn = flops / peer_s;
  }
#endif
  if (g.onednn == 0) {  // no oneDNN round above
    for (int r = 0; r < kRounds; ++r) ours_s = std::min(ours_s, seconds(ours));
  }
  g.ours = flops / ours_s;
#ifdef KVTIER_HAVE_OPENBLAS
  openblas_set_num_threads(pool.size());
  double blas_s = 1e30;
  for (int r = 0; r < kRounds; ++r) {
    blas_s = std::min(blas_s, seconds([&] {
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f,
                                    a.data(), k, b.data(), k, 0.0f, c.data(), n);
                      }));
  }
  g.openblas = flops / blas_s;
#else
  // Without a library peak the fraction would be ours over ours: refuse.
  std::fprintf(stderr,
               "engine_bench: built without OpenBLAS, so there is no real GEMM peak to measure "
               "against; install it (tools/deps.sh --bench) and rebuild\n");
  std::exit(1);
#endif
  return g;
}

// The kernels OpenBLAS chose for this CPU ("none" without OpenBLAS).
std::string OpenBlasCore() {
#ifdef KVTIER_HAVE_OPENBLAS
  return openblas_get_corename();
#else
  return "none";
#endif
}

// Sets up the peers' libraries before they load, then runs the bench again
// (environment they read when they load) when anything had to change:
//  - OpenBLAS picks its kernels by CPU model, and a model newer than it
//    knows gets its generic x86-64 ones (Prescott: SSE3), a fraction of the
//    machine's peak (OpenBLAS 0.3.21 on a 2026 Xeon: 57 against 283
//    GFLOP/s). A peak must be real, so the bench then names the newest core
//    whose instructions this CPU has (OPENBLAS_CORETYPE).
//  - oneDNN runs on OpenMP, whose threads spin after each region by
//    default and would take the cores from our pool and OpenBLAS's threads
//    in the measurements that follow (OMP_WAIT_POLICY=passive).
// What a user set by hand is kept.
void PreparePeerLibraries(char** argv) {
  bool changed = false;
#ifdef KVTIER_HAVE_OPENBLAS
  if (std::getenv("OPENBLAS_CORETYPE") == nullptr &&
      strcasecmp(openblas_get_corename(), "prescott") == 0) {
    __builtin_cpu_init();
    const char* core = nullptr;
    if (__builtin_cpu_supports("avx512bf16")) {
      core = "COOPERLAKE";
    } else if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
      core = "SKYLAKEX";
    } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
      core = "HASWELL";
    }
    if (core != nullptr) {
      std::fprintf(stderr,
                   "engine_bench: OpenBLAS does not know this CPU (generic kernels); "
                   "running again with OPENBLAS_CORETYPE=%s\n",
                   core);
      setenv("OPENBLAS_CORETYPE", core, 1);
      changed = true;
    }
  }
#endif
#ifdef KVTIER_HAVE_DNNL
  if (std::getenv("OMP_WAIT_POLICY") == nullptr) {
    setenv("OMP_WAIT_POLICY", "passive", 1);
    changed = true;
  }
#endif
  if (!changed) return;
  execv("/proc/self/exe", argv);
  std::perror("engine_bench: execv");  // then go on with the libraries as they are
}

// The read bandwidth of `tier` for the blocks under `keys`, `bytes` each,
// all in one batched read (as a cache hit is read). The blocks are the
// hit's own: this VM's virtio disk serves blocks at rates that depend on
// where and when they were written (probe blocks written after the hit's
// read 10-20% faster than the hit's; written before them, as fast), so the
// device's rate for the bytes a hit reads is measured on those bytes.
class TierReadProbe {
 public:
  TierReadProbe(Tier& tier, const std::vector<BlockKey>& keys, size_t bytes)
      : tier_(tier), bytes_(bytes), out_(keys.size(), std::vector<std::byte>(bytes)) {
    for (size_t i = 0; i < keys.size(); ++i) reads_.push_back({keys[i], out_[i]});
  }

  // Bytes per second: the best of 3 batched reads of every block; 0 if a
  // block could not be read.
  double BytesPerSecond() {
    double best = 0;
    for (int r = 0; r < 3; ++r) {
      auto t0 = Clock::now();
      for (const IoResult& res : ReadSync(tier_, reads_)) {
        if (!res.status.ok() || res.bytes != bytes_) return 0;
      }
      best = std::max(best, static_cast<double>(bytes_ * out_.size()) / Seconds(t0, Clock::now()));
    }
    return best;
  }

 private:
  Tier& tier_;
  size_t bytes_;
  std::vector<std::vector<std::byte>> out_;
  std::vector<ReadOp> reads_;
};

// The batch figures' sequences: a prompt of this many tokens, then
// DecodeTokens(steps) tokens, all of which must fit the context.
constexpr int kBatchPromptTokens = 32;
int DecodeTokens(int decode_steps) { return 2 + decode_steps + 1; }

// Decode tokens/s with `batch` sequences all decoding.
double DecodeTokensPerSecond(const ModelWeights& w, int batch, const Args& args) {
  EngineOptions o;
  o.threads = args.threads;
  o.cpu_bf16_weights = args.bf16;
  o.max_batch_seqs = batch;
  o.token_budget = std::max(batch * 64, 64);
  const int max_tokens = DecodeTokens(args.decode_steps);
  // Pages for each sequence's whole length (the prompt and every token it
  // decodes), and one to spare.
  const int64_t pages = (kBatchPromptTokens + max_tokens + o.block_tokens - 1) / o.block_tokens + 1;
  o.kv_bytes = static_cast<int64_t>(batch) * pages * Engine::KvBytesPerPage(w.config, o);
  auto engine = Engine::Open(&w, nullptr, o).value();
  for (int i = 0; i < batch; ++i) {
    GenerateRequest r;
    r.prompt = Prompt(kBatchPromptTokens, 1000 + i, w.config.vocab_size);
    r.max_tokens = max_tokens;
    if (Status s = engine->Submit(r, nullptr).status(); !s.ok()) {
      std::fprintf(stderr, "engine_bench: decode batch %d: %s\n", batch, s.ToString().c_str());
      std::exit(1);
    }
  }
  // Prefill, and one warm-up decode step.
  for (int s = 0; s < 2; ++s) engine->Step();
  auto t0 = Clock::now();
  int tokens = 0;
  for (int s = 0; s < args.decode_steps; ++s) {
    StepStats st = engine->Step();
    if (st.decode_tokens != batch) {
      std::fprintf(stderr, "engine_bench: step had %d decode tokens, expected %d\n",
                   st.decode_tokens, batch);
      std::abort();
    }
    tokens += st.decode_tokens;
  }
  const double tps = tokens / Seconds(t0, Clock::now());
  engine->Shutdown();
  return tps;
}

int Main(int argc, char** argv) {
  PreparePeerLibraries(argv);
  Args args;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "engine_bench: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--json") {
      args.json = true;
    } else if (a == "--preset") {
      args.preset = next();
    } else if (a == "--seq-len") {
      args.seq_len = std::atoi(next().c_str());
    } else if (a == "--cpu-weights") {
      const std::string v = next();
      if (v != "f32" && v != "bf16") {
        std::fprintf(stderr, "engine_bench: --cpu-weights is f32 or bf16\n");
        return 2;
      }
      args.bf16 = v == "bf16";
    } else if (a == "--threads") {
      args.threads = std::atoi(next().c_str());
    } else if (a == "--prompt-tokens") {
      args.prompt_tokens = std::atoi(next().c_str());
    } else if (a == "--decode-steps") {
      args.decode_steps = std::max(1, std::atoi(next().c_str()));
    } else {
      std::fprintf(stderr,
                   "usage: engine_bench [--json] [--preset NAME] [--threads N] "
                   "[--prompt-tokens N] [--decode-steps N] [--cpu-weights f32|bf16] "
                   "[--seq-len N]\n");
      return 2;
    }
  }
  Result<ModelConfig> config = ModelPreset(args.preset);
  if (!config.ok()) {
    std::fprintf(stderr, "engine_bench: %s\n", config.status().ToString().c_str());
    return 2;
  }
  if (args.seq_len > 0) config->max_seq_len = args.seq_len;
  if (args.prompt_tokens + 2 > config->max_seq_len) {
    std::fprintf(stderr, "engine_bench: a %d-token prompt needs --seq-len above %d\n",
                 args.prompt_tokens, config->max_seq_len);
    return 2;
  }
  // The batch figures' sequences (DecodeTokensPerSecond) stay inside the context.
  if (kBatchPromptTokens + DecodeTokens(args.decode_steps) > config->max_seq_len) {
    std::fprintf(stderr,
                 "engine_bench: --decode-steps %d does not fit a %d-token context after a "
                 "%d-token prompt (at most %d)\n",
                 args.decode_steps, config->max_seq_len, kBatchPromptTokens,
                 config->max_seq_len - kBatchPromptTokens - DecodeTokens(0));
    return 2;
  }
  const int threads =
      args.threads > 0 ? args.threads : static_cast<int>(std::thread::hardware_concurrency());
  auto w = RandomModel(*config, 1).value();
  const ModelConfig& c = w->config;
  const uint64_t params = c.ActiveParams();
  std::printf(
      "model %s: dim %d, hidden %d, %d layers, %d/%d heads, vocab %d: %.1fM params, "
      "%.0f MB fp32; %d threads, %s kernels\n",
      args.preset.c_str(), c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size,
      params / 1e6, w->storage.size() * 4 / 1e6, threads, CpuIsaName(CpuMathIsa()));
  nlohmann::json out = {
      {"bench", "engine_bench"}, {"model", args.preset}, {"params", params}, {"threads", threads}};

  // 1. The machine's GEMM peak, and ours on the model's own shapes: a
  //    512-token prefill chunk through q|k|v, wo, w1|w3 and w2.
  out["kernels"] = CpuIsaName(CpuMathIsa());
  out["cpu_weights"] = args.bf16 ? "bf16" : "f32";
  ThreadPool gemm_pool(threads);
  const GemmPair square = GemmFlops(gemm_pool, 512, 2048, 2048, args.bf16);
  const double peak = square.Peak(), ours_gemm = square.ours;
  const char* peak_source = square.onednn > square.openblas ? "onednn_bf16" : "openblas_sgemm";
  std::printf(
      "GEMM 512x2048x2048 (%s weights): OpenBLAS sgemm (%s kernels) %.1f GFLOP/s%s, ours %.1f "
      "GFLOP/s (%.2f of the faster library)\n",
      args.bf16 ? "bf16" : "f32", OpenBlasCore().c_str(), square.openblas / 1e9,
      square.onednn > 0
          ? (", oneDNN bf16 " + std::to_string(static_cast<int>(square.onednn / 1e9)) + " GFLOP/s")
                .c_str()
          : "",
      ours_gemm / 1e9, ours_gemm / peak);
  out["gemm_peak_flops_per_s"] = peak;
  out["gemm_peak_source"] = peak_source;
  out["openblas_core"] = OpenBlasCore();
  if (square.onednn > 0) out["onednn_bf16_flops_per_s"] = square.onednn;
  out["our_gemm_flops_per_s"] = ours_gemm;
  out["our_gemm_fraction_of_peak"] = ours_gemm / peak;
  {
    const ModelConfig& c = w->config;
    const int kv_dim = c.n_kv_heads * c.head_dim();
    double blas_s = 0, peak_s = 0, ours_s = 0, flops = 0;
    for (auto [n, k] : {std::pair{c.dim + 2 * kv_dim, c.dim}, std::pair{c.dim, c.dim},
                        std::pair{2 * c.hidden_dim, c.dim}, std::pair{c.dim, c.hidden_dim}}) {
      const double f = 2.0 * 512 * n * k;
      const GemmPair g = GemmFlops(gemm_pool, 512, n, k, args.bf16);
      std::printf("  shape 512x%dx%d: OpenBLAS %.1f%s ours %.1f\n", n, k, g.openblas / 1e9,
                  g.onednn > 0
                      ? (" oneDNN " + std::to_string(static_cast<int>(g.onednn / 1e9))).c_str()
                      : "",
                  g.ours / 1e9);
      blas_s += f / g.openblas;
      peak_s += f / g.Peak();
      ours_s += f / g.ours;
      flops += f;
    }
    std::printf(
        "GEMM on the model's shapes (512 rows): OpenBLAS %.1f, the faster library %.1f, ours %.1f "
        "GFLOP/s (%.2f of the faster)\n",
        flops / blas_s / 1e9, flops / peak_s / 1e9, flops / ours_s / 1e9, peak_s / ours_s);
    out["model_gemm_openblas_flops_per_s"] = flops / blas_s;
    out["model_gemm_peak_flops_per_s"] = flops / peak_s;
    out["model_gemm_our_flops_per_s"] = flops / ours_s;
    out["model_gemm_fraction_of_openblas"] = blas_s / ours_s;
    out["model_gemm_fraction_of_peak"] = peak_s / ours_s;
  }

  // 2. Decode throughput by batch size.
  std::vector<int> batches = {1, 8, 32, 64};
  std::vector<double> tps;
  for (int b : batches) {
    tps.push_back(DecodeTokensPerSecond(*w, b, args));
    std::printf("decode batch %2d: %8.1f tokens/s (%.2fx batch 1)\n", b, tps.back(),
                tps.back() / tps[0]);
    out["decode_tokens_per_s_b" + std::to_string(b)] = tps.back();
    out["decode_speedup_b" + std::to_string(b)] = tps.back() / tps[0];
  }

  // 3. Time to first token: cold, and with all but the last block cached.
  DramTierOptions dram;
  dram.capacity_bytes = 1ull << 30;
  dram.read_bytes_per_s = 1e10;
  dram.write_bytes_per_s = 1e10;
  std::vector<TierSlot> slots;
  slots.push_back({OpenDramTier(dram).value(), NewLruPolicy()});
  auto cache = CacheManager::Open(std::move(slots), CacheManagerOptions{}).value();
  EngineOptions o;
  o.threads = args.threads;
  o.cpu_bf16_weights = args.bf16;
  o.token_budget = 512;
  o.kv_bytes = 2ll * (args.prompt_tokens / 64 + 2) * Engine::KvBytesPerPage(c, o);
  auto engine = Engine::Open(w.get(), cache.get(), o).value();
  std::vector<double> cold, warm, warm_suffix;
  uint32_t cached_tokens = 0;
  for (int r = 0; r < 5; ++r) {  // this machine is noisy: medians of 5 cold and 15 hits
    GenerateRequest req;
    req.prompt = Prompt(args.prompt_tokens, 7 + r, c.vocab_size);
    req.max_tokens = 1;
    GenerateResult first = engine->Generate(req).value();
    cold.push_back(first.ttft_ms);
    for (int k = 0; k < 3; ++k) {
      GenerateResult hit = engine->Generate(req).value();
      warm.push_back(hit.ttft_ms);
      warm_suffix.push_back(hit.ttft_ms - hit.load_ms);  // all but the prefix's read
      cached_tokens = hit.cached_tokens;
    }
  }
  const double cold_ms = Median(cold), warm_ms = Median(warm);
  std::printf("TTFT, %d-token prompt: cold %.1f ms, %u tokens cached %.1f ms: %.1fx\n",
              args.prompt_tokens, cold_ms, cached_tokens, warm_ms, cold_ms / warm_ms);
  out["prompt_tokens"] = args.prompt_tokens;
  out["ttft_cold_ms"] = cold_ms;
  out["ttft_hit_ms"] = warm_ms;
  out["ttft_hit_cached_tokens"] = cached_tokens;
  out["ttft_hit_speedup"] = cold_ms / warm_ms;

  // 3a. Decode at batch 1 after the long prompt (its prefix cached): each
  // step attends over the whole prompt, so this is where attention, and
  // restaging the keys' tiles every step, weigh in decode (the batch figures
  // above decode after 32-token prompts). Median of three requests.
  {
    GenerateRequest req;
    req.prompt = Prompt(args.prompt_tokens, 8, c.vocab_size);
    req.max_tokens = 33;
    std::vector<double> long_tps;
    for (int k = 0; k < 3; ++k) {
      const GenerateResult g = engine->Generate(req).value();
      const double decode_s = (g.total_ms - g.ttft_ms) / 1e3;
      if (g.tokens.size() > 1 && decode_s > 0) {
        long_tps.push_back(static_cast<double>(g.tokens.size() - 1) / decode_s);
      }
    }
    if (!long_tps.empty()) {
      const double t = Median(long_tps);
      std::printf("decode batch  1 after a %d-token prompt: %.1f tokens/s (%.2fx after %d)\n",
                  args.prompt_tokens, t, t / tps[0], kBatchPromptTokens);
      out["decode_tokens_per_s_b1_long_prompt"] = t;
    }
  }

  // 3b. The same hit from a flash tier (O_DIRECT, io_uring) against its
  // physical model: the bytes the hit reads (every full block of the prompt:
  // the last one is read too and its last token computed again) at the
  // device's rate for those very blocks, read by the flash tier in one batch
  // just before the hit (the tier reads at fio's rate: tier_bench), plus the
  // suffix's prefill (the DRAM hits less their reads, as the engine timed
  // them: the median of ttft_ms - load_ms).
  {
    const size_t block_bytes = c.Kv(64, DType::kFloat32).BlockBytes();
    const int blocks = args.prompt_tokens / 64;
    const double prefix_bytes = static_cast<double>(block_bytes) * blocks;
    std::string dir_template =
        (std::filesystem::temp_directory_path() / "engine_bench_flash.XXXXXX").string();
    if (mkdtemp(dir_template.data()) == nullptr) {
      std::perror("engine_bench: mkdtemp");
      return 1;
    }
    FlashTierOptions f;
    f.path = dir_template + "/flash.log";
    f.capacity_bytes = 4 * static_cast<uint64_t>(prefix_bytes) + (64u << 20);
    f.region_bytes = 32u << 20;
    f.max_block_bytes = (block_bytes + 4095) / 4096 * 4096;
    f.read_slot_bytes = f.max_block_bytes + 4096;
    f.read_bytes_per_s = f.write_bytes_per_s = 1e9;  // no calibration: measured below
    std::vector<TierSlot> fslots;
    fslots.push_back({OpenFlashTier(f).value(), NewLruPolicy()});
    Tier* flash = fslots.back().tier.get();
    auto fcache = CacheManager::Open(std::move(fslots), CacheManagerOptions{}).value();
    auto fengine = Engine::Open(w.get(), fcache.get(), o).value();
    const double suffix_ms = Median(warm_suffix);
    std::vector<double> hits, bws, ratios, reads;
    uint32_t flash_cached = 0;
    GenerateRequest req;
    req.prompt = Prompt(args.prompt_tokens, 11, c.vocab_size);
    req.max_tokens = 1;
    (void)fengine->Generate(req).value();
    // The hit's blocks, keyed as the engine keys them (no salt).
    const PrefixHasher hasher(fengine->CacheNamespace(""));
    if (hasher.block_tokens() != 64) {
      std::fprintf(stderr, "engine_bench: the engine's blocks are not of 64 tokens\n");
      return 1;
    }
    std::vector<BlockKey> keys;
    hasher.AppendKeys(hasher.seed(), std::span<const TokenId>(req.prompt).first(blocks * 64ul),
                      &keys);
    // The device's bandwidth drifts (2-3.6 GB/s between runs on this VM):
    // each hit is set against the bandwidth measured just before it, and the
    // ratio is the median of those pairs.
    {
      TierReadProbe probe(*flash, keys, block_bytes);
      for (int r = 0; r < 9; ++r) {
        bws.push_back(probe.BytesPerSecond());
        if (bws.back() <= 0) {
          std::fprintf(stderr, "engine_bench: the prompt's blocks are not all on flash\n");
          return 1;
        }
        GenerateResult hit = fengine->Generate(req).value();
        hits.push_back(hit.ttft_ms);
        reads.push_back(prefix_bytes / (hit.load_ms / 1e3) / bws.back());
        ratios.push_back(hit.ttft_ms / (prefix_bytes / bws.back() * 1e3 + suffix_ms));
        flash_cached = hit.cached_tokens;
      }
    }
    fengine->Shutdown();
    const double flash_ms = Median(hits), flash_bw = Median(bws);
    const double model_ms = prefix_bytes / flash_bw * 1e3 + suffix_ms;
    const double flash_ratio = Median(ratios), read_vs_device = Median(reads);
    std::printf(
        "TTFT, %u tokens on flash: %.1f ms; model %.1f ms (%.1f MB read at %.2f GB/s + %.1f ms "
        "of suffix): %.2fx (median of 9 hits, each against the bandwidth just before it); the "
        "hit's read alone at %.2f of that bandwidth\n",
        flash_cached, flash_ms, model_ms, prefix_bytes / 1e6, flash_bw / 1e9, suffix_ms,
        flash_ratio, read_vs_device);
    out["ttft_flash_hit_ms"] = flash_ms;
    out["ttft_flash_hit_cached_tokens"] = flash_cached;
    out["flash_read_bytes_per_s"] = flash_bw;
    out["ttft_flash_hit_model_ms"] = model_ms;
    out["ttft_flash_hit_vs_model"] = flash_ratio;
    out["flash_hit_read_vs_device"] = read_vs_device;
    fengine.reset();
    fcache.reset();
    std::filesystem::remove_all(dir_template);
  }

  // 4. Prefill FLOP/s (cold TTFT) against the GEMM peak. FLOPs: 2 per
  // parameter per token, plus attention (QK and PV: 4 * dim per earlier token
  // per layer).
  const double n = args.prompt_tokens;
  const double flops = 2.0 * static_cast<double>(params) * n +
                       4.0 * c.n_layers * static_cast<double>(c.dim) * n * (n + 1) / 2;
  const double prefill_flops = flops / (cold_ms / 1e3);
  std::printf("prefill: %.0f tokens/s, %.1f GFLOP/s = %.2f of the GEMM peak\n", n / (cold_ms / 1e3),
              prefill_flops / 1e9, prefill_flops / peak);
  out["prefill_tokens_per_s"] = n / (cold_ms / 1e3);
  out["prefill_flops_per_s"] = prefill_flops;
  out["prefill_fraction_of_peak"] = prefill_flops / peak;

  if (args.json) std::cout << out.dump() << std::endl;
  return 0;
}

}  // namespace
}  // namespace kvtier

int main(int argc, char** argv) { return kvtier::Main(argc, argv); }
