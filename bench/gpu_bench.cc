// gpu_bench: the GPU path measured against the device's own limits, in one
// run (issue 8). Needs a CUDA device; without one it prints why and exits 0
// with {"skipped": "..."} as its JSON.
//
//   h2d_promotion_ratio  HBM tier promotion of a run of blocks from pinned
//                        DRAM, GB/s over one pinned cudaMemcpyAsync of the
//                        same bytes (the copy engine's peak)
//   d2h_offload_ratio    HBM tier read-back of a run of blocks into pinned
//                        memory, over pinned cudaMemcpyAsync D2H
//   pack_ratio           KV pack kernel (pages of 16 tokens to 64-token
//                        blocks) over cudaMemcpyAsync D2D of the same bytes
//   decode               tokens/s of the GPU forward pass at batch 1..256
//                        (each sequence 512 tokens deep, greedy: the argmax
//                        on the device), ~1B-shape model
//   prefill              MFU of a 2K- and a 16K-token prefill (GEMM FLOPs
//                        2·N·tokens, attention FLOPs counted apart)
//   ttft_16k             time to first token of a 16K-token prompt: cold,
//                        all but the last block in HBM, in DRAM, on flash
//
// Usage: gpu_bench [--json] [--quick] [--dir DIR (flash file; default /tmp)]
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kernels/device.h"
#include "kernels/kv_pack.cuh"
#include "model/gpu_forward.h"
#include "model/model_weights.h"
#include "tiers/dram/dram_tier.h"
#include "tiers/flash/flash_tier.h"
#include "tiers/hbm/hbm_tier.h"

namespace kvtier {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

void Check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

void Check(const Status& s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, s.ToString().c_str());
    std::exit(1);
  }
}

// Best of `reps` timings of `fn` on `stream`, by CUDA events, in seconds.
double TimeStream(cudaStream_t stream, int reps, const std::function<void()>& fn) {
  cudaEvent_t a, b;
  Check(cudaEventCreate(&a), "event");
  Check(cudaEventCreate(&b), "event");
  fn();  // warm-up
  Check(cudaStreamSynchronize(stream), "warm-up");
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    Check(cudaEventRecord(a, stream), "record");
    fn();
    Check(cudaEventRecord(b, stream), "record");
    Check(cudaEventSynchronize(b), "sync");
    float ms = 0;
    Check(cudaEventElapsedTime(&ms, a, b), "elapsed");
    best = std::min(best, ms / 1e3);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return best;
}

// Best of `reps` wall-clock timings of a synchronous `fn`.
double TimeHost(int reps, const std::function<void()>& fn) {
  fn();
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = Clock::now();
    fn();
    best = std::min(best, Seconds(t0, Clock::now()));
  }
  return best;
}

BlockKey Key(uint64_t i) { return BlockKey{0x6b76746965720000ull, i}; }

std::string DeviceName() {
  cudaDeviceProp p{};
  if (cudaGetDeviceProperties(&p, 0) != cudaSuccess) return "?";
  return p.name;
}

// Dense bf16 tensor-core peak of the device, FLOP/s (0 = unknown).
double Bf16Peak(const std::string& name) {
  if (name.find("H100") != std::string::npos || name.find("H200") != std::string::npos) {
    return 989e12;  // SXM, dense
  }
  if (name.find("A100") != std::string::npos) return 312e12;
  return 0;
}

nlohmann::json Transfers(bool quick) {
  const size_t block = 4 << 20;  // a 64-token block of a 1B-shape model in f32
  const int blocks = quick ? 32 : 128;
  const size_t bytes = block * blocks;
  cudaStream_t s;
  Check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "stream");
  void *host = nullptr, *dev = nullptr;
  Check(cudaHostAlloc(&host, bytes, 0), "cudaHostAlloc");
  Check(cudaMalloc(&dev, bytes), "cudaMalloc");
  std::memset(host, 0x5a, bytes);
  const double h2d_peak =
      bytes / TimeStream(s, 5, [&] {
        Check(cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, s), "h2d");
      });
  const double d2h_peak =
      bytes / TimeStream(s, 5, [&] {
        Check(cudaMemcpyAsync(host, dev, bytes, cudaMemcpyDeviceToHost, s), "d2h");
      });
  const double d2d = 2.0 * bytes /
                     TimeStream(s, 5,
                                [&] {
                                  Check(cudaMemcpyAsync(static_cast<char*>(dev) + bytes / 2, dev,
                                                        bytes / 2, cudaMemcpyDeviceToDevice, s),
                                        "d2d");
                                }) /
                     2.0;  // bytes read + written, per the half-size copy

  // Promotion through the HBM tier: one Write of the whole run from pinned
  // memory (a DRAM arena), then the run read back (an offload).
  HbmTierOptions ho;
  ho.capacity_bytes = 2 * bytes + (64 << 20);  // a rewrite holds old and new copies
  ho.max_block_bytes = block;
  auto hbm = HbmTier::Open(ho);
  Check(hbm.status(), "HbmTier::Open");
  std::vector<WriteOp> writes(blocks);
  std::vector<ReadOp> reads(blocks);
  for (int i = 0; i < blocks; ++i) {
    writes[i] = WriteOp{Key(i), {static_cast<const std::byte*>(host) + i * block, block}};
    reads[i] = ReadOp{Key(i), {static_cast<std::byte*>(host) + i * block, block}};
  }
  auto write_all = [&] {
    for (const IoResult& r : WriteSync(**hbm, writes)) Check(r.status, "hbm write");
  };
  auto read_all = [&] {
    for (const IoResult& r : ReadSync(**hbm, reads)) Check(r.status, "hbm read");
  };
  const double promo = bytes / TimeHost(5, write_all);
  const double offload = bytes / TimeHost(5, read_all);

  // Pack: 64-token blocks gathered from 16-token pages, KV of a 1B-shape
  // model (16 layers, 8 KV heads, 64 dims, bf16).
  KvPageLayout layout{KvGeometry{16, 8, 64, 64, DType::kBFloat16}, 16, 0};
  const size_t kv_block = layout.geometry.BlockBytes();
  const int64_t pack_blocks = static_cast<int64_t>(bytes / 2 / kv_block);
  layout.num_pages = pack_blocks * layout.PagesPerBlock();
  std::vector<int32_t> table(static_cast<size_t>(layout.num_pages));
  for (size_t i = 0; i < table.size(); ++i) {
    table[i] = static_cast<int32_t>((i * 7919) % table.size());  // scattered pages
  }
  int32_t* dtable = nullptr;
  Check(cudaMalloc(reinterpret_cast<void**>(&dtable), table.size() * sizeof(int32_t)),
        "cudaMalloc");
  Check(cudaMemcpy(dtable, table.data(), table.size() * sizeof(int32_t), cudaMemcpyHostToDevice),
        "table");
  const size_t pack_bytes = pack_blocks * kv_block;
  const double pack = 2.0 * pack_bytes / TimeStream(s, 5, [&] {
                        Check(PackKvBlocks(layout, dev, dtable, pack_blocks,
                                           static_cast<char*>(dev) + bytes / 2, s),
                              "pack");
                      });
  const double unpack = 2.0 * pack_bytes / TimeStream(s, 5, [&] {
                          Check(UnpackKvBlocks(layout, static_cast<char*>(dev) + bytes / 2, dtable,
                                               pack_blocks, dev, s),
                                "unpack");
                        });
  cudaFree(dtable);
  cudaFree(dev);
  cudaFreeHost(host);
  cudaStreamDestroy(s);
  hbm->reset();

  const double gb = 1e9;
  std::printf("transfers (%d blocks of %zu MiB)\n", blocks, block >> 20);
  std::printf("  h2d: pinned memcpy %.1f GB/s, HBM tier promotion %.1f GB/s  ratio %.2f\n",
              h2d_peak / gb, promo / gb, promo / h2d_peak);
  std::printf("  d2h: pinned memcpy %.1f GB/s, HBM tier offload   %.1f GB/s  ratio %.2f\n",
              d2h_peak / gb, offload / gb, offload / d2h_peak);
  std::printf("  pack: kernel %.0f GB/s, unpack %.0f GB/s, D2D copy %.0f GB/s  ratio %.2f\n",
              pack / gb, unpack / gb, d2d / gb, pack / d2d);
  return {{"h2d_peak_gbps", h2d_peak / gb},
          {"h2d_promotion_gbps", promo / gb},
          {"h2d_promotion_ratio", promo / h2d_peak},
          {"d2h_peak_gbps", d2h_peak / gb},
          {"d2h_offload_gbps", offload / gb},
          {"d2h_offload_ratio", offload / d2h_peak},
          {"pack_gbps", pack / gb},
          {"unpack_gbps", unpack / gb},
          {"d2d_copy_gbps", d2d / gb},
          {"pack_ratio", pack / d2d},
          {"unpack_ratio", unpack / d2d}};
}

std::vector<TokenId> Prompt(int n, uint32_t salt, int vocab) {
  std::vector<TokenId> p(n);
  uint32_t x = salt * 2654435761u + 1;
  for (int i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    p[i] = 3 + static_cast<TokenId>((x >> 8) % static_cast<uint32_t>(vocab - 3));
  }
  return p;
}

std::vector<PageId> Range(int first, int n) {
  std::vector<PageId> p(n);
  for (int i = 0; i < n; ++i) p[i] = first + i;
  return p;
}

nlohmann::json Model(bool quick, const std::string& dir) {
  ModelConfig c = ModelPreset("1b").value();
  c.max_seq_len = 16384 + 64;
  const auto t0 = Clock::now();
  auto w = RandomModel(c, 1);
  Check(w.status(), "RandomModel");
  std::printf("model: 1b shape, %.2fB active params (random weights in %.1f s)\n",
              c.ActiveParams() / 1e9, Seconds(t0, Clock::now()));
  const int bt = 64;
  const KvGeometry geo = c.Kv(bt, DType::kFloat32);
  const size_t page_bytes = geo.BlockBytes();
  const int ctx = 512, decode_steps = quick ? 4 : 16;
  const std::vector<int> batches =
      quick ? std::vector<int>{1, 16, 64} : std::vector<int>{1, 2, 4, 8, 16, 32, 64, 128, 256};
  const int max_batch = batches.back();
  const int steps_total = decode_steps * (static_cast<int>(batches.size()) + 2);
  const int seq_pages = (ctx + steps_total) / bt + 2;
  const int long_prompt = quick ? 4096 : 16384;
  const int long_pages = long_prompt / bt + 1;

  GpuForwardOptions o;
  o.weights = GpuWeights::kBFloat16;
  o.block_tokens = bt;
  o.num_pages = std::max(max_batch * seq_pages, 2 * long_pages);
  o.max_batch_tokens = long_prompt;
  o.max_batch_chunks = max_batch;
  auto f = GpuForward::Create(**w, o);
  Check(f.status(), "GpuForward::Create");
  GpuForward& gpu = **f;
  std::vector<float> logits;
  const double peak = Bf16Peak(DeviceName());
  nlohmann::json out;

  // Prefill: MFU at 2K and the long prompt (cold TTFT is the latter).
  auto prefill = [&](int n, const std::vector<PageId>& pages) {
    const std::vector<TokenId> p = Prompt(n, 77, c.vocab_size);
    SeqChunk ch{p, 0, pages, true};
    Check(gpu.Run({&ch, 1}, &logits), "prefill");
  };
  nlohmann::json pre = nlohmann::json::array();
  for (int n : {2048, long_prompt}) {
    const std::vector<PageId> pages = Range(0, n / bt + 1);
    const double s = TimeHost(2, [&] { prefill(n, pages); });
    const double gemm = 2.0 * c.ActiveParams() * n;
    const double attn = 2.0 * c.n_layers * c.dim * static_cast<double>(n) * n;  // causal
    const double mfu = peak > 0 ? gemm / s / peak : 0;
    std::printf(
        "prefill %5d tokens: %.1f ms, %.0f tok/s, GEMM %.0f TFLOP/s (MFU %.3f), "
        "attention %.1f TFLOP/s\n",
        n, s * 1e3, n / s, gemm / s / 1e12, mfu, attn / s / 1e12);
    pre.push_back({{"tokens", n},
                   {"seconds", s},
                   {"tokens_per_s", n / s},
                   {"mfu", mfu},
                   {"gemm_tflops", gemm / s / 1e12},
                   {"attention_tflops", attn / s / 1e12}});
  }
  out["prefill"] = pre;
  out["peak_bf16_flops"] = peak;

  // Decode: fill max_batch sequences to ctx tokens, then time steps.
  std::vector<std::vector<PageId>> tables(max_batch);
  std::vector<std::vector<TokenId>> prompts(max_batch);
  std::vector<int> pos(max_batch, 0);
  for (int i = 0; i < max_batch; ++i) {
    tables[i] = Range(i * seq_pages, seq_pages);
    prompts[i] = Prompt(ctx + steps_total + 1, i, c.vocab_size);
  }
  for (int i = 0; i < max_batch; i += 8) {
    std::vector<SeqChunk> chunks;
    for (int j = i; j < std::min(max_batch, i + 8); ++j) {
      chunks.push_back({std::span<const TokenId>(prompts[j]).first(ctx), 0, tables[j], false});
      pos[j] = ctx;
    }
    Check(gpu.Run(chunks, &logits), "decode fill");
  }
  nlohmann::json dec = nlohmann::json::array();
  std::printf("decode (context %d):", ctx);
  std::vector<TokenId> next;
  auto decode_rate = [&](int b) {
    auto step = [&] {
      std::vector<SeqChunk> chunks;
      for (int j = 0; j < b; ++j) {
        chunks.push_back(
            {std::span<const TokenId>(prompts[j]).subspan(pos[j], 1), pos[j], tables[j], true});
      }
      Check(gpu.RunArgmax(chunks, &next), "decode");  // greedy: ids come back, not logits
      for (int j = 0; j < b; ++j) ++pos[j];
    };
    step();  // warm-up
    const auto t1 = Clock::now();
    for (int i = 1; i < decode_steps; ++i) step();
    return Seconds(t1, Clock::now()) / (decode_steps - 1);
  };
  for (int b : batches) {
    const double s = decode_rate(b);
    std::printf("  b%d %.0f tok/s", b, b / s);
    dec.push_back({{"batch", b}, {"step_ms", s * 1e3}, {"tokens_per_s", b / s}});
  }
  std::printf("\n");
  out["decode"] = dec;
  // The same steps launched one by one: what the CUDA graphs save.
  gpu.set_cuda_graphs(false);
  const double eager = decode_rate(1);
  gpu.set_cuda_graphs(true);
  const double graphed = decode_rate(1);
  std::printf("decode b1: CUDA graphs %.2f ms/step, eager launches %.2f ms/step (%.2fx)\n",
              graphed * 1e3, eager * 1e3, eager / graphed);
  out["decode_b1_graph_speedup"] = eager / graphed;

  // TTFT of the long prompt: cold, and with all its full blocks but the
  // last in HBM, in DRAM, on flash (each copied into the engine's pages,
  // then the last block computed).
  const std::vector<TokenId> prompt = Prompt(long_prompt, 77, c.vocab_size);
  const std::vector<PageId> a = Range(0, long_pages), b = Range(long_pages, long_pages);
  const int cached = long_prompt / bt - 1;
  SeqChunk whole{prompt, 0, a, true};
  const double cold = TimeHost(2, [&] { Check(gpu.Run({&whole, 1}, &logits), "cold"); });
  std::vector<std::byte> page(page_bytes);
  auto finish = [&] {
    SeqChunk rest{std::span<const TokenId>(prompt).subspan(cached * bt), cached * bt, b, true};
    Check(gpu.Run({&rest, 1}, &logits), "rest");
  };
  // Stage the blocks in each tier.
  HbmTierOptions ho;
  ho.capacity_bytes = static_cast<uint64_t>(cached) * page_bytes + (64 << 20);
  ho.max_block_bytes = page_bytes;
  auto hbm = HbmTier::Open(ho);
  Check(hbm.status(), "HbmTier::Open");
  DramTierOptions dopt;
  dopt.capacity_bytes = static_cast<uint64_t>(cached + 8) * page_bytes;
  dopt.max_block_bytes = page_bytes;
  dopt.read_bytes_per_s = dopt.write_bytes_per_s = 1e10;
  auto dram = OpenDramTier(dopt);
  Check(dram.status(), "OpenDramTier");
  FlashTierOptions fopt;
  fopt.path = dir + "/kvtier-gpu-bench.flash";
  std::filesystem::remove(fopt.path);
  fopt.capacity_bytes = static_cast<uint64_t>(cached + 8) * (page_bytes + 8192);
  fopt.region_bytes = 64 << 20;
  fopt.max_block_bytes = page_bytes;
  fopt.read_slot_bytes = page_bytes + 8192;
  fopt.read_bytes_per_s = fopt.write_bytes_per_s = 1e9;
  auto flash = OpenFlashTier(fopt);
  Check(flash.status(), "OpenFlashTier");
  for (int i = 0; i < cached; ++i) {
    Check(gpu.ReadPage(a[i], page), "page out");
    Check(WriteOne(**hbm, Key(i), page), "hbm put");
    Check(WriteOne(**dram, Key(i), page), "dram put");
    Check(WriteOne(**flash, Key(i), page), "flash put");
  }
  void* staging = nullptr;
  Check(cudaHostAlloc(&staging, static_cast<size_t>(cached) * page_bytes, 0), "staging");
  auto* st = static_cast<std::byte*>(staging);
  auto* pool = static_cast<std::byte*>(gpu.page_pool());
  auto stream = static_cast<cudaStream_t>(gpu.stream());
  const double hbm_hit = TimeHost(2, [&] {
    std::vector<DeviceReadOp> copies(cached);
    for (int i = 0; i < cached; ++i) {
      copies[i] = DeviceReadOp{Key(i), pool + static_cast<size_t>(b[i]) * page_bytes, page_bytes};
    }
    Check((*hbm)->ReadToDevice(copies, stream), "hbm to pages");
    finish();
  });
  auto from_host_tier = [&](Tier& tier) {
    std::vector<ReadOp> reads(cached);
    for (int i = 0; i < cached; ++i) {
      reads[i] = ReadOp{Key(i), {st + static_cast<size_t>(i) * page_bytes, page_bytes}};
    }
    for (const IoResult& r : ReadSync(tier, reads)) Check(r.status, "tier read");
    // Pages b are consecutive: one copy into the pool.
    Check(cudaMemcpyAsync(pool + static_cast<size_t>(b[0]) * page_bytes, st,
                          static_cast<size_t>(cached) * page_bytes, cudaMemcpyHostToDevice, stream),
          "h2d pages");
    finish();
  };
  const double dram_hit = TimeHost(2, [&] { from_host_tier(**dram); });
  // The engine's own path: each block read from DRAM and staged by
  // WritePage, the uploads running layer by layer beside the compute.
  const double dram_engine_hit = TimeHost(2, [&] {
    for (int i = 0; i < cached; ++i) {
      Check(ReadOne(**dram, Key(i), page).status(), "dram read");
      Check(gpu.WritePage(b[i], page), "stage page");
    }
    finish();
  });
  const double flash_hit = TimeHost(2, [&] { from_host_tier(**flash); });
  cudaFreeHost(staging);
  flash->reset();
  std::filesystem::remove(fopt.path);
  std::printf(
      "TTFT %d tokens: cold %.1f ms, HBM hit %.1f ms, DRAM hit %.1f ms (through the engine's "
      "WritePage %.1f ms), flash hit %.1f ms (%d of %d blocks cached)\n",
      long_prompt, cold * 1e3, hbm_hit * 1e3, dram_hit * 1e3, dram_engine_hit * 1e3,
      flash_hit * 1e3, cached, long_prompt / bt);
  out["ttft"] = {
      {"prompt_tokens", long_prompt},    {"cached_blocks", cached},
      {"cold_ms", cold * 1e3},           {"hbm_hit_ms", hbm_hit * 1e3},
      {"dram_hit_ms", dram_hit * 1e3},   {"dram_hit_engine_path_ms", dram_engine_hit * 1e3},
      {"flash_hit_ms", flash_hit * 1e3}, {"speedup_hbm", cold / hbm_hit},
      {"speedup_dram", cold / dram_hit}, {"speedup_flash", cold / flash_hit}};
  return out;
}

}  // namespace
}  // namespace kvtier

int main(int argc, char** argv) {
  bool json = false, quick = false;
  std::string dir = "/tmp";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--json") {
      json = true;
    } else if (a == "--quick") {
      quick = true;
    } else if (a == "--dir" && i + 1 < argc) {
      dir = argv[++i];
    } else {
      std::fprintf(stderr, "usage: gpu_bench [--json] [--quick] [--dir DIR]\n");
      return 2;
    }
  }
  nlohmann::json out;
  if (!kvtier::DeviceAvailable()) {
    std::printf("gpu_bench: no GPU (%s); nothing measured\n", kvtier::DeviceDescription().c_str());
    out["skipped"] = kvtier::DeviceDescription();
  } else {
    std::printf("%s\n", kvtier::DeviceDescription().c_str());
    out["device"] = kvtier::DeviceName();
    out["transfers"] = kvtier::Transfers(quick);
    out["model_1b"] = kvtier::Model(quick, dir);
    out["h2d_promotion_ratio"] = out["transfers"]["h2d_promotion_ratio"];
    out["d2h_offload_ratio"] = out["transfers"]["d2h_offload_ratio"];
    out["pack_ratio"] = out["transfers"]["pack_ratio"];
  }
  if (json) std::printf("%s\n", out.dump().c_str());
  return 0;
}
