// What the tests take from ../shared/data: where it is, and the stories260K
// model (Karpathy's MIT-licensed 260K-parameter llama2.c checkpoint, its
// tok512.bin and the golden greedy output of llama2.c's run.c), found, loaded
// or skipped in one place.
//
// Header-only and needing no more than kvtier_model, so gpu_forward_test (which
// links kvtier_model alone) uses it too.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/token.h"
#include "model/model_weights.h"
#include "model/tokenizer.h"

namespace kvtier {

// KVTIER_SHARED_DATA (CTest sets it), else ../shared/data beside the checkout,
// where CMake's KVTIER_SHARED_DATA points by default.
inline std::string SharedDataDir() {
  if (const char* env = std::getenv("KVTIER_SHARED_DATA"); env != nullptr && *env != '\0') {
    return env;
  }
  // This file is <checkout>/tests/shared_data.h.
  const std::filesystem::path checkout =
      std::filesystem::path(__FILE__).parent_path().parent_path();
  return (checkout.parent_path() / "shared" / "data").string();
}

inline std::string Stories260KDir() { return SharedDataDir() + "/models/stories260K"; }
inline std::string Stories260KCheckpoint() { return Stories260KDir() + "/stories260K.bin"; }
inline std::string Stories260KTokenizerFile() { return Stories260KDir() + "/tok512.bin"; }
inline std::string Stories260KGoldenFile() { return Stories260KDir() + "/greedy_t0_expected.json"; }

// Why the stories260K tests cannot run (the first of its files that is
// missing), or "" when all of them are there.
inline std::string Stories260KMissing() {
  for (const std::string& file :
       {Stories260KCheckpoint(), Stories260KTokenizerFile(), Stories260KGoldenFile()}) {
    if (!std::filesystem::exists(file)) {
      return "no " + file + " (KVTIER_SHARED_DATA names the shared data directory)";
    }
  }
  return "";
}

// Skips the calling test (or fixture SetUp), saying which file is missing,
// unless all of stories260K is there.
#define SKIP_WITHOUT_STORIES260K()                                                  \
  if (const std::string missing = ::kvtier::Stories260KMissing(); !missing.empty()) \
  GTEST_SKIP() << missing

// What llama2.c's run.c generates from BOS at temperature 0
// (greedy_t0_expected.json).
struct GreedyGolden {
  TokenId bos = 1;
  int steps = 0;                   // tokens asked for
  std::vector<TokenId> token_ids;  // generated, BOS excluded
  std::string text;                // their decoding after BOS
};

// kNotFound without the file, kCorruption when it is not the golden JSON.
inline Result<GreedyGolden> LoadStories260KGolden() {
  std::ifstream in(Stories260KGoldenFile());
  if (!in) return Status::NotFound("no " + Stories260KGoldenFile());
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.contains("bos") || !j.contains("steps") ||
      !j.contains("generated_token_ids") || !j.contains("text")) {
    return Status::Corruption(Stories260KGoldenFile() + " is not the golden output");
  }
  GreedyGolden golden;
  golden.bos = j["bos"].get<TokenId>();
  golden.steps = j["steps"].get<int>();
  golden.token_ids = j["generated_token_ids"].get<std::vector<TokenId>>();
  golden.text = j["text"].get<std::string>();
  return golden;
}

struct Stories260KModel {
  std::unique_ptr<ModelWeights> weights;
  std::unique_ptr<Tokenizer> tokenizer;  // tok512.bin, found as LoadTokenizerFor finds it
  GreedyGolden golden;
};

// Loads the checkpoint (through LoadModel), its tokenizer and the golden
// output. Call it after SKIP_WITHOUT_STORIES260K(): an error here is a failure.
inline Result<Stories260KModel> LoadStories260K() {
  Stories260KModel model;
  KVTIER_ASSIGN_OR_RETURN(model.weights, LoadModel(Stories260KCheckpoint()));
  KVTIER_ASSIGN_OR_RETURN(
      model.tokenizer, LoadTokenizerFor(Stories260KCheckpoint(), model.weights->config.vocab_size));
  KVTIER_ASSIGN_OR_RETURN(model.golden, LoadStories260KGolden());
  return model;
}

}  // namespace kvtier
