#include "model/model_weights.h"

#include <xxhash.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <new>

namespace kvtier {
namespace {

static_assert(std::endian::native == std::endian::little,
              "checkpoint formats and digests assume a little-endian host");

// Every tensor starts on a 64-byte boundary (a cache line, and what AVX-512
// loads like best).
constexpr size_t kAlignFloats = 16;
// The most floats one model may hold (64 GiB of fp32).
constexpr uint64_t kMaxFloats = uint64_t{1} << 34;

uint64_t RoundUp(uint64_t n) { return (n + kAlignFloats - 1) / kAlignFloats * kAlignFloats; }

// The sizes of one layer's tensors, in LayerWeights' field order.
struct LayerSizes {
  uint64_t rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3;
};

LayerSizes SizesOf(const ModelConfig& c) {
  const uint64_t d = static_cast<uint64_t>(c.dim);
  const uint64_t q = static_cast<uint64_t>(c.n_heads) * static_cast<uint64_t>(c.head_dim());
  const uint64_t kv = static_cast<uint64_t>(c.n_kv_heads) * static_cast<uint64_t>(c.head_dim());
  const uint64_t h = static_cast<uint64_t>(c.hidden_dim);
  return {d, q * d, kv * d, kv * d, d * q, d, h * d, d * h, h * d};
}

void HashTensor(XXH3_state_t* state, const float* p, uint64_t n) {
  XXH3_64bits_update(state, p, n * sizeof(float));
}

// splitmix64's output function: a bijective mixer of 64-bit counters.
uint64_t Mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Fills p[0..n) with values uniform in [-scale, scale]. Element i of stream
// `stream` depends only on (seed, stream, i), and the arithmetic is exact up to
// one IEEE multiply, so the bits are the same on every machine.
void FillUniform(float* p, uint64_t n, uint64_t seed, uint64_t stream, float scale) {
  const uint64_t key = Mix64(seed ^ Mix64(stream + 0x5bd1e995ULL));
  for (uint64_t i = 0; i < n; ++i) {
    const uint64_t r = Mix64(key + i * 0x9e3779b97f4a7c15ULL);
    // An odd integer in [-(2^24 - 1), 2^24 - 1]: exact in fp32, never zero.
    const int32_t u = static_cast<int32_t>(r >> 40) * 2 - (1 << 24) + 1;
    p[i] = static_cast<float>(u) * (1.0f / 16777216.0f) * scale;
  }
}

float* Mutable(ModelWeights& w, const float* p) {
  return w.storage.data() + (p - w.storage.data());
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

Result<std::unique_ptr<ModelWeights>> ModelWeights::Allocate(const ModelConfig& config, bool tied) {
  KVTIER_RETURN_IF_ERROR(config.Validate());
  if (config.head_dim() % 2 != 0) {
    return Status::InvalidArgument("model '" + config.name + "': head_dim " +
                                   std::to_string(config.head_dim()) +
                                   " is odd (RoPE rotates pairs)");
  }
  if (!(config.rope_theta > 0.0f) || !std::isfinite(config.rope_theta) ||
      !(config.norm_eps > 0.0f) || !std::isfinite(config.norm_eps)) {
    return Status::InvalidArgument("model '" + config.name +
                                   "': rope_theta and norm_eps must be positive");
  }
  // Each dimension is an int (< 2^31), so every product of two fits in 64
  // bits; the sums are checked against kMaxFloats as they grow.
  const LayerSizes ls = SizesOf(config);
  const uint64_t embed = static_cast<uint64_t>(config.vocab_size) * config.dim;
  const uint64_t layer = RoundUp(ls.rms_att) + RoundUp(ls.wq) + RoundUp(ls.wk) + RoundUp(ls.wv) +
                         RoundUp(ls.wo) + RoundUp(ls.rms_ffn) + RoundUp(ls.w1) + RoundUp(ls.w2) +
                         RoundUp(ls.w3);
  if (layer > kMaxFloats || embed > kMaxFloats) {
    return Status::ResourceExhausted("model '" + config.name + "' is too large");
  }
  const uint64_t total = RoundUp(embed) + layer * static_cast<uint64_t>(config.n_layers) +
                         RoundUp(config.dim) + (tied ? 0 : RoundUp(embed));
  if (total > kMaxFloats) {
    return Status::ResourceExhausted("model '" + config.name + "' needs " + std::to_string(total) +
                                     " floats, more than 2^34");
  }

  auto w = std::make_unique<ModelWeights>();
  w->config = config;
  w->tied_embeddings = tied;
  try {
    w->storage.assign(total + kAlignFloats, 0.0f);
  } catch (const std::bad_alloc&) {
    return Status::ResourceExhausted("cannot allocate " + std::to_string(total * 4) +
                                     " bytes for model '" + config.name + "'");
  }
  // malloc aligns to at least 4 bytes; skip to the first 64-byte boundary.
  const uintptr_t addr = reinterpret_cast<uintptr_t>(w->storage.data());
  uint64_t offset = ((64 - addr % 64) % 64) / sizeof(float);
  auto take = [&](uint64_t n) -> const float* {
    const float* p = w->storage.data() + offset;
    offset += RoundUp(n);
    return p;
  };
  w->token_embedding = take(embed);
  w->layers.resize(config.n_layers);
  for (LayerWeights& l : w->layers) {
    l.rms_att = take(ls.rms_att);
    l.wq = take(ls.wq);
    l.wk = take(ls.wk);
    l.wv = take(ls.wv);
    l.wo = take(ls.wo);
    l.rms_ffn = take(ls.rms_ffn);
    l.w1 = take(ls.w1);
    l.w2 = take(ls.w2);
    l.w3 = take(ls.w3);
  }
  w->rms_final = take(config.dim);
  w->wcls = tied ? w->token_embedding : take(embed);
  return w;
}

void ModelWeights::ComputeDigest() {
  XXH3_state_t* state = XXH3_createState();
  XXH3_64bits_reset(state);
  // The config, as fixed-width little-endian fields (the name is a label, not
  // part of the model).
  const int64_t dims[] = {config.dim,        config.hidden_dim, config.n_layers,   config.n_heads,
                          config.n_kv_heads, config.vocab_size, config.max_seq_len};
  XXH3_64bits_update(state, dims, sizeof(dims));
  const uint32_t floats[] = {std::bit_cast<uint32_t>(config.rope_theta),
                             std::bit_cast<uint32_t>(config.norm_eps)};
  XXH3_64bits_update(state, floats, sizeof(floats));
  const uint8_t tied = tied_embeddings ? 1 : 0;
  XXH3_64bits_update(state, &tied, 1);

  const LayerSizes ls = SizesOf(config);
  const uint64_t embed = static_cast<uint64_t>(config.vocab_size) * config.dim;
  HashTensor(state, token_embedding, embed);
  for (const LayerWeights& l : layers) {
    HashTensor(state, l.rms_att, ls.rms_att);
    HashTensor(state, l.wq, ls.wq);
    HashTensor(state, l.wk, ls.wk);
    HashTensor(state, l.wv, ls.wv);
    HashTensor(state, l.wo, ls.wo);
    HashTensor(state, l.rms_ffn, ls.rms_ffn);
    HashTensor(state, l.w1, ls.w1);
    HashTensor(state, l.w2, ls.w2);
    HashTensor(state, l.w3, ls.w3);
  }
  HashTensor(state, rms_final, static_cast<uint64_t>(config.dim));
  if (!tied_embeddings) HashTensor(state, wcls, embed);
  digest = XXH3_64bits_digest(state);
  XXH3_freeState(state);
}

Result<std::unique_ptr<ModelWeights>> LoadModel(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) return Status::NotFound("model path '" + path + "' does not exist");
  const char* expected =
      "expected a directory with config.json and *.safetensors, a llama2.c checkpoint "
      "file (*.bin), or a directory holding exactly one *.bin checkpoint";
  if (fs::is_regular_file(st)) {
    if (EndsWith(path, ".bin")) return LoadLlama2cCheckpoint(path);
    return Status::NotFound("'" + path + "' is not a model: " + expected);
  }
  if (!fs::is_directory(st)) return Status::NotFound("'" + path + "' is not a model: " + expected);
  if (fs::is_regular_file(fs::path(path) / "config.json", ec)) return LoadSafetensorsModel(path);
  std::vector<std::string> bins;
  for (fs::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (EndsWith(name, ".bin") && name.rfind("tok", 0) != 0 && it->is_regular_file(ec)) {
      bins.push_back(it->path().string());
    }
  }
  if (ec) return Status::IOError("cannot list '" + path + "': " + ec.message());
  if (bins.size() == 1) return LoadLlama2cCheckpoint(bins[0]);
  std::sort(bins.begin(), bins.end());
  std::string found;
  for (const std::string& b : bins) found += " " + fs::path(b).filename().string();
  return Status::NotFound(
      "no model in '" + path + "': " + expected +
      (bins.empty() ? std::string(" (found none)") : " (found several *.bin:" + found + ")"));
}

Result<std::unique_ptr<ModelWeights>> RandomModel(const ModelConfig& config, uint64_t seed,
                                                  bool tied_embeddings) {
  KVTIER_ASSIGN_OR_RETURN(std::unique_ptr<ModelWeights> weights,
                          ModelWeights::Allocate(config, tied_embeddings));
  ModelWeights& w = *weights;
  const LayerSizes ls = SizesOf(config);
  const uint64_t embed = static_cast<uint64_t>(config.vocab_size) * config.dim;
  auto inv_sqrt = [](uint64_t in) { return 1.0f / std::sqrt(static_cast<float>(in)); };
  const float s_dim = inv_sqrt(config.dim);
  const float s_q = inv_sqrt(static_cast<uint64_t>(config.n_heads) * config.head_dim());
  const float s_hidden = inv_sqrt(config.hidden_dim);
  auto ones = [&](const float* p, uint64_t n) { std::fill_n(Mutable(w, p), n, 1.0f); };

  // Streams: 0 the embedding, 1 + 16*l + k the k-th matrix of layer l, and
  // 2^32 the untied classifier, so a tensor's values do not depend on the
  // shapes of the others.
  FillUniform(Mutable(w, w.token_embedding), embed, seed, 0, 1.0f);
  for (int l = 0; l < config.n_layers; ++l) {
    const LayerWeights& lw = w.layers[l];
    const uint64_t base = 1 + 16 * static_cast<uint64_t>(l);
    ones(lw.rms_att, ls.rms_att);
    FillUniform(Mutable(w, lw.wq), ls.wq, seed, base + 0, s_dim);
    FillUniform(Mutable(w, lw.wk), ls.wk, seed, base + 1, s_dim);
    FillUniform(Mutable(w, lw.wv), ls.wv, seed, base + 2, s_dim);
    FillUniform(Mutable(w, lw.wo), ls.wo, seed, base + 3, s_q);
    ones(lw.rms_ffn, ls.rms_ffn);
    FillUniform(Mutable(w, lw.w1), ls.w1, seed, base + 4, s_dim);
    FillUniform(Mutable(w, lw.w2), ls.w2, seed, base + 5, s_hidden);
    FillUniform(Mutable(w, lw.w3), ls.w3, seed, base + 6, s_dim);
  }
  ones(w.rms_final, config.dim);
  if (!tied_embeddings) FillUniform(Mutable(w, w.wcls), embed, seed, uint64_t{1} << 32, s_dim);
  w.ComputeDigest();
  return weights;
}

Result<ModelConfig> ModelPreset(const std::string& name) {
  ModelConfig c;
  c.name = name;
  c.rope_theta = 10000.0f;
  c.norm_eps = 1e-5f;
  auto shape = [&c](int dim, int hidden, int layers, int heads, int kv_heads, int vocab, int seq) {
    c.dim = dim;
    c.hidden_dim = hidden;
    c.n_layers = layers;
    c.n_heads = heads;
    c.n_kv_heads = kv_heads;
    c.vocab_size = vocab;
    c.max_seq_len = seq;
  };
  if (name == "tiny") {
    shape(64, 172, 5, 8, 4, 512, 512);  // stories260K
  } else if (name == "tiny-8k") {
    shape(64, 172, 5, 8, 4, 512, 8192);  // the same, with an 8K context (context-caching tests)
  } else if (name == "small") {
    shape(288, 768, 6, 6, 6, 32000, 1024);  // llama2.c's stories15M
  } else if (name == "bench50m") {
    shape(512, 1536, 10, 8, 4, 32000, 4096);
  } else if (name == "base") {
    shape(768, 2048, 12, 12, 12, 32000, 2048);
  } else if (name == "1b") {
    shape(2048, 8192, 16, 32, 8, 128256, 8192);  // Llama-3.2-1B, without rope_scaling
    c.rope_theta = 500000.0f;
  } else {
    std::string names;
    for (const std::string& n : ModelPresetNames()) names += " " + n;
    return Status::NotFound("no model preset '" + name + "' (presets:" + names + ")");
  }
  return c;
}

std::vector<std::string> ModelPresetNames() {
  return {"tiny", "tiny-8k", "small", "bench50m", "base", "1b"};
}

}  // namespace kvtier
