#include "model/model_weights.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "tests/shared_data.h"

namespace kvtier {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// ---- helpers ------------------------------------------------------------------

ModelConfig SmallConfig() {
  ModelConfig c;
  c.name = "unit";
  c.dim = 16;
  c.hidden_dim = 40;
  c.n_layers = 2;
  c.n_heads = 2;  // head_dim 8
  c.n_kv_heads = 1;
  c.vocab_size = 24;
  c.max_seq_len = 32;
  return c;
}

std::unique_ptr<ModelWeights> Random(uint64_t seed, bool tied, ModelConfig c = SmallConfig()) {
  Result<std::unique_ptr<ModelWeights>> r = RandomModel(c, seed, tied);
  EXPECT_TRUE(r.ok()) << r.status();
  return std::move(r).value();
}

float* Mut(ModelWeights& w, const float* p) { return w.storage.data() + (p - w.storage.data()); }

struct Tensor {
  std::string name;
  const float* data;
  size_t n;
  size_t in;  // input features of a matrix (its row length); 0 for a norm
};

// Every tensor of a model, in a fixed order (the tied classifier excluded).
std::vector<Tensor> Tensors(const ModelWeights& w) {
  const ModelConfig& c = w.config;
  const size_t d = c.dim, q = size_t(c.n_heads) * c.head_dim(),
               kv = size_t(c.n_kv_heads) * c.head_dim(), h = c.hidden_dim, v = c.vocab_size;
  std::vector<Tensor> t = {{"embed", w.token_embedding, v * d, d}};
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const LayerWeights& x = w.layers[l];
    const std::string p = "layer" + std::to_string(l) + ".";
    t.push_back({p + "rms_att", x.rms_att, d, 0});
    t.push_back({p + "wq", x.wq, q * d, d});
    t.push_back({p + "wk", x.wk, kv * d, d});
    t.push_back({p + "wv", x.wv, kv * d, d});
    t.push_back({p + "wo", x.wo, d * q, q});
    t.push_back({p + "rms_ffn", x.rms_ffn, d, 0});
    t.push_back({p + "w1", x.w1, h * d, d});
    t.push_back({p + "w2", x.w2, d * h, h});
    t.push_back({p + "w3", x.w3, h * d, d});
  }
  t.push_back({"rms_final", w.rms_final, d, 0});
  if (!w.tied_embeddings) t.push_back({"wcls", w.wcls, v * d, d});
  return t;
}

bool SameBits(float a, float b) { return std::bit_cast<uint32_t>(a) == std::bit_cast<uint32_t>(b); }

void ExpectSameShape(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(a.dim, b.dim);
  EXPECT_EQ(a.hidden_dim, b.hidden_dim);
  EXPECT_EQ(a.n_layers, b.n_layers);
  EXPECT_EQ(a.n_heads, b.n_heads);
  EXPECT_EQ(a.n_kv_heads, b.n_kv_heads);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.max_seq_len, b.max_seq_len);
  EXPECT_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.norm_eps, b.norm_eps);
}

// Bit-exact equality of two models, tensor by tensor.
void ExpectSameWeights(const ModelWeights& a, const ModelWeights& b) {
  ExpectSameShape(a.config, b.config);
  ASSERT_EQ(a.tied_embeddings, b.tied_embeddings);
  if (a.tied_embeddings) {
    EXPECT_EQ(b.wcls, b.token_embedding);
  }
  const std::vector<Tensor> ta = Tensors(a), tb = Tensors(b);
  ASSERT_EQ(ta.size(), tb.size());
  for (size_t i = 0; i < ta.size(); ++i) {
    ASSERT_EQ(ta[i].n, tb[i].n);
    size_t mismatches = 0;
    for (size_t j = 0; j < ta[i].n; ++j) mismatches += !SameBits(ta[i].data[j], tb[i].data[j]);
    EXPECT_EQ(mismatches, 0u) << "tensor " << ta[i].name;
  }
  EXPECT_EQ(a.digest, b.digest);
}

std::string ReadBytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void WriteBytes(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(f.good()) << p;
}

template <typename T>
void Append(std::string& out, const T& v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(v));
}
void AppendFloats(std::string& out, const float* p, size_t n) {
  out.append(reinterpret_cast<const char*>(p), n * sizeof(float));
}

// The tensors of a llama2.c checkpoint body, in the given version's order.
std::string Llama2cBody(const ModelWeights& w, int version) {
  const ModelConfig& c = w.config;
  const size_t d = c.dim, q = size_t(c.n_heads) * c.head_dim(),
               kv = size_t(c.n_kv_heads) * c.head_dim(), h = c.hidden_dim, v = c.vocab_size;
  std::string out;
  auto each = [&](auto field, size_t n) {
    for (const LayerWeights& l : w.layers) AppendFloats(out, l.*field, n);
  };
  if (version == 0) {
    AppendFloats(out, w.token_embedding, v * d);
    each(&LayerWeights::rms_att, d);
    each(&LayerWeights::wq, q * d);
    each(&LayerWeights::wk, kv * d);
    each(&LayerWeights::wv, kv * d);
    each(&LayerWeights::wo, d * q);
    each(&LayerWeights::rms_ffn, d);
    each(&LayerWeights::w1, h * d);
    each(&LayerWeights::w2, d * h);
    each(&LayerWeights::w3, h * d);
    AppendFloats(out, w.rms_final, d);
    // freq_cis_real and freq_cis_imag: values the loader must skip.
    const std::vector<float> junk(size_t(c.max_seq_len) * c.head_dim(), 12345.0f);
    AppendFloats(out, junk.data(), junk.size());
  } else {
    each(&LayerWeights::rms_att, d);
    each(&LayerWeights::rms_ffn, d);
    AppendFloats(out, w.rms_final, d);
    AppendFloats(out, w.token_embedding, v * d);
    each(&LayerWeights::wq, q * d);
    each(&LayerWeights::wk, kv * d);
    each(&LayerWeights::wv, kv * d);
    each(&LayerWeights::wo, d * q);
    each(&LayerWeights::w1, h * d);
    each(&LayerWeights::w2, d * h);
    each(&LayerWeights::w3, h * d);
  }
  if (!w.tied_embeddings) AppendFloats(out, w.wcls, v * d);
  return out;
}

std::string Llama2cV0(const ModelWeights& w) {
  const ModelConfig& c = w.config;
  std::string out;
  for (int32_t v : {c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads,
                    w.tied_embeddings ? c.vocab_size : -c.vocab_size, c.max_seq_len}) {
    Append(out, v);
  }
  return out + Llama2cBody(w, 0);
}

std::string Llama2cV1(const ModelWeights& w, int32_t version = 1) {
  const ModelConfig& c = w.config;
  std::string out;
  Append(out, uint32_t{0x616b3432});
  Append(out, version);
  for (int32_t v :
       {c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, c.max_seq_len}) {
    Append(out, v);
  }
  Append(out, uint8_t{w.tied_embeddings ? uint8_t{1} : uint8_t{0}});
  out.resize(256, '\0');
  return out + Llama2cBody(w, 1);
}

// A safetensors file split into its JSON header and its data section.
struct SafetensorsFile {
  json header;
  std::string data;
};

SafetensorsFile ReadSafetensors(const fs::path& p) {
  const std::string bytes = ReadBytes(p);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  return {json::parse(bytes.substr(8, n)), bytes.substr(8 + n)};
}

void WriteSafetensors(const fs::path& p, const json& header, const std::string& data) {
  const std::string text = header.dump();
  std::string out;
  Append(out, uint64_t{text.size()});
  WriteBytes(p, out + text + data);
}

// The raw bytes of one tensor of a safetensors file.
std::string TensorBytes(const SafetensorsFile& f, const std::string& name) {
  const json& t = f.header.at(name);
  const uint64_t b = t["data_offsets"][0], e = t["data_offsets"][1];
  return f.data.substr(b, e - b);
}

class ModelWeightsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("kvtier_model_weights_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Writes `w` as safetensors into a fresh subdirectory and returns it.
  fs::path WriteModel(const ModelWeights& w, WeightDType dtype, const std::string& sub = "st") {
    fs::path d = dir_ / sub;
    Status s = WriteSafetensorsModel(w, d.string(), dtype);
    EXPECT_TRUE(s.ok()) << s;
    return d;
  }

  fs::path dir_;
};

// ---- llama2.c ------------------------------------------------------------------

TEST_F(ModelWeightsTest, LoadsStories260K) {
  SKIP_WITHOUT_STORIES260K();
  const fs::path file = Stories260KCheckpoint();
  Result<std::unique_ptr<ModelWeights>> r = LoadLlama2cCheckpoint(file.string());
  ASSERT_TRUE(r.ok()) << r.status();
  const ModelWeights& w = **r;
  const ModelConfig& c = w.config;
  EXPECT_EQ(c.name, "stories260K");
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.hidden_dim, 172);
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.max_seq_len, 512);
  EXPECT_EQ(c.rope_theta, 10000.0f);
  EXPECT_EQ(c.norm_eps, 1e-5f);
  EXPECT_TRUE(w.tied_embeddings);
  EXPECT_EQ(w.wcls, w.token_embedding);
  EXPECT_NE(w.digest, 0u);

  // Spot checks against floats read straight from the file: the legacy layout
  // is a 28-byte header, then embedding [512][64], rms_att [5][64], wq
  // [5][64][64], wk [5][32][64], wv, wo, rms_ffn, w1 [5][172][64], w2, w3,
  // rms_final [64].
  const std::string bytes = ReadBytes(file);
  ASSERT_EQ(bytes.size(), 1056540u);
  auto at = [&](size_t float_index) {
    float v;
    std::memcpy(&v, bytes.data() + 28 + 4 * float_index, 4);
    return v;
  };
  const size_t embed = 512 * 64, rms = 5 * 64, wq = 5 * 64 * 64, wk = 5 * 32 * 64,
               ffn = 5 * 172 * 64;
  EXPECT_TRUE(SameBits(w.token_embedding[0], at(0)));
  EXPECT_TRUE(SameBits(w.token_embedding[embed - 1], at(embed - 1)));
  EXPECT_TRUE(SameBits(w.layers[0].rms_att[0], at(embed)));
  EXPECT_TRUE(SameBits(w.layers[1].wq[5], at(embed + rms + 64 * 64 + 5)));
  EXPECT_TRUE(SameBits(w.layers[2].wk[100], at(embed + rms + wq + 2 * 32 * 64 + 100)));
  EXPECT_TRUE(SameBits(w.layers[4].w3[172 * 64 - 1],
                       at(embed + rms + wq + 2 * wk + wq + rms + 3 * ffn - 1)));
  EXPECT_TRUE(SameBits(w.rms_final[63], at(embed + rms + wq + 2 * wk + wq + rms + 3 * ffn + 63)));
  EXPECT_NE(w.token_embedding[0], 0.0f);

  // The directory holds the checkpoint and tok512.bin; LoadModel picks the
  // checkpoint.
  Result<std::unique_ptr<ModelWeights>> by_dir = LoadModel(file.parent_path().string());
  ASSERT_TRUE(by_dir.ok()) << by_dir.status();
  EXPECT_EQ((*by_dir)->digest, w.digest);
}

TEST_F(ModelWeightsTest, Stories260KTruncatedOrExtendedIsCorruption) {
  SKIP_WITHOUT_STORIES260K();
  const fs::path file = Stories260KCheckpoint();
  const std::string bytes = ReadBytes(file);
  WriteBytes(dir_ / "short.bin", bytes.substr(0, bytes.size() - 4));
  WriteBytes(dir_ / "long.bin", bytes + "x");
  Status s = LoadLlama2cCheckpoint((dir_ / "short.bin").string()).status();
  EXPECT_EQ(s.code(), StatusCode::kCorruption) << s;
  EXPECT_NE(s.message().find("truncated"), std::string::npos) << s;
  s = LoadLlama2cCheckpoint((dir_ / "long.bin").string()).status();
  EXPECT_EQ(s.code(), StatusCode::kCorruption) << s;
  EXPECT_NE(s.message().find("trailing"), std::string::npos) << s;
}

TEST_F(ModelWeightsTest, Version0LoadsEqualToTheSourceTiedAndUntied) {
  for (bool tied : {true, false}) {
    std::unique_ptr<ModelWeights> src = Random(7, tied);
    const fs::path file = dir_ / (tied ? "tied.bin" : "untied.bin");
    WriteBytes(file, Llama2cV0(*src));
    Result<std::unique_ptr<ModelWeights>> r = LoadLlama2cCheckpoint(file.string());
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ((*r)->config.name, tied ? "tied" : "untied");
    ExpectSameWeights(*src, **r);
  }
}

TEST_F(ModelWeightsTest, Version1LoadsEqualToTheSourceTiedAndUntied) {
  for (bool tied : {true, false}) {
    std::unique_ptr<ModelWeights> src = Random(8, tied);
    const fs::path file = dir_ / "v1.bin";
    WriteBytes(file, Llama2cV1(*src));
    Result<std::unique_ptr<ModelWeights>> r = LoadLlama2cCheckpoint(file.string());
    ASSERT_TRUE(r.ok()) << r.status();
    ExpectSameWeights(*src, **r);
  }
}

TEST_F(ModelWeightsTest, Llama2cSizeMismatchesAreCorruption) {
  std::unique_ptr<ModelWeights> src = Random(9, true);
  for (const std::string& good : {Llama2cV0(*src), Llama2cV1(*src)}) {
    WriteBytes(dir_ / "m.bin", good.substr(0, good.size() - 1));
    Status s = LoadLlama2cCheckpoint((dir_ / "m.bin").string()).status();
    EXPECT_EQ(s.code(), StatusCode::kCorruption) << s;
    EXPECT_NE(s.message().find("truncated"), std::string::npos) << s;
    WriteBytes(dir_ / "m.bin", good + '\0');
    s = LoadLlama2cCheckpoint((dir_ / "m.bin").string()).status();
    EXPECT_EQ(s.code(), StatusCode::kCorruption) << s;
    EXPECT_NE(s.message().find("trailing"), std::string::npos) << s;
  }
  WriteBytes(dir_ / "m.bin", std::string(10, '\1'));
  EXPECT_EQ(LoadLlama2cCheckpoint((dir_ / "m.bin").string()).status().code(),
            StatusCode::kCorruption);
}

TEST_F(ModelWeightsTest, Llama2cBadHeadersAreRefused) {
  std::unique_ptr<ModelWeights> src = Random(10, true);
  const std::string good = Llama2cV0(*src);
  auto with_field = [&](int index, int32_t value) {
    std::string bytes = good;
    std::memcpy(bytes.data() + 4 * index, &value, 4);
    return bytes;
  };
  for (const auto& [index, value] :
       std::vector<std::pair<int, int32_t>>{{0, -64},
                                            {1, 0},
                                            {2, -1},
                                            {3, 3},
                                            {4, 3},
                                            {6, 0},
                                            {5, std::numeric_limits<int32_t>::min()}}) {
    WriteBytes(dir_ / "m.bin", with_field(index, value));
    Status s = LoadLlama2cCheckpoint((dir_ / "m.bin").string()).status();
    EXPECT_TRUE(s.code() == StatusCode::kCorruption || s.code() == StatusCode::kInvalidArgument)
        << "field " << index << " = " << value << ": " << s;
  }
  // Version 2 (int8 quantized) and beyond are not supported.
  WriteBytes(dir_ / "m.bin", Llama2cV1(*src, 2));
  Status s = LoadLlama2cCheckpoint((dir_ / "m.bin").string()).status();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("version 2"), std::string::npos) << s;
  EXPECT_TRUE(LoadLlama2cCheckpoint((dir_ / "absent.bin").string()).status().IsNotFound());
}

// ---- safetensors -----------------------------------------------------------------

TEST_F(ModelWeightsTest, SafetensorsFloat32RoundTripIsExact) {
  for (bool tied : {true, false}) {
    std::unique_ptr<ModelWeights> src = Random(11, tied);
    const fs::path d = WriteModel(*src, WeightDType::kFloat32, tied ? "tied" : "untied");
    ASSERT_TRUE(fs::exists(d / "config.json"));
    ASSERT_TRUE(fs::exists(d / "model.safetensors"));
    EXPECT_FALSE(fs::exists(d / "model.safetensors.tmp"));
    Result<std::unique_ptr<ModelWeights>> r = LoadSafetensorsModel(d.string());
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ((*r)->config.name, "unit");
    ExpectSameWeights(*src, **r);

    const json config = json::parse(ReadBytes(d / "config.json"));
    EXPECT_EQ(config["model_type"], "llama");
    EXPECT_EQ(config["tie_word_embeddings"], tied);
    EXPECT_EQ(config["torch_dtype"], "float32");
    EXPECT_EQ(config["rms_norm_eps"], 1e-5);
    const SafetensorsFile f = ReadSafetensors(d / "model.safetensors");
    EXPECT_EQ(f.header["__metadata__"]["format"], "pt");
    EXPECT_EQ(f.header.contains("lm_head.weight"), !tied);
    EXPECT_EQ(f.header["model.layers.1.mlp.down_proj.weight"]["shape"], json({16, 40}));
  }
}

TEST_F(ModelWeightsTest, SafetensorsHalfPrecisionRoundsToNearestEven) {
  std::unique_ptr<ModelWeights> src = Random(12, false);
  // Known values at the start of the embedding, with their fp16 and bf16
  // encodings worked out by hand.
  struct Case {
    float in;
    uint16_t f16, bf16;
  };
  const float kInf = std::numeric_limits<float>::infinity();
  const std::vector<Case> cases = {
      {1.0f, 0x3c00, 0x3f80},
      {-2.0f, 0xc000, 0xc000},
      {3.14159f, 0x4248, 0x4049},               // -> 3.140625 in both
      {65504.0f, 0x7bff, 0x4780},               // fp16 max; bf16 rounds up to 65536
      {65519.0f, 0x7bff, 0x4780},               // below fp16's halfway point
      {65520.0f, 0x7c00, 0x4780},               // halfway: rounds to even, i.e. inf in fp16
      {1e-7f, 0x0002, 0x33d7},                  // fp16 subnormal: 2 * 2^-24
      {1e-5f, 0x00a8, 0x3728},                  // fp16 subnormal: 168 * 2^-24
      {std::ldexp(1.0f, -25), 0x0000, 0x3300},  // halfway to the smallest subnormal
      {std::ldexp(3.0f, -26), 0x0001, 0x3340},  // above halfway
      {std::ldexp(1.0f, -14), 0x0400, 0x3880},  // smallest fp16 normal
      {2049.0f, 0x6800, 0x4500},                // fp16 tie -> even (2048)
      {2051.0f, 0x6802, 0x4500},                // fp16 tie -> even (2052)
      {1.00390625f, 0x3c04, 0x3f80},            // bf16 tie -> even (1.0)
      {1.01171875f, 0x3c0c, 0x3f82},            // bf16 tie -> even (1.015625)
      {std::numeric_limits<float>::max(), 0x7c00, 0x7f80},
      {-kInf, 0xfc00, 0xff80},
      {-0.0f, 0x8000, 0x8000},
  };
  float* embed = Mut(*src, src->token_embedding);
  for (size_t i = 0; i < cases.size(); ++i) embed[i] = cases[i].in;
  embed[cases.size()] = std::numeric_limits<float>::quiet_NaN();
  src->ComputeDigest();

  for (WeightDType dtype : {WeightDType::kFloat16, WeightDType::kBFloat16}) {
    const bool half = dtype == WeightDType::kFloat16;
    SCOPED_TRACE(half ? "f16" : "bf16");
    const fs::path d = WriteModel(*src, dtype, half ? "f16" : "bf16");
    const SafetensorsFile f = ReadSafetensors(d / "model.safetensors");
    EXPECT_EQ(f.header["model.embed_tokens.weight"]["dtype"], half ? "F16" : "BF16");
    const std::string raw = TensorBytes(f, "model.embed_tokens.weight");
    for (size_t i = 0; i < cases.size(); ++i) {
      uint16_t bits;
      std::memcpy(&bits, raw.data() + 2 * i, 2);
      EXPECT_EQ(bits, half ? cases[i].f16 : cases[i].bf16) << "input " << cases[i].in;
    }

    Result<std::unique_ptr<ModelWeights>> r = LoadSafetensorsModel(d.string());
    ASSERT_TRUE(r.ok()) << r.status();
    const ModelWeights& w = **r;
    ExpectSameShape(src->config, w.config);
    EXPECT_NE(w.digest, src->digest);
    // Widening is exact: the known values come back as their rounded selves.
    EXPECT_EQ(w.token_embedding[0], 1.0f);
    EXPECT_EQ(w.token_embedding[2], 3.140625f);
    EXPECT_EQ(w.token_embedding[3], half ? 65504.0f : 65536.0f);
    EXPECT_EQ(w.token_embedding[5], half ? kInf : 65536.0f);
    EXPECT_EQ(w.token_embedding[6],
              half ? std::ldexp(2.0f, -24) : std::bit_cast<float>(0x33d70000u));
    EXPECT_EQ(w.token_embedding[7],
              half ? std::ldexp(168.0f, -24) : std::bit_cast<float>(0x37280000u));
    EXPECT_EQ(w.token_embedding[15], kInf);
    EXPECT_TRUE(std::signbit(w.token_embedding[17]));
    EXPECT_TRUE(std::isnan(w.token_embedding[cases.size()]));

    // Every other value is within half a unit in the last place of the
    // source, and is representable (so a second round trip is exact).
    const std::vector<Tensor> ts = Tensors(*src), tw = Tensors(w);
    for (size_t t = 0; t < ts.size(); ++t) {
      const size_t first = t == 0 ? cases.size() + 1 : 0;
      for (size_t j = first; j < ts[t].n; ++j) {
        const float x = ts[t].data[j], y = tw[t].data[j];
        const float tol = std::max(std::fabs(x) * (half ? 0x1p-11f : 0x1p-8f), 0x1p-25f);
        ASSERT_LE(std::fabs(x - y), tol) << ts[t].name << "[" << j << "]";
        if (!half) {
          ASSERT_EQ(std::bit_cast<uint32_t>(y) & 0xffff, 0u);
        }
      }
    }
    const fs::path again = WriteModel(w, dtype, half ? "f16b" : "bf16b");
    Result<std::unique_ptr<ModelWeights>> r2 = LoadSafetensorsModel(again.string());
    ASSERT_TRUE(r2.ok()) << r2.status();
    ExpectSameWeights(w, **r2);
    EXPECT_EQ(ReadBytes(d / "model.safetensors"), ReadBytes(again / "model.safetensors"));
  }
}

TEST_F(ModelWeightsTest, SafetensorsStoresQueryAndKeyRowsHalfSplit) {
  ModelConfig c = SmallConfig();  // head_dim 8: 2 query heads, 1 kv head
  std::unique_ptr<ModelWeights> src = Random(13, true, c);
  // Row r of every projection holds the value r.
  const LayerWeights& l = src->layers[0];
  for (const float* m : {l.wq, l.wk, l.wv}) {
    const int rows = m == l.wq ? 16 : 8;
    for (int r = 0; r < rows; ++r) std::fill_n(Mut(*src, m) + r * 16, 16, float(r));
  }
  src->ComputeDigest();
  const fs::path d = WriteModel(*src, WeightDType::kFloat32);
  const SafetensorsFile f = ReadSafetensors(d / "model.safetensors");
  auto file_rows = [&](const std::string& name, int rows) {
    const std::string raw = TensorBytes(f, name);
    EXPECT_EQ(raw.size(), size_t(rows) * 16 * 4);
    std::vector<float> first;
    for (int r = 0; r < rows; ++r) {
      float v;
      std::memcpy(&v, raw.data() + size_t(r) * 16 * 4, 4);
      first.push_back(v);
    }
    return first;
  };
  // Hugging Face row j < 4 of a head is pair j's first element (our row 2j),
  // row 4 + j its second (our row 2j + 1).
  EXPECT_EQ(file_rows("model.layers.0.self_attn.q_proj.weight", 16),
            (std::vector<float>{0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15}));
  EXPECT_EQ(file_rows("model.layers.0.self_attn.k_proj.weight", 8),
            (std::vector<float>{0, 2, 4, 6, 1, 3, 5, 7}));
  EXPECT_EQ(file_rows("model.layers.0.self_attn.v_proj.weight", 8),
            (std::vector<float>{0, 1, 2, 3, 4, 5, 6, 7}));
  Result<std::unique_ptr<ModelWeights>> r = LoadSafetensorsModel(d.string());
  ASSERT_TRUE(r.ok()) << r.status();
  ExpectSameWeights(*src, **r);
}

TEST_F(ModelWeightsTest, SafetensorsTensorsMayBeSplitAcrossShards) {
  std::unique_ptr<ModelWeights> src = Random(14, false);
  const fs::path d = WriteModel(*src, WeightDType::kBFloat16);
  Result<std::unique_ptr<ModelWeights>> whole = LoadSafetensorsModel(d.string());
  ASSERT_TRUE(whole.ok()) << whole.status();

  // Deal the tensors alternately into two shards, each with its own offsets.
  const SafetensorsFile f = ReadSafetensors(d / "model.safetensors");
  json headers[2] = {json::object(), json::object()};
  std::string data[2];
  int i = 0;
  for (const auto& [name, t] : f.header.items()) {
    if (name == "__metadata__") continue;
    const std::string bytes = TensorBytes(f, name);
    json entry = t;
    entry["data_offsets"] = {data[i % 2].size(), data[i % 2].size() + bytes.size()};
    headers[i % 2][name] = entry;
    data[i % 2] += bytes;
    ++i;
  }
  fs::remove(d / "model.safetensors");
  WriteSafetensors(d / "model-00001-of-00002.safetensors", headers[0], data[0]);
  WriteSafetensors(d / "model-00002-of-00002.safetensors", headers[1], data[1]);
  Result<std::unique_ptr<ModelWeights>> r = LoadSafetensorsModel(d.string());
  ASSERT_TRUE(r.ok()) << r.status();
  ExpectSameWeights(**whole, **r);

  // The same tensor in two shards is ambiguous.
  headers[1]["model.norm.weight"] = f.header["model.norm.weight"];
  data[1] += TensorBytes(f, "model.norm.weight");
  headers[1]["model.norm.weight"]["data_offsets"] = {data[1].size() - 32, data[1].size()};
  WriteSafetensors(d / "model-00002-of-00002.safetensors", headers[1], data[1]);
  Status s = LoadSafetensorsModel(d.string()).status();
  EXPECT_EQ(s.code(), StatusCode::kCorruption) << s;
  EXPECT_NE(s.message().find("model.norm.weight"), std::string::npos) << s;
}

TEST_F(ModelWeightsTest, CorruptSafetensorsAreRefusedWithClearErrors) {
  std::unique_ptr<ModelWeights> src = Random(15, true);
  const fs::path d = WriteModel(*src, WeightDType::kFloat32);
  const fs::path file = d / "model.safetensors";
  const std::string good = ReadBytes(file);
  const SafetensorsFile f = ReadSafetensors(file);

  auto expect = [&](StatusCode code, const std::string& needle, const std::string& what) {
    Status s = LoadSafetensorsModel(d.string()).status();
    EXPECT_EQ(s.code(), code) << what << ": " << s;
    EXPECT_NE(s.message().find(needle), std::string::npos) << what << ": " << s;
    WriteBytes(file, good);
  };
  auto with_header = [&](const json& h) { WriteSafetensors(file, h, f.data); };

  std::string bytes = good;
  const uint64_t huge = uint64_t{1} << 40;
  std::memcpy(bytes.data(), &huge, 8);
  WriteBytes(file, bytes);
  expect(StatusCode::kCorruption, "100 MiB", "huge header length");

  const uint64_t past_end = good.size();
  std::memcpy(bytes.data(), &past_end, 8);
  WriteBytes(file, bytes);
  expect(StatusCode::kCorruption, "truncated", "header past the end");

  WriteBytes(file, good.substr(0, 5));
  expect(StatusCode::kCorruption, "too short", "five bytes");

  const std::string garbage = "{\"model.norm.weight\": [1, 2";
  std::string g;
  Append(g, uint64_t{garbage.size()});
  WriteBytes(file, g + garbage);
  expect(StatusCode::kCorruption, "JSON", "garbage header");

  json h = f.header;
  h["model.norm.weight"]["data_offsets"] = {f.data.size() - 8, f.data.size() + 56};
  with_header(h);
  expect(StatusCode::kCorruption, "data_offsets", "offsets out of range");

  h = f.header;
  h["model.norm.weight"]["data_offsets"] = {-64, 0};
  with_header(h);
  expect(StatusCode::kCorruption, "data_offsets", "negative offset");

  h = f.header;
  h["model.layers.0.mlp.up_proj.weight"]["shape"] = {16, 40};
  with_header(h);
  expect(StatusCode::kCorruption, "model.layers.0.mlp.up_proj.weight", "wrong shape");

  h = f.header;
  h.erase("model.norm.weight");
  with_header(h);
  expect(StatusCode::kCorruption, "model.norm.weight", "missing tensor");

  h = f.header;
  h["model.layers.1.self_attn.o_proj.weight"]["dtype"] = "F33";
  with_header(h);
  expect(StatusCode::kInvalidArgument, "F33", "unknown dtype");

  h = f.header;
  h["model.layers.1.self_attn.o_proj.weight"]["dtype"] = "F16";
  with_header(h);
  expect(StatusCode::kCorruption, "o_proj", "dtype disagrees with the byte range");

  h = f.header;
  h["model.norm.weight"].erase("shape");
  with_header(h);
  expect(StatusCode::kCorruption, "model.norm.weight", "no shape");

  fs::remove(file);
  expect(StatusCode::kNotFound, "safetensors", "no shard");
}

TEST_F(ModelWeightsTest, ConfigJsonIsValidated) {
  std::unique_ptr<ModelWeights> src = Random(16, true);
  const fs::path d = WriteModel(*src, WeightDType::kFloat32);
  const fs::path file = d / "config.json";
  const json good = json::parse(ReadBytes(file));

  auto expect = [&](const json& config, StatusCode code, const std::string& needle) {
    WriteBytes(file, config.dump());
    Status s = LoadSafetensorsModel(d.string()).status();
    EXPECT_EQ(s.code(), code) << config.dump() << ": " << s;
    EXPECT_NE(s.message().find(needle), std::string::npos) << s;
  };
  json c = good;
  c["model_type"] = "mistral";
  expect(c, StatusCode::kInvalidArgument, "mistral");
  c = good;
  c["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 32.0}};
  expect(c, StatusCode::kInvalidArgument, "not supported");
  c = good;
  c.erase("hidden_size");
  expect(c, StatusCode::kCorruption, "hidden_size");
  c = good;
  c["num_hidden_layers"] = -2;
  expect(c, StatusCode::kCorruption, "num_hidden_layers");
  c = good;
  c["hidden_size"] = 32;  // disagrees with the tensors
  expect(c, StatusCode::kCorruption, "shape");
  WriteBytes(file, "{\"hidden_size\": ");
  Status s = LoadSafetensorsModel(d.string()).status();
  EXPECT_EQ(s.code(), StatusCode::kCorruption) << s;

  // Defaults: no model_type, no num_key_value_heads when it equals the
  // heads, no rope_theta, and the name from the directory.
  ModelConfig mha = SmallConfig();
  mha.n_kv_heads = mha.n_heads;
  std::unique_ptr<ModelWeights> m = Random(17, true, mha);
  const fs::path d2 = WriteModel(*m, WeightDType::kFloat32, "mha-dir");
  c = json::parse(ReadBytes(d2 / "config.json"));
  for (const char* key : {"model_type", "num_key_value_heads", "rope_theta", "_name_or_path"}) {
    c.erase(key);
  }
  WriteBytes(d2 / "config.json", c.dump());
  Result<std::unique_ptr<ModelWeights>> r = LoadSafetensorsModel(d2.string());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->config.name, "mha-dir");
  ExpectSameWeights(*m, **r);
}

// ---- random weights, allocation, presets ----------------------------------------

TEST_F(ModelWeightsTest, RandomModelIsDeterministicAndInRange) {
  std::unique_ptr<ModelWeights> a = Random(42, false), b = Random(42, false);
  ExpectSameWeights(*a, *b);
  std::unique_ptr<ModelWeights> c = Random(43, false);
  EXPECT_NE(a->digest, c->digest);
  EXPECT_NE(a->token_embedding[0], c->token_embedding[0]);
  EXPECT_NE(Random(42, true)->digest, a->digest);

  for (const Tensor& t : Tensors(*a)) {
    SCOPED_TRACE(t.name);
    if (t.in == 0) {
      for (size_t j = 0; j < t.n; ++j) ASSERT_EQ(t.data[j], 1.0f);
      continue;
    }
    const bool embedding = t.name == "embed";
    const float bound = embedding ? 1.0f : 1.0f / std::sqrt(float(t.in));
    double sum = 0, max_abs = 0;
    for (size_t j = 0; j < t.n; ++j) {
      ASSERT_LE(std::fabs(t.data[j]), bound);
      sum += t.data[j];
      max_abs = std::max<double>(max_abs, std::fabs(t.data[j]));
    }
    // Uniform over the whole range: the mean near 0, the extremes near the bound.
    EXPECT_LT(std::fabs(sum / t.n), 0.25 * bound);
    EXPECT_GT(max_abs, 0.8 * bound);
  }
}

TEST_F(ModelWeightsTest, DigestCoversEveryTensorButNotTheName) {
  std::unique_ptr<ModelWeights> w = Random(1, false);
  const uint64_t original = w->digest;
  w->config.name = "renamed";
  w->ComputeDigest();
  EXPECT_EQ(w->digest, original);
  for (const Tensor& t : Tensors(*w)) {
    float* p = Mut(*w, t.data) + t.n - 1;
    const float saved = *p;
    *p = std::nextafter(saved, 2.0f);
    w->ComputeDigest();
    EXPECT_NE(w->digest, original) << t.name;
    *p = saved;
  }
  w->config.max_seq_len *= 2;
  w->ComputeDigest();
  EXPECT_NE(w->digest, original);
}

TEST_F(ModelWeightsTest, AllocateValidatesAndAlignsTensors) {
  Result<std::unique_ptr<ModelWeights>> r = ModelWeights::Allocate(SmallConfig(), true);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->wcls, (*r)->token_embedding);
  for (const Tensor& t : Tensors(**r)) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % 64, 0u) << t.name;
    for (size_t j = 0; j < t.n; ++j) ASSERT_EQ(t.data[j], 0.0f);
  }
  r = ModelWeights::Allocate(SmallConfig(), false);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_NE((*r)->wcls, (*r)->token_embedding);

  ModelConfig c = SmallConfig();
  c.n_kv_heads = 3;
  EXPECT_EQ(ModelWeights::Allocate(c, true).status().code(), StatusCode::kInvalidArgument);
  c = SmallConfig();
  c.n_heads = 16;  // head_dim 1: RoPE needs pairs
  c.n_kv_heads = 16;
  EXPECT_EQ(ModelWeights::Allocate(c, true).status().code(), StatusCode::kInvalidArgument);
  c = SmallConfig();
  c.dim = 1 << 16;
  c.vocab_size = 1 << 20;  // 2^36 floats of embedding
  EXPECT_EQ(ModelWeights::Allocate(c, true).status().code(), StatusCode::kResourceExhausted);
}

TEST_F(ModelWeightsTest, PresetsAreValid) {
  ASSERT_EQ(ModelPresetNames(),
            (std::vector<std::string>{"tiny", "tiny-8k", "small", "bench50m", "base", "1b"}));
  for (const std::string& name : ModelPresetNames()) {
    Result<ModelConfig> c = ModelPreset(name);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->name, name);
    EXPECT_TRUE(c->Validate().ok()) << name;
    EXPECT_EQ(c->head_dim() % 2, 0) << name;
  }
  const ModelConfig tiny = *ModelPreset("tiny");
  EXPECT_EQ(tiny.dim, 64);
  EXPECT_EQ(tiny.hidden_dim, 172);
  EXPECT_EQ(tiny.n_kv_heads, 4);
  EXPECT_EQ(tiny.vocab_size, 512);
  const uint64_t bench = ModelPreset("bench50m")->ActiveParams();
  EXPECT_GE(bench, 40'000'000u);
  EXPECT_LE(bench, 60'000'000u);
  const uint64_t small = ModelPreset("small")->ActiveParams();
  EXPECT_GE(small, 12'000'000u);
  EXPECT_LE(small, 18'000'000u);
  EXPECT_EQ(ModelPreset("1b")->rope_theta, 500000.0f);
  EXPECT_TRUE(ModelPreset("7b").status().IsNotFound());

  Result<std::unique_ptr<ModelWeights>> t = RandomModel(tiny, 3);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_TRUE((*t)->tied_embeddings);
}

// ---- LoadModel ---------------------------------------------------------------------

TEST_F(ModelWeightsTest, LoadModelDispatchesOnWhatIsThere) {
  std::unique_ptr<ModelWeights> src = Random(18, true);
  EXPECT_TRUE(LoadModel((dir_ / "absent").string()).status().IsNotFound());

  // A safetensors directory.
  const fs::path st = WriteModel(*src, WeightDType::kFloat32, "hf");
  Result<std::unique_ptr<ModelWeights>> r = LoadModel(st.string());
  ASSERT_TRUE(r.ok()) << r.status();
  ExpectSameWeights(*src, **r);

  // A llama2.c file, and a directory holding it beside a tokenizer.
  const fs::path l2c = dir_ / "l2c";
  fs::create_directories(l2c);
  WriteBytes(l2c / "model.bin", Llama2cV0(*src));
  WriteBytes(l2c / "tokenizer.bin", "not a model");
  r = LoadModel((l2c / "model.bin").string());
  ASSERT_TRUE(r.ok()) << r.status();
  ExpectSameWeights(*src, **r);
  r = LoadModel(l2c.string());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->config.name, "model");
  ExpectSameWeights(*src, **r);

  // Two checkpoints are ambiguous; none is nothing; an unknown file is not a model.
  WriteBytes(l2c / "other.bin", Llama2cV0(*src));
  Status s = LoadModel(l2c.string()).status();
  EXPECT_TRUE(s.IsNotFound()) << s;
  EXPECT_NE(s.message().find("other.bin"), std::string::npos) << s;
  fs::create_directories(dir_ / "empty");
  s = LoadModel((dir_ / "empty").string()).status();
  EXPECT_TRUE(s.IsNotFound()) << s;
  EXPECT_NE(s.message().find("config.json"), std::string::npos) << s;
  WriteBytes(dir_ / "notes.txt", "hello");
  EXPECT_TRUE(LoadModel((dir_ / "notes.txt").string()).status().IsNotFound());
}

}  // namespace
}  // namespace kvtier
