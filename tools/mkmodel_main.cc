// kvtier-mkmodel: writes a deterministic random-weight Llama checkpoint
// (config.json + model.safetensors + tokenizer.bin) of a preset or custom
// shape, for tests and benchmarks.
#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "common/flags.h"
#include "model/model_weights.h"
#include "model/tokenizer.h"

namespace kvtier {
namespace {

const char kUsage[] =
    R"(usage: kvtier-mkmodel (--preset NAME | --dim N --hidden-dim N --layers N --heads N
                        --kv-heads N --vocab N --seq-len N) --out DIR
                        [--rope-theta X] [--dtype f32|f16|bf16] [--seed N] [--untied]
                        [--name NAME]

Writes DIR/config.json and DIR/model.safetensors (Hugging Face Llama layout)
holding deterministic random weights, and DIR/tokenizer.bin (a synthetic
llama2.c tokenizer; skipped when the vocabulary is under 354 tokens).
Shape flags given with --preset override the preset's values.

  --preset NAME     one of: tiny small bench50m base 1b
  --rope-theta X    RoPE base (default 10000)
  --dtype D         storage dtype of the tensors (default f32)
  --seed N          weight seed (default 0); the same seed gives the same bits
  --untied          a separate lm_head instead of sharing the embedding
  --name NAME       model name in config.json (default: the preset, else "custom")
)";

int Fail(const std::string& msg, int code) { return ToolFail("kvtier-mkmodel", msg, code); }

int Main(int argc, char** argv) {
  FlagSet flags;
  const std::vector<std::pair<const char*, int ModelConfig::*>> shape_flags = {
      {"dim", &ModelConfig::dim},
      {"hidden-dim", &ModelConfig::hidden_dim},
      {"layers", &ModelConfig::n_layers},
      {"heads", &ModelConfig::n_heads},
      {"kv-heads", &ModelConfig::n_kv_heads},
      {"vocab", &ModelConfig::vocab_size},
      {"seq-len", &ModelConfig::max_seq_len}};
  for (const auto& [name, field] : shape_flags) flags.Value(name);
  for (const char* f : {"preset", "rope-theta", "out", "dtype", "seed", "name"}) flags.Value(f);
  flags.Bool("untied");
  flags.Bool("help");
  if (Status s = flags.Parse(std::vector<std::string>(argv + 1, argv + argc)); !s.ok()) {
    return Fail(s.message(), 2);
  }
  if (flags.Has("help")) {
    std::cout << kUsage;
    return 0;
  }
  if (!flags.positional().empty()) return Fail("unexpected argument " + flags.positional()[0], 2);
  if (!flags.Has("out")) return Fail("--out DIR is required", 2);

  ModelConfig config;
  config.name = "custom";
  if (flags.Has("preset")) {
    Result<ModelConfig> preset = ModelPreset(flags.Get("preset"));
    if (!preset.ok()) return Fail(preset.status().message(), 2);
    config = *preset;
  }
  for (const auto& [name, field] : shape_flags) {
    if (flags.Has(name)) {
      Result<int64_t> v = ParseInt(flags.Get(name));
      if (!v.ok() || *v <= 0 || *v > INT32_MAX) {
        return Fail(std::string("--") + name + " needs a positive integer", 2);
      }
      config.*field = static_cast<int>(*v);
    } else if (!flags.Has("preset")) {
      return Fail(std::string("--") + name + " is required without --preset", 2);
    }
  }
  if (flags.Has("rope-theta")) {
    const std::string text = flags.Get("rope-theta");
    char* end = nullptr;
    errno = 0;
    const double theta = std::strtod(text.c_str(), &end);
    if (text.empty() || *end != '\0' || errno != 0 || !(theta > 0)) {
      return Fail("--rope-theta needs a positive number", 2);
    }
    config.rope_theta = static_cast<float>(theta);
  }
  if (flags.Has("name")) config.name = flags.Get("name");
  WeightDType dtype = WeightDType::kFloat32;
  const std::string dtype_name = flags.Get("dtype", "f32");
  if (dtype_name == "f16") {
    dtype = WeightDType::kFloat16;
  } else if (dtype_name == "bf16") {
    dtype = WeightDType::kBFloat16;
  } else if (dtype_name != "f32") {
    return Fail("--dtype must be f32, f16 or bf16", 2);
  }
  uint64_t seed = 0;
  if (flags.Has("seed")) {
    Result<int64_t> v = ParseInt(flags.Get("seed"));
    if (!v.ok()) return Fail("--seed needs a non-negative integer", 2);
    seed = static_cast<uint64_t>(*v);
  }
  const bool tied = !flags.Has("untied");
  if (Status s = config.Validate(); !s.ok()) return Fail(s.message(), 2);

  Result<std::unique_ptr<ModelWeights>> weights = RandomModel(config, seed, tied);
  if (!weights.ok()) return Fail(weights.status().ToString(), 1);
  const std::string out = flags.Get("out");
  if (Status s = WriteSafetensorsModel(**weights, out, dtype); !s.ok()) {
    return Fail(s.ToString(), 1);
  }
  const std::filesystem::path dir(out);
  if (config.vocab_size >= 259 + 95) {
    if (Status s =
            WriteSyntheticLlama2cTokenizer((dir / "tokenizer.bin").string(), config.vocab_size);
        !s.ok()) {
      return Fail(s.ToString(), 1);
    }
  } else {
    std::cerr << "kvtier-mkmodel: note: vocabulary " << config.vocab_size
              << " is under 354 tokens; no tokenizer.bin written (serve token ids)\n";
  }

  std::error_code ec;
  const uintmax_t bytes = std::filesystem::file_size(dir / "model.safetensors", ec);
  const ModelConfig& c = (*weights)->config;
  // Stored parameters: the active ones, the norm weights, and the embedding
  // again when the classifier is a separate matrix.
  const uint64_t params = c.ActiveParams() + uint64_t(2 * c.n_layers + 1) * c.dim +
                          (tied ? 0 : uint64_t(c.vocab_size) * c.dim);
  std::printf(
      "%s: %s dim=%d hidden=%d layers=%d heads=%d kv_heads=%d vocab=%d seq=%d %s %s, "
      "%" PRIu64 " params (%" PRIu64 " active per token), %ju bytes, digest %016" PRIx64 "\n",
      out.c_str(), c.name.c_str(), c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads,
      c.vocab_size, c.max_seq_len, dtype_name.c_str(), tied ? "tied" : "untied", params,
      c.ActiveParams(), ec ? uintmax_t{0} : bytes, (*weights)->digest);
  return 0;
}

}  // namespace
}  // namespace kvtier

int main(int argc, char** argv) { return kvtier::Main(argc, argv); }
