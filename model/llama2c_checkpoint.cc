// llama2.c checkpoints (karpathy/llama2.c export.py): the legacy version 0
// and version 1, both fp32. Every tensor is read straight into ModelWeights'
// storage; the file's size is checked against the header before any read.
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include "model/model_weights.h"

namespace kvtier {
namespace {

constexpr uint32_t kVersionedMagic = 0x616b3432;  // "ak42"
constexpr uint64_t kV0HeaderBytes = 7 * 4;
constexpr uint64_t kV1HeaderBytes = 256;

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

float* Mutable(ModelWeights& w, const float* p) {
  return w.storage.data() + (p - w.storage.data());
}

// Reads a file's tensors in order; the first failure sticks.
class TensorReader {
 public:
  TensorReader(std::FILE* f, std::string file) : f_(f), file_(std::move(file)) {}

  void Read(ModelWeights& w, const float* dst, uint64_t n) {
    if (!status_.ok()) return;
    if (std::fread(Mutable(w, dst), sizeof(float), n, f_) != n) {
      status_ = Status::IOError("read failed in '" + file_ + "': " + std::strerror(errno));
    }
  }
  void Skip(uint64_t n_floats) {
    if (!status_.ok()) return;
    if (std::fseek(f_, static_cast<long>(n_floats * sizeof(float)), SEEK_CUR) != 0) {
      status_ = Status::IOError("seek failed in '" + file_ + "': " + std::strerror(errno));
    }
  }
  const Status& status() const { return status_; }

 private:
  std::FILE* f_;
  std::string file_;
  Status status_;
};

// Checks a header's dimensions before any size is computed from them.
Status CheckHeader(const std::string& file, const int32_t p[7]) {
  static const char* const kNames[] = {"dim",        "hidden_dim", "n_layers", "n_heads",
                                       "n_kv_heads", "vocab_size", "seq_len"};
  for (int i = 0; i < 7; ++i) {
    if (p[i] <= 0) {
      return Status::Corruption("'" + file + "': header field " + kNames[i] + " is " +
                                std::to_string(p[i]) + " (not a llama2.c checkpoint?)");
    }
  }
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<ModelWeights>> LoadLlama2cCheckpoint(const std::string& file) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const uint64_t file_bytes = fs::file_size(file, ec);
  if (ec) {
    if (!fs::exists(file)) return Status::NotFound("no checkpoint file '" + file + "'");
    return Status::IOError("cannot stat '" + file + "': " + ec.message());
  }
  File f(std::fopen(file.c_str(), "rb"));
  if (!f) return Status::IOError("cannot open '" + file + "': " + std::strerror(errno));

  unsigned char header[kV1HeaderBytes] = {};
  const size_t got = std::fread(header, 1, sizeof(header), f.get());
  if (got < kV0HeaderBytes) {
    return Status::Corruption("'" + file + "' is truncated: " + std::to_string(file_bytes) +
                              " bytes, shorter than a llama2.c header");
  }
  uint32_t magic = 0;
  std::memcpy(&magic, header, 4);
  int version = 0;
  int32_t p[7];
  bool shared_classifier = true;
  uint64_t header_bytes = kV0HeaderBytes;
  if (magic == kVersionedMagic) {
    if (got < kV1HeaderBytes) {
      return Status::Corruption("'" + file + "' is truncated inside its 256-byte header");
    }
    int32_t v = 0;
    std::memcpy(&v, header + 4, 4);
    if (v != 1) {
      return Status::InvalidArgument("'" + file + "': llama2.c checkpoint version " +
                                     std::to_string(v) + " is not supported (only 0 and 1, fp32)");
    }
    version = 1;
    std::memcpy(p, header + 8, sizeof(p));
    if (header[36] > 1) {
      return Status::Corruption("'" + file + "': shared_classifier byte is " +
                                std::to_string(header[36]));
    }
    shared_classifier = header[36] == 1;
    header_bytes = kV1HeaderBytes;
  } else {
    std::memcpy(p, header, sizeof(p));
    // A negative vocab_size means a separate classifier at the end.
    if (p[5] < 0 && p[5] != INT32_MIN) {
      shared_classifier = false;
      p[5] = -p[5];
    }
  }
  KVTIER_RETURN_IF_ERROR(CheckHeader(file, p));

  ModelConfig config;
  config.name = fs::path(file).stem().string();
  config.dim = p[0];
  config.hidden_dim = p[1];
  config.n_layers = p[2];
  config.n_heads = p[3];
  config.n_kv_heads = p[4];
  config.vocab_size = p[5];
  config.max_seq_len = p[6];
  config.rope_theta = 10000.0f;
  config.norm_eps = 1e-5f;
  if (Status s = config.Validate(); !s.ok()) {
    return Status::Corruption("'" + file + "': " + s.message());
  }
  if (config.head_dim() % 2 != 0) {
    return Status::Corruption("'" + file + "': head size " + std::to_string(config.head_dim()) +
                              " is odd");
  }

  // The expected size, from the header alone. Each term is a product of two
  // int32s, so nothing overflows.
  const uint64_t d = static_cast<uint64_t>(config.dim);
  const uint64_t hd = static_cast<uint64_t>(config.head_dim());
  const uint64_t q = static_cast<uint64_t>(config.n_heads) * hd;
  const uint64_t kv = static_cast<uint64_t>(config.n_kv_heads) * hd;
  const uint64_t h = static_cast<uint64_t>(config.hidden_dim);
  const uint64_t embed = static_cast<uint64_t>(config.vocab_size) * d;
  const uint64_t per_layer = 2 * d + q * d + 2 * kv * d + d * q + 3 * h * d;
  const uint64_t rope_tables = version == 0 ? static_cast<uint64_t>(config.max_seq_len) * hd : 0;
  const uint64_t floats = embed + static_cast<uint64_t>(config.n_layers) * per_layer + d +
                          rope_tables + (shared_classifier ? 0 : embed);
  const uint64_t expected = header_bytes + floats * sizeof(float);
  if (file_bytes != expected) {
    return Status::Corruption("'" + file + "' is " + std::to_string(file_bytes) +
                              " bytes but its version-" + std::to_string(version) +
                              " header describes " + std::to_string(expected) +
                              (file_bytes < expected ? " (truncated)" : " (trailing bytes)"));
  }

  KVTIER_ASSIGN_OR_RETURN(std::unique_ptr<ModelWeights> weights,
                          ModelWeights::Allocate(config, shared_classifier));
  ModelWeights& w = *weights;
  if (std::fseek(f.get(), static_cast<long>(header_bytes), SEEK_SET) != 0) {
    return Status::IOError("seek failed in '" + file + "': " + std::strerror(errno));
  }
  TensorReader in(f.get(), file);
  const int L = config.n_layers;
  if (version == 0) {
    in.Read(w, w.token_embedding, embed);
    for (int l = 0; l < L; ++l) in.Read(w, w.layers[l].rms_att, d);
    for (int l = 0; l < L; ++l) in.Read(w, w.layers[l].wq, q * d);
    for (int l = 0; l < L; ++l) in.Read(w, w.layers[l].wk, kv * d);
    for (int l = 0; l < L; ++l) in.Read(w, w.layers[l].wv, kv * d);
    for (int l = 0; l < L; ++l) in.Read(w, w.layers[l].wo, d * q);
    for (int l = 0; l < L; ++l) in.Read(w, w.layers[l].rms_ffn, d);
    for (int l = 0; l < L; ++l) in.Read(w, w.layers[l].w1, h * d);
    for (int l = 0; l < L; ++l) in.Read(w, w.layers[l].w2, d * h);
    for (int l = 0; l < L; ++l) in.Read(w, w.layers[l].w3, h * d);
    in.Read(w, w.rms_final, d);
    in.Skip(rope_tables);  // freq_cis_real and freq_cis_imag: RoPE is computed, not read
  } else {
    for (int l = 0; l < L; ++l) in.Read(w, w.layers[l].rms_att, d);
    for (int l = 0; l < L; ++l) in.Read(w, w.layers[l].rms_ffn, d);
    in.Read(w, w.rms_final, d);
    in.Read(w, w.token_embedding, embed);
    for (int l = 0; l < L; ++l) in.Read(w, w.layers[l].wq, q * d);
    for (int l = 0; l < L; ++l) in.Read(w, w.layers[l].wk, kv * d);
    for (int l = 0; l < L; ++l) in.Read(w, w.layers[l].wv, kv * d);
    for (int l = 0; l < L; ++l) in.Read(w, w.layers[l].wo, d * q);
    for (int l = 0; l < L; ++l) in.Read(w, w.layers[l].w1, h * d);
    for (int l = 0; l < L; ++l) in.Read(w, w.layers[l].w2, d * h);
    for (int l = 0; l < L; ++l) in.Read(w, w.layers[l].w3, h * d);
  }
  if (!shared_classifier) in.Read(w, w.wcls, embed);
  KVTIER_RETURN_IF_ERROR(in.status());
  w.ComputeDigest();
  return weights;
}

}  // namespace kvtier
