// GpuForward on the CUDA runtime and cuBLAS (see gpu_forward.h).
#include "model/gpu_forward.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <string>

#include "kernels/attention.cuh"
#include "kernels/convert.cuh"
#include "kernels/device.h"
#include "kernels/layer_ops.cuh"
#include "kernels/sampling.cuh"
#include "kernels/skinny_gemm.cuh"

namespace kvtier {
namespace {

Status Cuda(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return Status::Ok();
  return Status::Unavailable(std::string(what) + ": " + cudaGetErrorString(err));
}

Status Cublas(cublasStatus_t st, const char* what) {
  if (st == CUBLAS_STATUS_SUCCESS) return Status::Ok();
  return Status::Unavailable(std::string(what) + ": " + cublasGetStatusString(st));
}

// Byte offsets of the per-call metadata inside one staging buffer, so a
// call uploads it with a single copy.
struct MetaLayout {
  size_t ids, positions, chunks, tables, last_rows, bytes;
  static MetaLayout For(int64_t rows, int64_t chunks, int64_t table_ints) {
    auto up = [](size_t v) { return (v + 255) & ~size_t{255}; };
    MetaLayout m{};
    m.ids = 0;
    m.positions = up(m.ids + rows * sizeof(int32_t));
    m.chunks = up(m.positions + rows * sizeof(int32_t));
    m.tables = up(m.chunks + chunks * sizeof(AttentionChunk));
    m.last_rows = up(m.tables + table_ints * sizeof(int32_t));
    m.bytes = up(m.last_rows + chunks * sizeof(int32_t));
    return m;
  }
};

}  // namespace

struct GpuForward::Impl {
  static constexpr size_t kCublasWorkspace = 32 << 20;
  struct Layer {
    const float* rms_att = nullptr;
    const float* rms_ffn = nullptr;
    const void *wq = nullptr, *wk = nullptr, *wv = nullptr, *wo = nullptr;
    const void *w1 = nullptr, *w2 = nullptr, *w3 = nullptr;
  };

  const ModelWeights& w;
  const ModelConfig& c;
  GpuForwardOptions o;
  KvGeometry geo;
  int max_pages_per_seq = 0;
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  std::vector<void*> device_allocations;
  std::vector<void*> host_allocations;

  const float* f32_weights = nullptr;      // the whole storage, as loaded
  const uint16_t* bf16_weights = nullptr;  // the same, rounded (bf16 mode)
  std::vector<Layer> layers;
  const float* embedding = nullptr;
  const float* rms_final = nullptr;
  const void* wcls = nullptr;
  float *rope_cos = nullptr, *rope_sin = nullptr;

  float *x = nullptr, *xb = nullptr, *q = nullptr, *k = nullptr, *v = nullptr;
  float *att = nullptr, *h1 = nullptr, *h3 = nullptr, *out = nullptr;
  float *last = nullptr, *logits = nullptr;
  int32_t* argmax_ids = nullptr;  // [max_batch_chunks]
  uint16_t* act16 = nullptr;      // GEMM input in bf16 mode: [max rows][max(dim, hidden)]
  void* pool = nullptr;           // pages [num_pages][block layout]
  MetaLayout meta{};
  std::byte* meta_dev = nullptr;
  std::byte* meta_host = nullptr;  // pinned
  float* logits_host = nullptr;    // pinned [max_batch_chunks][vocab]
  std::byte* page_host = nullptr;  // pinned, one page

  Impl(const ModelWeights& weights, const GpuForwardOptions& options)
      : w(weights),
        c(weights.config),
        o(options),
        geo(c.Kv(options.block_tokens, DType::kFloat32)) {}

  ~Impl() {
    if (stream != nullptr) cudaStreamSynchronize(stream);
    if (copy_stream != nullptr) cudaStreamSynchronize(copy_stream);
    ClearGraphs();
    for (cudaEvent_t e : layer_events) cudaEventDestroy(e);
    if (copy_stream != nullptr) cudaStreamDestroy(copy_stream);
    if (blas != nullptr) cublasDestroy(blas);
    for (void* p : device_allocations) cudaFree(p);
    for (void* p : host_allocations) cudaFreeHost(p);
    if (stream != nullptr) cudaStreamDestroy(stream);
  }

  template <typename T>
  Status Device(size_t count, T** out) {
    void* p = nullptr;
    KVTIER_RETURN_IF_ERROR(Cuda(cudaMalloc(&p, std::max<size_t>(count * sizeof(T), 1)),
                                "cudaMalloc for the GPU forward pass"));
    device_allocations.push_back(p);
    *out = static_cast<T*>(p);
    return Status::Ok();
  }
  template <typename T>
  Status Pinned(size_t count, T** out) {
    void* p = nullptr;
    KVTIER_RETURN_IF_ERROR(Cuda(cudaHostAlloc(&p, std::max<size_t>(count * sizeof(T), 1), 0),
                                "cudaHostAlloc for the GPU forward pass"));
    host_allocations.push_back(p);
    *out = static_cast<T*>(p);
    return Status::Ok();
  }

  // The device copy of a tensor that points into the host storage.
  size_t Offset(const float* host) const { return static_cast<size_t>(host - w.storage.data()); }
  const float* F32(const float* host) const { return f32_weights + Offset(host); }
  const void* Matrix(const float* host) const {
    if (o.weights == GpuWeights::kBFloat16) return bf16_weights + Offset(host);
    return F32(host);
  }

  Status Init() {
    KVTIER_RETURN_IF_ERROR(
        Cuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate"));
    KVTIER_RETURN_IF_ERROR(Cublas(cublasCreate(&blas), "cublasCreate"));
    KVTIER_RETURN_IF_ERROR(Cublas(cublasSetStream(blas, stream), "cublasSetStream"));
    // f32 GEMMs stay in f32 (no TF32): the precise mode.
    KVTIER_RETURN_IF_ERROR(
        Cublas(cublasSetMathMode(blas, CUBLAS_DEFAULT_MATH), "cublasSetMathMode"));
    // A workspace of our own, so that GEMMs captured into graphs allocate
    // nothing.
    void* workspace = nullptr;
    KVTIER_RETURN_IF_ERROR(Device(kCublasWorkspace, reinterpret_cast<std::byte**>(&workspace)));
    KVTIER_RETURN_IF_ERROR(
        Cublas(cublasSetWorkspace(blas, workspace, kCublasWorkspace), "cublasSetWorkspace"));

    // Weights: the whole storage in one copy, pointers mapped by offset.
    const size_t n = w.storage.size();
    float* f32 = nullptr;
    KVTIER_RETURN_IF_ERROR(Device(n, &f32));
    KVTIER_RETURN_IF_ERROR(Cuda(
        cudaMemcpy(f32, w.storage.data(), n * sizeof(float), cudaMemcpyHostToDevice), "weights"));
    f32_weights = f32;
    if (o.weights == GpuWeights::kBFloat16) {
      uint16_t* b = nullptr;
      KVTIER_RETURN_IF_ERROR(Device(n, &b));
      KVTIER_RETURN_IF_ERROR(ConvertF32ToBf16(f32, static_cast<int64_t>(n), b, stream));
      bf16_weights = b;
    }
    embedding = F32(w.token_embedding);
    rms_final = F32(w.rms_final);
    wcls = Matrix(w.wcls);
    for (const LayerWeights& lw : w.layers) {
      Layer l;
      l.rms_att = F32(lw.rms_att);
      l.rms_ffn = F32(lw.rms_ffn);
      l.wq = Matrix(lw.wq), l.wk = Matrix(lw.wk), l.wv = Matrix(lw.wv), l.wo = Matrix(lw.wo);
      l.w1 = Matrix(lw.w1), l.w2 = Matrix(lw.w2), l.w3 = Matrix(lw.w3);
      layers.push_back(l);
    }

    // RoPE tables exactly as CpuForward computes them.
    const int hd = c.head_dim(), half = hd / 2;
    std::vector<float> cs(static_cast<size_t>(c.max_seq_len) * half), sn(cs.size());
    for (int pos = 0; pos < c.max_seq_len; ++pos) {
      for (int j = 0; j < half; ++j) {
        const float freq = 1.0f / std::pow(c.rope_theta, static_cast<float>(2 * j) / hd);
        const float angle = static_cast<float>(pos) * freq;
        cs[static_cast<size_t>(pos) * half + j] = std::cos(angle);
        sn[static_cast<size_t>(pos) * half + j] = std::sin(angle);
      }
    }
    KVTIER_RETURN_IF_ERROR(Device(cs.size(), &rope_cos));
    KVTIER_RETURN_IF_ERROR(Device(sn.size(), &rope_sin));
    KVTIER_RETURN_IF_ERROR(
        Cuda(cudaMemcpy(rope_cos, cs.data(), cs.size() * sizeof(float), cudaMemcpyHostToDevice),
             "rope"));
    KVTIER_RETURN_IF_ERROR(
        Cuda(cudaMemcpy(rope_sin, sn.data(), sn.size() * sizeof(float), cudaMemcpyHostToDevice),
             "rope"));

    // Activations for the largest batch.
    const size_t rows = static_cast<size_t>(o.max_batch_tokens);
    const size_t kv_dim = static_cast<size_t>(c.n_kv_heads) * hd;
    KVTIER_RETURN_IF_ERROR(Device(rows * c.dim, &x));
    KVTIER_RETURN_IF_ERROR(Device(rows * c.dim, &xb));
    KVTIER_RETURN_IF_ERROR(Device(rows * c.dim, &q));
    KVTIER_RETURN_IF_ERROR(Device(rows * kv_dim, &k));
    KVTIER_RETURN_IF_ERROR(Device(rows * kv_dim, &v));
    KVTIER_RETURN_IF_ERROR(Device(rows * c.dim, &att));
    KVTIER_RETURN_IF_ERROR(Device(rows * c.hidden_dim, &h1));
    KVTIER_RETURN_IF_ERROR(Device(rows * c.hidden_dim, &h3));
    KVTIER_RETURN_IF_ERROR(Device(rows * c.dim, &out));
    const size_t want = static_cast<size_t>(o.max_batch_chunks);
    KVTIER_RETURN_IF_ERROR(Device(want * c.dim, &last));
    KVTIER_RETURN_IF_ERROR(Device(want * c.vocab_size, &logits));
    KVTIER_RETURN_IF_ERROR(Device(want, &argmax_ids));
    KVTIER_RETURN_IF_ERROR(Pinned(want * c.vocab_size, &logits_host));
    if (o.weights == GpuWeights::kBFloat16) {
      KVTIER_RETURN_IF_ERROR(Device(rows * std::max(c.dim, c.hidden_dim), &act16));
    }

    // KV pages and per-call metadata.
    KVTIER_RETURN_IF_ERROR(Device(static_cast<size_t>(o.num_pages) * geo.BlockBytes(),
                                  reinterpret_cast<std::byte**>(&pool)));
    max_pages_per_seq = (c.max_seq_len + o.block_tokens - 1) / o.block_tokens;
    meta = MetaLayout::For(o.max_batch_tokens, o.max_batch_chunks,
                           static_cast<int64_t>(o.max_batch_chunks) * max_pages_per_seq);
    KVTIER_RETURN_IF_ERROR(Device(meta.bytes, &meta_dev));
    KVTIER_RETURN_IF_ERROR(Pinned(meta.bytes, &meta_host));
    KVTIER_RETURN_IF_ERROR(Pinned(geo.BlockBytes(), &page_host));
    KVTIER_RETURN_IF_ERROR(
        Cuda(cudaStreamCreateWithFlags(&copy_stream, cudaStreamNonBlocking), "cudaStreamCreate"));
    for (int l = 0; l < c.n_layers; ++l) {
      cudaEvent_t e = nullptr;
      KVTIER_RETURN_IF_ERROR(
          Cuda(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreate"));
      layer_events.push_back(e);
    }
    upload_slots = static_cast<int>(std::clamp<size_t>(kUploadStagingBytes / geo.BlockBytes(), 1,
                                                       static_cast<size_t>(o.num_pages)));
    KVTIER_RETURN_IF_ERROR(
        Pinned(static_cast<size_t>(upload_slots) * geo.BlockBytes(), &upload_staging));
    return Cuda(cudaStreamSynchronize(stream), "GPU forward set-up");
  }

  // y[rows][outs] = x[rows][k] · W[outs][k]^T (row-major), on the stream.
  Status Gemm(const float* in, int64_t rows, const void* weight, int outs, int kdim, float* y) {
    const float alpha = 1.0f, beta = 0.0f;
    if (o.weights == GpuWeights::kFloat32) {
      return Cublas(
          cublasSgemm(blas, CUBLAS_OP_T, CUBLAS_OP_N, outs, static_cast<int>(rows), kdim, &alpha,
                      static_cast<const float*>(weight), kdim, in, kdim, &beta, y, outs),
          "cublasSgemm");
    }
    // A decode step's few rows: a weight-bandwidth-bound product our own
    // kernel reads at full bandwidth (cuBLAS's tiles leave most SMs idle).
    if (rows <= kSkinnyMaxRows && kdim % 8 == 0 && reinterpret_cast<uintptr_t>(weight) % 16 == 0) {
      return SkinnyGemmBf16(in, static_cast<int>(rows), static_cast<const uint16_t*>(weight), outs,
                            kdim, y, stream);
    }
    KVTIER_RETURN_IF_ERROR(ConvertF32ToBf16(in, rows * kdim, act16, stream));
    return Cublas(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, outs, static_cast<int>(rows), kdim,
                               &alpha, weight, CUDA_R_16BF, kdim, act16, CUDA_R_16BF, kdim, &beta,
                               y, CUDA_R_32F, outs, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                  "cublasGemmEx");
  }

  KvPagesView View() const { return KvPagesView{pool, geo, o.num_pages}; }

  // One Run's launch parameters (device pointers into meta_dev).
  struct Launch {
    int64_t rows = 0, want = 0;
    bool argmax = false;        // download each wanted row's argmax instead of its logits
    bool wait_uploads = false;  // layer l waits for layer_events[l] (eager launches only)
    AttentionBatch all, shorts, longs;
    const int32_t *ids = nullptr, *positions = nullptr, *last_rows = nullptr;
  };
  // What a captured graph's launches depend on besides fixed buffers.
  struct GraphKey {
    int64_t rows, want;
    bool argmax;
    int32_t chunks, longest, max_pages, tables;
    auto operator<=>(const GraphKey&) const = default;
  };
  static constexpr size_t kMaxGraphs = 64;

  // Cache hits: pages staged in pinned slots by WritePage, uploaded at the
  // next Run (or a flush) on copy_stream, every page's layer 0 first, then
  // layer 1, ..., with layer_events[l] recorded after layer l.
  static constexpr size_t kUploadStagingBytes = 256 << 20;
  cudaStream_t copy_stream = nullptr;
  std::vector<cudaEvent_t> layer_events;
  std::byte* upload_staging = nullptr;  // pinned [upload_slots][page bytes]
  int upload_slots = 0;
  std::vector<std::pair<PageId, int>> pending_uploads;  // (page, slot)

  Status StageUpload(PageId page, std::span<const std::byte> in) {
    if (static_cast<int>(pending_uploads.size()) == upload_slots) {
      KVTIER_RETURN_IF_ERROR(FlushUploads());
    }
    const int slot = static_cast<int>(pending_uploads.size());
    std::memcpy(upload_staging + static_cast<size_t>(slot) * geo.BlockBytes(), in.data(),
                in.size());
    pending_uploads.emplace_back(page, slot);
    return Status::Ok();
  }

  // Enqueues the staged pages' copies; true when there were any.
  Result<bool> EnqueueUploads() {
    if (pending_uploads.empty()) return false;
    const size_t page = geo.BlockBytes(), layer = page / static_cast<size_t>(c.n_layers);
    auto* base = static_cast<std::byte*>(pool);
    for (int l = 0; l < c.n_layers; ++l) {
      for (const auto& [p, slot] : pending_uploads) {
        KVTIER_RETURN_IF_ERROR(
            Cuda(cudaMemcpyAsync(base + static_cast<size_t>(p) * page + l * layer,
                                 upload_staging + static_cast<size_t>(slot) * page + l * layer,
                                 layer, cudaMemcpyHostToDevice, copy_stream),
                 "page upload"));
      }
      KVTIER_RETURN_IF_ERROR(Cuda(cudaEventRecord(layer_events[l], copy_stream), "upload event"));
    }
    pending_uploads.clear();  // the slots are free again once copy_stream passes
    return true;
  }

  // Uploads every staged page now and waits for them.
  Status FlushUploads() {
    Result<bool> any = EnqueueUploads();
    if (!any.ok()) return any.status();
    if (!*any) return Status::Ok();
    return Cuda(cudaStreamSynchronize(copy_stream), "page upload");
  }
  std::map<GraphKey, cudaGraphExec_t> graphs;

  // Exactly one of out_logits and out_tokens is non-null.
  Status Run(std::span<const SeqChunk> chunks, std::vector<float>* out_logits,
             std::vector<TokenId>* out_tokens);
  Status Enqueue(const Launch& plan);
  Status Capture(const Launch& plan, cudaGraphExec_t* exec);
  void ClearGraphs();
};

Status GpuForward::Impl::Run(std::span<const SeqChunk> chunks, std::vector<float>* out_logits,
                             std::vector<TokenId>* out_tokens) {
  const int vocab = c.vocab_size;
  const int bt = o.block_tokens;

  // Validate everything before touching any page.
  KVTIER_RETURN_IF_ERROR(ValidateChunks(c, bt, o.num_pages, chunks));
  int64_t rows = 0, want = 0;
  int max_pages = 1, longest = 0;
  for (const SeqChunk& ch : chunks) {
    const int64_t end = ch.start_pos + static_cast<int64_t>(ch.tokens.size());
    rows += static_cast<int64_t>(ch.tokens.size());
    if (ch.want_logits && !ch.tokens.empty()) ++want;
    max_pages = std::max(max_pages, static_cast<int>((end + bt - 1) / bt));
    longest = std::max(longest, static_cast<int>(ch.tokens.size()));
  }
  if (rows > o.max_batch_tokens || static_cast<int64_t>(chunks.size()) > o.max_batch_chunks) {
    return Status::InvalidArgument(
        "batch of " + std::to_string(rows) + " tokens in " + std::to_string(chunks.size()) +
        " chunks exceeds the GPU forward's limits (" + std::to_string(o.max_batch_tokens) +
        " tokens, " + std::to_string(o.max_batch_chunks) + " chunks)");
  }
  if (out_logits != nullptr) out_logits->assign(static_cast<size_t>(want) * vocab, 0.0f);
  if (out_tokens != nullptr) out_tokens->assign(static_cast<size_t>(want), 0);
  if (rows == 0) return Status::Ok();

  // Metadata: token ids and positions by row; chunks, short ones first, so
  // the decode and prefill kernels each take a contiguous run of them.
  auto* ids = reinterpret_cast<int32_t*>(meta_host + meta.ids);
  auto* positions = reinterpret_cast<int32_t*>(meta_host + meta.positions);
  auto* descs = reinterpret_cast<AttentionChunk*>(meta_host + meta.chunks);
  auto* tables = reinterpret_cast<int32_t*>(meta_host + meta.tables);
  auto* last_rows = reinterpret_cast<int32_t*>(meta_host + meta.last_rows);
  int32_t num_short = 0, num_chunks = 0, longest_short = 0, longest_long = 0;
  for (int pass = 0; pass < 2; ++pass) {
    int32_t row = 0;
    for (size_t i = 0; i < chunks.size(); ++i) {
      const SeqChunk& ch = chunks[i];
      const int32_t n = static_cast<int32_t>(ch.tokens.size());
      const bool is_short = n <= o.decode_chunk_tokens;
      if (n > 0 && is_short == (pass == 0)) {
        descs[num_chunks++] = AttentionChunk{static_cast<int32_t>(i), ch.start_pos, n, row};
        if (is_short) {
          ++num_short;
          longest_short = std::max(longest_short, n);
        } else {
          longest_long = std::max(longest_long, n);
        }
      }
      row += n;
    }
  }
  {
    int32_t row = 0, n_last = 0;
    for (size_t i = 0; i < chunks.size(); ++i) {
      const SeqChunk& ch = chunks[i];
      for (size_t t = 0; t < ch.tokens.size(); ++t, ++row) {
        ids[row] = ch.tokens[t];
        positions[row] = ch.start_pos + static_cast<int32_t>(t);
      }
      int32_t* table = tables + i * max_pages;
      const size_t have = std::min(ch.pages.size(), static_cast<size_t>(max_pages));
      for (size_t p = 0; p < static_cast<size_t>(max_pages); ++p)
        table[p] = p < have ? ch.pages[p] : 0;
      if (ch.want_logits && !ch.tokens.empty()) last_rows[n_last++] = row - 1;
    }
  }
  const auto* d_ids = reinterpret_cast<const int32_t*>(meta_dev + meta.ids);
  const auto* d_positions = reinterpret_cast<const int32_t*>(meta_dev + meta.positions);
  const auto* d_chunks = reinterpret_cast<const AttentionChunk*>(meta_dev + meta.chunks);
  const auto* d_tables = reinterpret_cast<const int32_t*>(meta_dev + meta.tables);
  const auto* d_last = reinterpret_cast<const int32_t*>(meta_dev + meta.last_rows);

  AttentionBatch all;
  all.chunks = d_chunks;
  all.num_chunks = num_chunks;
  all.rows = static_cast<int32_t>(rows);
  all.max_chunk_tokens = longest;
  all.block_tables = d_tables;
  all.num_tables = static_cast<int32_t>(chunks.size());
  all.max_pages = max_pages;
  AttentionBatch shorts = all, longs = all;
  shorts.num_chunks = num_short;
  shorts.max_chunk_tokens = longest_short;
  longs.chunks = d_chunks + num_short;
  longs.num_chunks = num_chunks - num_short;
  longs.max_chunk_tokens = longest_long;

  const bool argmax = out_tokens != nullptr;
  Launch plan{rows, want, argmax, false, all, shorts, longs, d_ids, d_positions, d_last};
  // Pages staged by WritePage (cache hits) go up on the copy stream layer by
  // layer; layer l's compute waits only for layer l's copies.
  Result<bool> uploading = EnqueueUploads();
  if (!uploading.ok()) return uploading.status();
  plan.wait_uploads = *uploading;
  if (!o.cuda_graphs || longs.num_chunks > 0 || plan.wait_uploads) {
    // Prefill shapes rarely repeat: launched one by one.
    KVTIER_RETURN_IF_ERROR(Enqueue(plan));
  } else {
    // Decode steps repeat their shape: captured once per shape as a CUDA
    // graph (metadata upload, every kernel and GEMM, the logits download)
    // and replayed, which takes the launch overhead off each step.
    const GraphKey key{rows,
                       want,
                       argmax,
                       num_chunks,
                       longest_short,
                       max_pages,
                       static_cast<int32_t>(chunks.size())};
    auto it = graphs.find(key);
    if (it == graphs.end()) {
      if (graphs.size() >= kMaxGraphs) ClearGraphs();
      cudaGraphExec_t exec = nullptr;
      KVTIER_RETURN_IF_ERROR(Capture(plan, &exec));
      it = graphs.emplace(key, exec).first;
    }
    KVTIER_RETURN_IF_ERROR(Cuda(cudaGraphLaunch(it->second, stream), "CUDA graph launch"));
  }
  KVTIER_RETURN_IF_ERROR(Cuda(cudaStreamSynchronize(stream), "GPU forward pass"));
  if (argmax) {
    const auto* ids = reinterpret_cast<const int32_t*>(logits_host);
    std::copy_n(ids, want, out_tokens->data());
  } else {
    std::copy_n(logits_host, want * vocab, out_logits->data());
  }
  return Status::Ok();
}

Status GpuForward::Impl::Capture(const Launch& plan, cudaGraphExec_t* exec) {
  KVTIER_RETURN_IF_ERROR(
      Cuda(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "CUDA graph capture"));
  const Status enqueued = Enqueue(plan);
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
  if (!enqueued.ok() || ended != cudaSuccess) {
    if (graph != nullptr) cudaGraphDestroy(graph);
    cudaGetLastError();  // a failed capture leaves an error behind; this call answers it
    return enqueued.ok() ? Cuda(ended, "CUDA graph capture") : enqueued;
  }
  const cudaError_t made = cudaGraphInstantiate(exec, graph, 0);
  cudaGraphDestroy(graph);
  return Cuda(made, "CUDA graph instantiate");
}

void GpuForward::Impl::ClearGraphs() {
  for (auto& [key, exec] : graphs) cudaGraphExecDestroy(exec);
  graphs.clear();
}

// Everything one Run puts on the stream, from the metadata upload to the
// logits download.
Status GpuForward::Impl::Enqueue(const Launch& plan) {
  const int dim = c.dim, hd = c.head_dim(), kv_dim = c.n_kv_heads * hd;
  const int hidden = c.hidden_dim, vocab = c.vocab_size;
  const int64_t rows = plan.rows, want = plan.want;
  const AttentionBatch &all = plan.all, &shorts = plan.shorts, &longs = plan.longs;
  const int32_t *d_ids = plan.ids, *d_positions = plan.positions, *d_last = plan.last_rows;
  KVTIER_RETURN_IF_ERROR(
      Cuda(cudaMemcpyAsync(meta_dev, meta_host, meta.bytes, cudaMemcpyHostToDevice, stream),
           "batch metadata upload"));
  const KvPagesView kv = View();
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  KVTIER_RETURN_IF_ERROR(GatherRows(embedding, vocab, d_ids, rows, dim, x, stream));
  for (int l = 0; l < c.n_layers; ++l) {
    const Layer& lw = layers[l];
    KVTIER_RETURN_IF_ERROR(RmsNormRows(x, lw.rms_att, rows, dim, c.norm_eps, xb, stream));
    KVTIER_RETURN_IF_ERROR(Gemm(xb, rows, lw.wq, dim, dim, q));
    KVTIER_RETURN_IF_ERROR(Gemm(xb, rows, lw.wk, kv_dim, dim, k));
    KVTIER_RETURN_IF_ERROR(Gemm(xb, rows, lw.wv, kv_dim, dim, v));
    KVTIER_RETURN_IF_ERROR(
        RopeRows(q, rows, dim, hd, d_positions, rope_cos, rope_sin, c.max_seq_len, stream));
    KVTIER_RETURN_IF_ERROR(
        RopeRows(k, rows, kv_dim, hd, d_positions, rope_cos, rope_sin, c.max_seq_len, stream));
    if (plan.wait_uploads) {
      KVTIER_RETURN_IF_ERROR(Cuda(cudaStreamWaitEvent(stream, layer_events[l], 0), "upload wait"));
    }
    KVTIER_RETURN_IF_ERROR(StoreKv(kv, all, l, k, v, stream));
    const AttentionParams ap{l, c.n_heads, scale};
    if (shorts.num_chunks > 0) {
      KVTIER_RETURN_IF_ERROR(PagedAttentionDecode(kv, shorts, ap, q, att, stream));
    }
    if (longs.num_chunks > 0) {
      KVTIER_RETURN_IF_ERROR(PagedAttentionPrefill(kv, longs, ap, q, att, stream));
    }
    KVTIER_RETURN_IF_ERROR(Gemm(att, rows, lw.wo, dim, dim, out));
    KVTIER_RETURN_IF_ERROR(AddInPlace(x, out, rows * dim, stream));
    KVTIER_RETURN_IF_ERROR(RmsNormRows(x, lw.rms_ffn, rows, dim, c.norm_eps, xb, stream));
    KVTIER_RETURN_IF_ERROR(Gemm(xb, rows, lw.w1, hidden, dim, h1));
    KVTIER_RETURN_IF_ERROR(Gemm(xb, rows, lw.w3, hidden, dim, h3));
    KVTIER_RETURN_IF_ERROR(SwiGlu(h1, h3, rows * hidden, h1, stream));
    KVTIER_RETURN_IF_ERROR(Gemm(h1, rows, lw.w2, dim, hidden, out));
    KVTIER_RETURN_IF_ERROR(AddInPlace(x, out, rows * dim, stream));
  }
  if (want > 0) {
    KVTIER_RETURN_IF_ERROR(GatherRows(x, rows, d_last, want, dim, last, stream));
    KVTIER_RETURN_IF_ERROR(RmsNormRows(last, rms_final, want, dim, c.norm_eps, last, stream));
    KVTIER_RETURN_IF_ERROR(Gemm(last, want, wcls, vocab, dim, logits));
    if (plan.argmax) {
      KVTIER_RETURN_IF_ERROR(ArgmaxRows(logits, want, vocab, argmax_ids, stream));
      KVTIER_RETURN_IF_ERROR(Cuda(cudaMemcpyAsync(logits_host, argmax_ids, want * sizeof(int32_t),
                                                  cudaMemcpyDeviceToHost, stream),
                                  "argmax download"));
    } else {
      KVTIER_RETURN_IF_ERROR(Cuda(cudaMemcpyAsync(logits_host, logits, want * vocab * sizeof(float),
                                                  cudaMemcpyDeviceToHost, stream),
                                  "logits download"));
    }
  }
  return Status::Ok();
}

GpuForward::GpuForward(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GpuForward::~GpuForward() = default;

Result<std::unique_ptr<GpuForward>> GpuForward::Create(const ModelWeights& weights,
                                                       const GpuForwardOptions& options) {
  if (!DeviceAvailable()) {
    return Status::Unavailable("no CUDA device for the GPU forward pass: " + DeviceDescription());
  }
  KVTIER_RETURN_IF_ERROR(weights.config.Validate());
  if (!ValidBlockTokens(options.block_tokens)) {
    return Status::InvalidArgument("block_tokens must be a power of two in [16, 1024]");
  }
  if (options.num_pages < 1 || options.max_batch_tokens < 1 || options.max_batch_chunks < 1 ||
      options.decode_chunk_tokens < 1) {
    return Status::InvalidArgument("GPU forward needs pages and positive batch limits");
  }
  auto impl = std::make_unique<Impl>(weights, options);
  KVTIER_RETURN_IF_ERROR(impl->Init());
  return std::unique_ptr<GpuForward>(new GpuForward(std::move(impl)));
}

Status GpuForward::Run(std::span<const SeqChunk> chunks, std::vector<float>* logits) {
  return impl_->Run(chunks, logits, nullptr);
}

Status GpuForward::RunArgmax(std::span<const SeqChunk> chunks, std::vector<TokenId>* tokens) {
  return impl_->Run(chunks, nullptr, tokens);
}

void GpuForward::set_cuda_graphs(bool on) { impl_->o.cuda_graphs = on; }
void* GpuForward::page_pool() const { return impl_->pool; }
void* GpuForward::stream() const { return impl_->stream; }
size_t GpuForward::page_bytes() const { return impl_->geo.BlockBytes(); }

namespace {

Status CheckPage(PageId page, int32_t num_pages) {
  if (page < 0 || page >= num_pages) {
    return Status::InvalidArgument("page " + std::to_string(page) + " is outside the pool");
  }
  return Status::Ok();
}

}  // namespace

Status GpuForward::ReadPage(PageId page, std::span<std::byte> out) {
  KVTIER_RETURN_IF_ERROR(CheckPage(page, impl_->o.num_pages));
  KVTIER_RETURN_IF_ERROR(impl_->FlushUploads());
  const size_t bytes = page_bytes();
  if (out.size() != bytes) return Status::InvalidArgument("page buffer of the wrong size");
  const auto* src = static_cast<const std::byte*>(impl_->pool) + static_cast<size_t>(page) * bytes;
  KVTIER_RETURN_IF_ERROR(
      Cuda(cudaMemcpyAsync(impl_->page_host, src, bytes, cudaMemcpyDeviceToHost, impl_->stream),
           "page download"));
  KVTIER_RETURN_IF_ERROR(Cuda(cudaStreamSynchronize(impl_->stream), "page download"));
  std::memcpy(out.data(), impl_->page_host, bytes);
  return Status::Ok();
}

Status GpuForward::WritePage(PageId page, std::span<const std::byte> in) {
  KVTIER_RETURN_IF_ERROR(CheckPage(page, impl_->o.num_pages));
  const size_t bytes = page_bytes();
  if (in.size() != bytes) return Status::InvalidArgument("page payload of the wrong size");
  return impl_->StageUpload(page, in);
}

// A page's first `rows` slots of every (layer, K|V, head) segment: one 2-D
// copy of layers·2·kv_heads rows, each rows·head_dim floats, at the page's
// segment pitch.
struct GpuForward::RowsCopy {
  std::byte* page = nullptr;  // device
  size_t width = 0, pitch = 0, height = 0;
  size_t bytes() const { return width * height; }
};

Result<GpuForward::RowsCopy> GpuForward::PrepareRowsCopy(PageId page, int rows) {
  KVTIER_RETURN_IF_ERROR(CheckPage(page, impl_->o.num_pages));
  const KvGeometry& g = impl_->geo;
  if (rows <= 0 || rows > g.block_tokens) return Status::InvalidArgument("rows outside the page");
  KVTIER_RETURN_IF_ERROR(impl_->FlushUploads());
  RowsCopy r;
  r.page = static_cast<std::byte*>(impl_->pool) + static_cast<size_t>(page) * page_bytes();
  r.width = static_cast<size_t>(rows) * g.head_dim * sizeof(float);
  r.pitch = static_cast<size_t>(g.block_tokens) * g.head_dim * sizeof(float);
  r.height = static_cast<size_t>(g.layers) * 2 * g.kv_heads;
  return r;
}

Result<std::vector<std::byte>> GpuForward::PackRows(PageId page, int rows) {
  Result<RowsCopy> r = PrepareRowsCopy(page, rows);
  if (!r.ok()) return r.status();
  KVTIER_RETURN_IF_ERROR(
      Cuda(cudaMemcpy2DAsync(impl_->page_host, r->width, r->page, r->pitch, r->width, r->height,
                             cudaMemcpyDeviceToHost, impl_->stream),
           "partial page download"));
  KVTIER_RETURN_IF_ERROR(Cuda(cudaStreamSynchronize(impl_->stream), "partial page download"));
  return std::vector<std::byte>(impl_->page_host, impl_->page_host + r->bytes());
}

Status GpuForward::UnpackRows(PageId page, int rows, std::span<const std::byte> payload) {
  Result<RowsCopy> r = PrepareRowsCopy(page, rows);
  if (!r.ok()) return r.status();
  if (payload.size() != r->bytes())
    return Status::InvalidArgument("partial block of the wrong size");
  std::memcpy(impl_->page_host, payload.data(), payload.size());
  KVTIER_RETURN_IF_ERROR(
      Cuda(cudaMemcpy2DAsync(r->page, r->pitch, impl_->page_host, r->width, r->width, r->height,
                             cudaMemcpyHostToDevice, impl_->stream),
           "partial page upload"));
  return Cuda(cudaStreamSynchronize(impl_->stream), "partial page upload");
}

}  // namespace kvtier
