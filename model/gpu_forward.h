// GpuForward: the Llama forward pass on a CUDA device over paged KV in device
// memory (DESIGN §8, issue 8). The same contract as CpuForward (forward.h):
// one call computes a batch of chunks, writes each token's K and V into its
// sequence's pages and returns the logits of the chunks that want them.
//
// Weights live in device memory, as f32 (cuBLAS SGEMM with TF32 off, the
// precise mode) or bf16 (each GEMM's activations are rounded to bf16 and
// multiplied on the tensor cores with f32 accumulation, the fast mode). The
// small per-token operations and attention are kernels/ launchers; everything
// runs on one stream, and a call returns once its logits are on the host.
// Decode-only steps (every chunk of at most decode_chunk_tokens) are captured
// as a CUDA graph per batch shape and replayed; prefill steps launch eagerly.
//
// Tolerance, not bit-identity: cuBLAS and the attention kernels sum in their
// own order, so GPU logits differ from the CPU path's by rounding (f32: ~1e-5
// relative; bf16: ~1e-2). Within the GPU path a token's logits still depend
// only on its sequence (no reduction crosses rows), so a cache hit and a full
// recompute agree to the same tolerance (tests/model/gpu_forward_test.cc).
//
// Not thread-safe. Available only in a build with CUDA and on a machine with a
// device; Create answers kUnavailable otherwise.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "common/kv_geometry.h"
#include "common/status.h"
#include "model/forward.h"
#include "model/model_weights.h"

namespace kvtier {

enum class GpuWeights { kFloat32, kBFloat16 };

struct GpuForwardOptions {
  GpuWeights weights = GpuWeights::kFloat32;
  int32_t num_pages = 0;        // KV pages in device memory, each one block (f32)
  int block_tokens = 64;        // tokens per page
  int max_batch_tokens = 512;   // the most rows one Run may compute
  int max_batch_chunks = 256;   // the most chunks one Run may carry
  int decode_chunk_tokens = 4;  // longest chunk for the decode attention kernel
  bool cuda_graphs = true;      // replay decode-only steps as captured CUDA graphs
};

class GpuForward final : public ForwardBackend {
 public:
  static Result<std::unique_ptr<GpuForward>> Create(const ModelWeights& weights,
                                                    const GpuForwardOptions& options);
  ~GpuForward() override;

  std::string_view device() const override { return "cuda"; }
  Status Run(std::span<const SeqChunk> chunks, std::vector<float>* logits) override;
  // The argmax on the device (kernels/sampling.cuh); only the ids come back.
  Status RunArgmax(std::span<const SeqChunk> chunks, std::vector<TokenId>* tokens) override;
  std::span<std::byte> HostPage(PageId) override { return {}; }
  Status ReadPage(PageId page, std::span<std::byte> out) override;
  Status WritePage(PageId page, std::span<const std::byte> in) override;
  Result<std::vector<std::byte>> PackRows(PageId page, int rows) override;
  Status UnpackRows(PageId page, int rows, std::span<const std::byte> payload) override;

  // Turns the replay of decode steps from CUDA graphs on or off (benchmarks
  // compare the two).
  void set_cuda_graphs(bool on);

  // The device page pool [num_pages][block layout] and the stream every
  // launch of this object runs on (for tiers/hbm copies into pages).
  void* page_pool() const;
  void* stream() const;
  size_t page_bytes() const;

 private:
  struct Impl;
  struct RowsCopy;
  explicit GpuForward(std::unique_ptr<Impl> impl);
  Result<RowsCopy> PrepareRowsCopy(PageId page, int rows);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvtier
