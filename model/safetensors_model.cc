// Hugging Face Llama checkpoints: config.json plus one or more *.safetensors
// shards. A shard is an 8-byte little-endian header length N, N bytes of JSON
// naming each tensor's dtype, shape and byte range, then the tensor data.
//
// Loading reads each tensor row by row straight into ModelWeights' storage,
// widening fp16/bf16 to fp32 and undoing the Hugging Face RoPE permutation of
// q_proj/k_proj (half-split pairs -> adjacent pairs); writing does the reverse.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <utility>

#include "model/model_weights.h"

namespace kvtier {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;
// Rows are converted in batches of about this many bytes.
constexpr uint64_t kChunkBytes = uint64_t{4} << 20;

// ---- fp16 / bf16 <-> fp32 -------------------------------------------------

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  const uint32_t mant = h & 0x3ff;
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24, exact in fp32.
    const float v = static_cast<float>(mant) * (1.0f / 16777216.0f);
    return sign ? -v : v;
  }
  if (exp == 31) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));  // inf, NaN
  return std::bit_cast<float>(sign | ((exp + 127 - 15) << 23) | (mant << 13));
}

// Round to nearest, ties to even; too large -> inf; NaN stays NaN.
uint16_t FloatToHalf(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000);
  const uint32_t a = x & 0x7fffffffu;
  if (a >= 0x7f800000u) {  // inf or NaN (kept quiet, payload's top bits kept)
    return sign | (a == 0x7f800000u ? 0x7c00 : static_cast<uint16_t>(0x7e00 | ((a >> 13) & 0x3ff)));
  }
  if (a >= 0x477ff000u) return sign | 0x7c00;  // >= 65520 rounds past 65504
  if (a >= 0x38800000u) {                      // >= 2^-14: normal
    const uint32_t rounded = a + 0xfff + ((a >> 13) & 1);
    return sign | static_cast<uint16_t>((rounded - (uint32_t{112} << 23)) >> 13);
  }
  if (a <= 0x33000000u) return sign;  // <= 2^-25 rounds to zero (ties to even)
  // Subnormal: the value in units of 2^-24, rounded.
  const uint32_t mant = (a & 0x7fffffu) | 0x800000u;
  const int shift = 126 - static_cast<int>(a >> 23);  // 14..24
  uint32_t r = mant >> shift;
  const uint32_t rem = mant & ((uint32_t{1} << shift) - 1);
  const uint32_t half = uint32_t{1} << (shift - 1);
  if (rem > half || (rem == half && (r & 1))) ++r;
  return sign | static_cast<uint16_t>(r);
}

float BFloat16ToFloat(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

uint16_t FloatToBFloat16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40);  // NaN
  return static_cast<uint16_t>((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

const char* DTypeName(WeightDType t) {
  switch (t) {
    case WeightDType::kFloat32:
      return "F32";
    case WeightDType::kFloat16:
      return "F16";
    case WeightDType::kBFloat16:
      return "BF16";
  }
  return "?";
}

const char* TorchDTypeName(WeightDType t) {
  switch (t) {
    case WeightDType::kFloat32:
      return "float32";
    case WeightDType::kFloat16:
      return "float16";
    case WeightDType::kBFloat16:
      return "bfloat16";
  }
  return "?";
}

uint64_t ElemBytes(WeightDType t) { return t == WeightDType::kFloat32 ? 4 : 2; }

// Widens n elements of `t` at src into dst.
void Widen(WeightDType t, const unsigned char* src, float* dst, uint64_t n) {
  if (t == WeightDType::kFloat32) {
    std::memcpy(dst, src, n * 4);
    return;
  }
  for (uint64_t i = 0; i < n; ++i) {
    uint16_t v;
    std::memcpy(&v, src + 2 * i, 2);
    dst[i] = t == WeightDType::kFloat16 ? HalfToFloat(v) : BFloat16ToFloat(v);
  }
}

void Narrow(WeightDType t, const float* src, unsigned char* dst, uint64_t n) {
  if (t == WeightDType::kFloat32) {
    std::memcpy(dst, src, n * 4);
    return;
  }
  for (uint64_t i = 0; i < n; ++i) {
    const uint16_t v = t == WeightDType::kFloat16 ? FloatToHalf(src[i]) : FloatToBFloat16(src[i]);
    std::memcpy(dst + 2 * i, &v, 2);
  }
}

// ---- tensors the model has, by Hugging Face name ----------------------------

// One tensor of the model: its name in the file, where it lives in memory,
// and its shape ([cols] for a vector, [rows][cols] for a matrix).
struct TensorSpec {
  std::string name;
  const float* data;
  std::vector<uint64_t> shape;
  // head_dim for q_proj/k_proj, whose rows are RoPE-permuted in the file; 0
  // for every other tensor.
  uint64_t rope_head_dim = 0;

  uint64_t rows() const { return shape.size() == 2 ? shape[0] : 1; }
  uint64_t cols() const { return shape.back(); }
};

std::vector<TensorSpec> Specs(const ModelWeights& w) {
  const ModelConfig& c = w.config;
  const uint64_t d = c.dim, hd = c.head_dim(), h = c.hidden_dim;
  const uint64_t q = c.n_heads * hd, kv = c.n_kv_heads * hd;
  std::vector<TensorSpec> specs;
  specs.push_back({"model.embed_tokens.weight", w.token_embedding, {uint64_t(c.vocab_size), d}});
  for (int i = 0; i < c.n_layers; ++i) {
    const LayerWeights& l = w.layers[i];
    const std::string p = "model.layers." + std::to_string(i) + ".";
    specs.push_back({p + "input_layernorm.weight", l.rms_att, {d}});
    specs.push_back({p + "self_attn.q_proj.weight", l.wq, {q, d}, hd});
    specs.push_back({p + "self_attn.k_proj.weight", l.wk, {kv, d}, hd});
    specs.push_back({p + "self_attn.v_proj.weight", l.wv, {kv, d}});
    specs.push_back({p + "self_attn.o_proj.weight", l.wo, {d, q}});
    specs.push_back({p + "post_attention_layernorm.weight", l.rms_ffn, {d}});
    specs.push_back({p + "mlp.gate_proj.weight", l.w1, {h, d}});
    specs.push_back({p + "mlp.up_proj.weight", l.w3, {h, d}});
    specs.push_back({p + "mlp.down_proj.weight", l.w2, {d, h}});
  }
  specs.push_back({"model.norm.weight", w.rms_final, {d}});
  if (!w.tied_embeddings) specs.push_back({"lm_head.weight", w.wcls, {uint64_t(c.vocab_size), d}});
  return specs;
}

// The row of our (adjacent-pair) layout that holds Hugging Face row `hf_row`
// of a RoPE-permuted projection: within each head, HF row j < hd/2 is the
// first element of pair j (our row 2j), HF row j + hd/2 its second (2j + 1).
uint64_t OurRow(uint64_t hf_row, uint64_t head_dim) {
  if (head_dim == 0) return hf_row;
  const uint64_t head = hf_row / head_dim, j = hf_row % head_dim, half = head_dim / 2;
  return head * head_dim + (j < half ? 2 * j : 2 * (j - half) + 1);
}

std::string ShapeString(const std::vector<uint64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// ---- reading ----------------------------------------------------------------

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

Status ReadAt(int fd, void* buf, uint64_t n, uint64_t offset, const std::string& path) {
  auto* p = static_cast<unsigned char*>(buf);
  while (n > 0) {
    const ssize_t got =
        ::pread(fd, p, std::min<uint64_t>(n, uint64_t{1} << 30), static_cast<off_t>(offset));
    if (got < 0) {
      if (errno == EINTR) continue;
      return Status::IOError("read failed in '" + path + "': " + std::strerror(errno));
    }
    if (got == 0) return Status::Corruption("'" + path + "' ended early (truncated)");
    p += got;
    n -= static_cast<uint64_t>(got);
    offset += static_cast<uint64_t>(got);
  }
  return Status::Ok();
}

struct Shard {
  std::string path;
  Fd fd;
  uint64_t data_start = 0;  // file offset of the data section, bytes
};

struct TensorEntry {
  size_t shard = 0;
  std::string dtype;  // as written in the header
  std::vector<uint64_t> shape;
  uint64_t begin = 0, end = 0;  // within the data section, bytes
};

Result<WeightDType> ParseDType(const std::string& s) {
  if (s == "F32") return WeightDType::kFloat32;
  if (s == "F16") return WeightDType::kFloat16;
  if (s == "BF16") return WeightDType::kBFloat16;
  return Status::InvalidArgument("dtype '" + s + "' is not supported (F32, F16, BF16)");
}

Result<uint64_t> JsonU64(const json& j, const std::string& what) {
  if (!j.is_number_unsigned()) return Status::Corruption(what + " is not a non-negative integer");
  return j.get<uint64_t>();
}

// Opens one shard and adds its tensors to `entries`.
Status ParseShard(const std::string& path, std::vector<Shard>& shards,
                  std::map<std::string, TensorEntry>& entries) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return Status::IOError("cannot open '" + path + "': " + std::strerror(errno));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) {
    return Status::IOError("cannot stat '" + path + "': " + std::strerror(errno));
  }
  const uint64_t file_bytes = static_cast<uint64_t>(st.st_size);
  if (file_bytes < 8)
    return Status::Corruption("'" + path + "' is too short for a safetensors file");
  uint64_t header_bytes = 0;
  KVTIER_RETURN_IF_ERROR(ReadAt(fd.get(), &header_bytes, 8, 0, path));
  if (header_bytes > kMaxHeaderBytes) {
    return Status::Corruption("'" + path + "': header length " + std::to_string(header_bytes) +
                              " exceeds 100 MiB (not a safetensors file?)");
  }
  if (8 + header_bytes > file_bytes) {
    return Status::Corruption("'" + path + "': header length " + std::to_string(header_bytes) +
                              " runs past the end of the " + std::to_string(file_bytes) +
                              "-byte file (truncated)");
  }
  std::string text(header_bytes, '\0');
  KVTIER_RETURN_IF_ERROR(ReadAt(fd.get(), text.data(), header_bytes, 8, path));
  const json header = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    return Status::Corruption("'" + path + "': header is not a JSON object");
  }
  const uint64_t data_bytes = file_bytes - 8 - header_bytes;
  const size_t index = shards.size();
  for (const auto& [name, t] : header.items()) {
    if (name == "__metadata__") continue;
    const std::string what = "'" + path + "': tensor '" + name + "'";
    if (!t.is_object() || !t.contains("dtype") || !t.contains("shape") ||
        !t.contains("data_offsets") || !t["dtype"].is_string() || !t["shape"].is_array() ||
        !t["data_offsets"].is_array() || t["data_offsets"].size() != 2) {
      return Status::Corruption(what + " lacks a dtype, shape or data_offsets [begin, end]");
    }
    TensorEntry e;
    e.shard = index;
    e.dtype = t["dtype"].get<std::string>();
    for (const json& dim : t["shape"]) {
      KVTIER_ASSIGN_OR_RETURN(const uint64_t v, JsonU64(dim, what + " shape"));
      e.shape.push_back(v);
    }
    KVTIER_ASSIGN_OR_RETURN(e.begin, JsonU64(t["data_offsets"][0], what + " data_offsets"));
    KVTIER_ASSIGN_OR_RETURN(e.end, JsonU64(t["data_offsets"][1], what + " data_offsets"));
    if (e.begin > e.end || e.end > data_bytes) {
      return Status::Corruption(what + " data_offsets [" + std::to_string(e.begin) + ", " +
                                std::to_string(e.end) + "] fall outside the " +
                                std::to_string(data_bytes) + "-byte data section");
    }
    if (auto it = entries.find(name); it != entries.end()) {
      return Status::Corruption("tensor '" + name + "' is in both '" +
                                shards[it->second.shard].path + "' and '" + path + "'");
    }
    entries.emplace(name, std::move(e));
  }
  shards.push_back(Shard{path, std::move(fd), 8 + header_bytes});
  return Status::Ok();
}

// Reads one tensor into our layout, checking it against `spec`.
Status ReadTensor(ModelWeights& w, const TensorSpec& spec, const std::vector<Shard>& shards,
                  const std::map<std::string, TensorEntry>& entries, const std::string& dir) {
  auto it = entries.find(spec.name);
  if (it == entries.end()) {
    return Status::Corruption("tensor '" + spec.name + "' is missing from the checkpoint in '" +
                              dir + "'");
  }
  const TensorEntry& e = it->second;
  const Shard& shard = shards[e.shard];
  const std::string what = "'" + shard.path + "': tensor '" + spec.name + "'";
  if (e.shape != spec.shape) {
    return Status::Corruption(what + " has shape " + ShapeString(e.shape) +
                              " but config.json implies " + ShapeString(spec.shape));
  }
  Result<WeightDType> dtype = ParseDType(e.dtype);
  if (!dtype.ok()) return Status::InvalidArgument(what + ": " + dtype.status().message());
  const uint64_t rows = spec.rows(), cols = spec.cols();
  const uint64_t row_bytes = cols * ElemBytes(*dtype);
  if (e.end - e.begin != rows * row_bytes) {
    return Status::Corruption(what + " spans " + std::to_string(e.end - e.begin) + " bytes, but " +
                              ShapeString(e.shape) + " " + e.dtype + " needs " +
                              std::to_string(rows * row_bytes));
  }
  float* dst = w.storage.data() + (spec.data - w.storage.data());
  const uint64_t batch = std::max<uint64_t>(1, kChunkBytes / row_bytes);
  std::vector<unsigned char> buf(std::min(rows, batch) * row_bytes);
  for (uint64_t r0 = 0; r0 < rows; r0 += batch) {
    const uint64_t n = std::min(batch, rows - r0);
    KVTIER_RETURN_IF_ERROR(ReadAt(shard.fd.get(), buf.data(), n * row_bytes,
                                  shard.data_start + e.begin + r0 * row_bytes, shard.path));
    for (uint64_t i = 0; i < n; ++i) {
      Widen(*dtype, buf.data() + i * row_bytes, dst + OurRow(r0 + i, spec.rope_head_dim) * cols,
            cols);
    }
  }
  return Status::Ok();
}

// ---- config.json --------------------------------------------------------------

Result<int> ConfigInt(const json& j, const char* key, std::optional<int> fallback) {
  if (!j.contains(key) || j[key].is_null()) {
    if (fallback) return *fallback;
    return Status::Corruption(std::string("config.json lacks \"") + key + "\"");
  }
  const json& v = j[key];
  if (!v.is_number_integer() || v.get<int64_t>() <= 0 || v.get<int64_t>() > INT32_MAX) {
    return Status::Corruption(std::string("config.json: \"") + key +
                              "\" is not a positive 32-bit integer");
  }
  return static_cast<int>(v.get<int64_t>());
}

Result<float> ConfigFloat(const json& j, const char* key, float fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_number()) {
    return Status::Corruption(std::string("config.json: \"") + key + "\" is not a number");
  }
  return static_cast<float>(j[key].get<double>());
}

Result<ModelConfig> ParseConfig(const json& j, const std::string& dir, bool* tied) {
  if (!j.is_object()) return Status::Corruption("config.json in '" + dir + "' is not an object");
  if (j.contains("model_type") &&
      !(j["model_type"].is_string() && j["model_type"].get<std::string>() == "llama")) {
    return Status::InvalidArgument("config.json in '" + dir + "': model_type " +
                                   j["model_type"].dump() + " is not supported (only \"llama\")");
  }
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    return Status::InvalidArgument("config.json in '" + dir + "': rope_scaling " +
                                   j["rope_scaling"].dump() + " is not supported");
  }
  if (j.contains("hidden_act") && j["hidden_act"] != "silu") {
    return Status::InvalidArgument("config.json in '" + dir + "': hidden_act " +
                                   j["hidden_act"].dump() + " is not supported (only \"silu\")");
  }
  for (const char* key : {"attention_bias", "mlp_bias"}) {
    if (j.contains(key) && j[key] == true) {
      return Status::InvalidArgument("config.json in '" + dir + "': " + key + " is not supported");
    }
  }
  ModelConfig c;
  auto get_int = [&](const char* key, std::optional<int> fallback, int* out) -> Status {
    Result<int> v = ConfigInt(j, key, fallback);
    if (!v.ok()) return Status(v.status().code(), v.status().message() + " ('" + dir + "')");
    *out = *v;
    return Status::Ok();
  };
  KVTIER_RETURN_IF_ERROR(get_int("hidden_size", std::nullopt, &c.dim));
  KVTIER_RETURN_IF_ERROR(get_int("intermediate_size", std::nullopt, &c.hidden_dim));
  KVTIER_RETURN_IF_ERROR(get_int("num_hidden_layers", std::nullopt, &c.n_layers));
  KVTIER_RETURN_IF_ERROR(get_int("num_attention_heads", std::nullopt, &c.n_heads));
  KVTIER_RETURN_IF_ERROR(get_int("num_key_value_heads", c.n_heads, &c.n_kv_heads));
  KVTIER_RETURN_IF_ERROR(get_int("vocab_size", std::nullopt, &c.vocab_size));
  KVTIER_RETURN_IF_ERROR(get_int("max_position_embeddings", std::nullopt, &c.max_seq_len));
  KVTIER_ASSIGN_OR_RETURN(c.norm_eps, ConfigFloat(j, "rms_norm_eps", 1e-6f));
  KVTIER_ASSIGN_OR_RETURN(c.rope_theta, ConfigFloat(j, "rope_theta", 10000.0f));
  if (j.contains("head_dim") && !j["head_dim"].is_null() &&
      !(j["head_dim"].is_number_integer() && c.n_heads > 0 &&
        j["head_dim"].get<int64_t>() * c.n_heads == c.dim)) {
    return Status::InvalidArgument(
        "config.json in '" + dir + "': head_dim " + j["head_dim"].dump() +
        " other than hidden_size / num_attention_heads is not supported");
  }
  *tied = false;
  if (j.contains("tie_word_embeddings") && !j["tie_word_embeddings"].is_null()) {
    if (!j["tie_word_embeddings"].is_boolean()) {
      return Status::Corruption("config.json: tie_word_embeddings is not a boolean");
    }
    *tied = j["tie_word_embeddings"].get<bool>();
  }
  c.name = fs::path(dir).lexically_normal().filename().string();
  if (c.name.empty()) c.name = fs::path(dir).lexically_normal().parent_path().filename().string();
  for (const char* key : {"name", "_name_or_path"}) {
    if (j.contains(key) && j[key].is_string() && !j[key].get<std::string>().empty()) {
      c.name = j[key].get<std::string>();
      break;
    }
  }
  return c;
}

Result<std::string> ReadWholeFile(const std::string& path) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) return Status::IOError("cannot open '" + path + "': " + std::strerror(errno));
  std::string out;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f.get())) > 0) {
    out.append(buf, n);
    if (out.size() > kMaxHeaderBytes) return Status::Corruption("'" + path + "' is too large");
  }
  if (std::ferror(f.get())) return Status::IOError("read failed in '" + path + "'");
  return out;
}

// ---- writing ------------------------------------------------------------------

// Writes a file through `fill` into path.tmp, then renames it over `path`, so
// a reader sees the old file or the whole new one.
template <typename Fill>
Status WriteAtomically(const fs::path& path, Fill fill) {
  const std::string tmp = path.string() + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) return Status::IOError("cannot create '" + tmp + "': " + std::strerror(errno));
  auto write = [f](const void* p, size_t n) { return std::fwrite(p, 1, n, f) == n; };
  bool ok = fill(write);
  ok = std::fflush(f) == 0 && ok;
  ok = ::fsync(fileno(f)) == 0 && ok;
  const int err = errno;
  ok = std::fclose(f) == 0 && ok;
  if (!ok) {
    std::remove(tmp.c_str());
    return Status::IOError("cannot write '" + tmp + "': " + std::strerror(err));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    std::remove(tmp.c_str());
    return Status::IOError("cannot rename '" + tmp + "' to '" + path.string() + "': " + why);
  }
  return Status::Ok();
}

// A float as the shortest decimal that reads back as the same float, so
// config.json says 1e-05 rather than 9.99999974737875e-06.
double ShortestDecimal(float v) {
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf) - 1, v);
  if (ec != std::errc()) return v;
  *end = '\0';
  return std::strtod(buf, nullptr);
}

}  // namespace

Result<std::unique_ptr<ModelWeights>> LoadSafetensorsModel(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return Status::NotFound("no model directory '" + dir + "'");
  const fs::path config_path = fs::path(dir) / "config.json";
  if (!fs::exists(config_path, ec)) return Status::NotFound("no config.json in '" + dir + "'");
  KVTIER_ASSIGN_OR_RETURN(const std::string text, ReadWholeFile(config_path.string()));
  const json config_json = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (config_json.is_discarded()) {
    return Status::Corruption("'" + config_path.string() + "' is not valid JSON");
  }
  bool tied = false;
  auto parse_config = [&]() -> Result<ModelConfig> {
    try {
      return ParseConfig(config_json, dir, &tied);
    } catch (const json::exception& e) {
      return Status::Corruption("'" + config_path.string() + "': " + e.what());
    }
  };
  KVTIER_ASSIGN_OR_RETURN(const ModelConfig config, parse_config());

  std::vector<std::string> files;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().extension() == ".safetensors" && it->is_regular_file(ec)) {
      files.push_back(it->path().string());
    }
  }
  if (ec) return Status::IOError("cannot list '" + dir + "': " + ec.message());
  if (files.empty()) return Status::NotFound("no *.safetensors in '" + dir + "'");
  std::sort(files.begin(), files.end());

  std::vector<Shard> shards;
  std::map<std::string, TensorEntry> entries;
  try {
    for (const std::string& f : files) KVTIER_RETURN_IF_ERROR(ParseShard(f, shards, entries));
  } catch (const json::exception& e) {
    return Status::Corruption("safetensors header in '" + dir + "': " + e.what());
  }

  KVTIER_ASSIGN_OR_RETURN(std::unique_ptr<ModelWeights> w, ModelWeights::Allocate(config, tied));
  for (const TensorSpec& spec : Specs(*w)) {
    KVTIER_RETURN_IF_ERROR(ReadTensor(*w, spec, shards, entries, dir));
  }
  w->ComputeDigest();
  return w;
}

Status WriteSafetensorsModel(const ModelWeights& weights, const std::string& dir,
                             WeightDType dtype) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Status::IOError("cannot create '" + dir + "': " + ec.message());
  const ModelConfig& c = weights.config;

  // The weights first, so that a config.json (what LoadModel looks for)
  // always has its weights beside it.
  const std::vector<TensorSpec> specs = Specs(weights);
  const uint64_t elem = ElemBytes(dtype);
  json header = json::object();
  uint64_t offset = 0;
  for (const TensorSpec& s : specs) {
    const uint64_t bytes = s.rows() * s.cols() * elem;
    header[s.name] = {{"dtype", DTypeName(dtype)},
                      {"shape", s.shape},
                      {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  header["__metadata__"] = {{"format", "pt"}};
  std::string text = header.dump();
  text.append((8 - (8 + text.size()) % 8) % 8, ' ');  // data starts 8-byte aligned
  const uint64_t header_bytes = text.size();

  KVTIER_RETURN_IF_ERROR(WriteAtomically(fs::path(dir) / "model.safetensors", [&](auto&& write) {
    if (!write(&header_bytes, 8) || !write(text.data(), text.size())) return false;
    std::vector<unsigned char> buf;
    for (const TensorSpec& s : specs) {
      const uint64_t rows = s.rows(), cols = s.cols(), row_bytes = cols * elem;
      const uint64_t batch = std::max<uint64_t>(1, kChunkBytes / row_bytes);
      buf.resize(std::min(rows, batch) * row_bytes);
      for (uint64_t r0 = 0; r0 < rows; r0 += batch) {
        const uint64_t n = std::min(batch, rows - r0);
        for (uint64_t i = 0; i < n; ++i) {
          Narrow(dtype, s.data + OurRow(r0 + i, s.rope_head_dim) * cols, buf.data() + i * row_bytes,
                 cols);
        }
        if (!write(buf.data(), n * row_bytes)) return false;
      }
    }
    return true;
  }));

  json config = {
      {"architectures", json::array({"LlamaForCausalLM"})},
      {"model_type", "llama"},
      {"_name_or_path", c.name},
      {"hidden_size", c.dim},
      {"intermediate_size", c.hidden_dim},
      {"num_hidden_layers", c.n_layers},
      {"num_attention_heads", c.n_heads},
      {"num_key_value_heads", c.n_kv_heads},
      {"vocab_size", c.vocab_size},
      {"max_position_embeddings", c.max_seq_len},
      {"rms_norm_eps", ShortestDecimal(c.norm_eps)},
      {"rope_theta", ShortestDecimal(c.rope_theta)},
      {"rope_scaling", nullptr},
      {"hidden_act", "silu"},
      {"tie_word_embeddings", weights.tied_embeddings},
      {"torch_dtype", TorchDTypeName(dtype)},
      {"bos_token_id", 1},
      {"eos_token_id", 2},
  };
  const std::string config_text = config.dump(2) + "\n";
  return WriteAtomically(fs::path(dir) / "config.json", [&](auto&& write) {
    return write(config_text.data(), config_text.size());
  });
}

}  // namespace kvtier
