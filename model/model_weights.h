// ModelWeights: the parameters of a Llama-family model, in memory, in the
// engine's one convention, and the loaders and writers of checkpoint formats.
//
// Convention (whatever the file's): every matrix is fp32, row-major [out][in],
// so y[i] = sum_j W[i][j] * x[j]; RoPE rotates adjacent pairs (2j, 2j+1) of
// each head with frequency theta^(-2j/head_dim), as llama2.c's run.c does.
// Hugging Face checkpoints rotate half-split pairs (j, j + head_dim/2); their
// q and k projections are permuted back to adjacent pairs when loaded and
// permuted forward when written, so a round trip is exact.
//
// fp16 and bf16 tensors are widened to fp32 on load (exact). Immutable after
// load; safe to share between threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "model/model_config.h"

namespace kvtier {

struct LayerWeights {
  const float* rms_att = nullptr;  // [dim]
  const float* wq = nullptr;       // [n_heads * head_dim][dim]
  const float* wk = nullptr;       // [n_kv_heads * head_dim][dim]
  const float* wv = nullptr;       // [n_kv_heads * head_dim][dim]
  const float* wo = nullptr;       // [dim][n_heads * head_dim]
  const float* rms_ffn = nullptr;  // [dim]
  const float* w1 = nullptr;       // [hidden_dim][dim]  (gate_proj)
  const float* w2 = nullptr;       // [dim][hidden_dim]  (down_proj)
  const float* w3 = nullptr;       // [hidden_dim][dim]  (up_proj)
};

struct ModelWeights {
  ModelConfig config;
  std::vector<float> storage;              // owns every tensor below
  const float* token_embedding = nullptr;  // [vocab][dim]
  std::vector<LayerWeights> layers;        // n_layers
  const float* rms_final = nullptr;        // [dim]
  const float* wcls = nullptr;             // [vocab][dim]; == token_embedding when tied
  bool tied_embeddings = false;
  // XXH3-64 of the config and every tensor as loaded: the model revision that
  // goes into the cache namespace, so a changed checkpoint never reuses KV.
  uint64_t digest = 0;

  // Lays out storage for `config` (zeroed) and points every tensor into it.
  static Result<std::unique_ptr<ModelWeights>> Allocate(const ModelConfig& config, bool tied);
  // Recomputes `digest` from the config and the tensors.
  void ComputeDigest();
};

// Storage dtypes of checkpoint files.
enum class WeightDType { kFloat32, kFloat16, kBFloat16 };

// Loads a model directory or file, detecting the format:
//   - a directory with config.json and *.safetensors (Hugging Face Llama);
//   - a llama2.c checkpoint file (.bin), or a directory holding exactly one
//     *.bin checkpoint.
// Errors: kNotFound (no such path or no checkpoint in it), kInvalidArgument
// or kCorruption (malformed header, sizes that disagree with the config,
// truncated file, unknown dtype), kIOError.
Result<std::unique_ptr<ModelWeights>> LoadModel(const std::string& path);

// llama2.c checkpoint: version 0 (legacy, 28-byte header, fp32) and
// version 1 (magic "ak42", fp32).
Result<std::unique_ptr<ModelWeights>> LoadLlama2cCheckpoint(const std::string& file);
// Hugging Face config.json + one or more *.safetensors in `dir` (fp32, fp16,
// bf16; tensors may be split across shards).
Result<std::unique_ptr<ModelWeights>> LoadSafetensorsModel(const std::string& dir);
// Writes config.json and model.safetensors into `dir` (created if absent) in
// the Hugging Face layout, tensors stored as `dtype`.
Status WriteSafetensorsModel(const ModelWeights& weights, const std::string& dir,
                             WeightDType dtype);

// Deterministic random weights for tests and benchmarks: the same config and
// seed give the same bits on every machine. Matrices are uniform in
// ±1/sqrt(in) (so activations keep their scale through the layers), norm
// weights are 1, the embedding uniform in ±1.
Result<std::unique_ptr<ModelWeights>> RandomModel(const ModelConfig& config, uint64_t seed,
                                                  bool tied_embeddings = true);

// Named shapes for kvtier-mkmodel, tests and benchmarks: "tiny" (stories260K's
// shape), "small" (~15M params), "bench50m" (~50M params, weights far larger
// than L2), "base" (~110M), "1b" (Llama-3.2-1B's shape). kNotFound otherwise.
Result<ModelConfig> ModelPreset(const std::string& name);
std::vector<std::string> ModelPresetNames();

}  // namespace kvtier
