// The invariants a loaded model must satisfy, shared by the checkpoint
// loaders' fuzz targets: a valid config, every tensor inside the storage, and
// an exact round trip through the safetensors writer and loader.
#pragma once

#include <cstring>
#include <filesystem>

#include "model/model_weights.h"
#include "tests/fuzz/fuzz_util.h"

namespace kvtier::fuzz {

inline void CheckInside(const ModelWeights& w, const float* p) {
  FUZZ_CHECK(p != nullptr);
  FUZZ_CHECK(p >= w.storage.data() && p < w.storage.data() + w.storage.size());
}

inline void CheckModel(const ModelWeights& w) {
  FUZZ_CHECK(w.config.Validate().ok());
  FUZZ_CHECK(w.layers.size() == static_cast<size_t>(w.config.n_layers));
  CheckInside(w, w.token_embedding);
  CheckInside(w, w.rms_final);
  CheckInside(w, w.wcls);
  FUZZ_CHECK(w.tied_embeddings == (w.wcls == w.token_embedding));
  for (const LayerWeights& l : w.layers) {
    for (const float* p : {l.rms_att, l.wq, l.wk, l.wv, l.wo, l.rms_ffn, l.w1, l.w2, l.w3}) {
      CheckInside(w, p);
    }
  }
}

// Writes `w` as fp32 safetensors and loads it back: the same shape and the
// same bits.
inline void CheckRoundTrip(const ModelWeights& w) {
  const std::string dir = ScratchDir() + "/roundtrip";
  std::filesystem::remove_all(dir);
  FUZZ_CHECK(WriteSafetensorsModel(w, dir, WeightDType::kFloat32).ok());
  Result<std::unique_ptr<ModelWeights>> again = LoadSafetensorsModel(dir);
  FUZZ_CHECK(again.ok());
  const ModelConfig &a = w.config, &b = (*again)->config;
  FUZZ_CHECK(a.dim == b.dim && a.hidden_dim == b.hidden_dim && a.n_layers == b.n_layers &&
             a.n_heads == b.n_heads && a.n_kv_heads == b.n_kv_heads &&
             a.vocab_size == b.vocab_size && a.max_seq_len == b.max_seq_len);
  FUZZ_CHECK(w.tied_embeddings == (*again)->tied_embeddings);
  FUZZ_CHECK(w.storage.size() == (*again)->storage.size());
  FUZZ_CHECK(std::memcmp(w.storage.data(), (*again)->storage.data(),
                         w.storage.size() * sizeof(float)) == 0);
}

}  // namespace kvtier::fuzz
