// Sampler: picks the next token from a row of logits (DESIGN §8).
//
// Greedy at temperature 0 (the first of equal maxima); otherwise softmax of
// logits / temperature, restricted to the top_k most likely tokens (0 = all)
// and then to the smallest set whose probability reaches top_p (1 = all),
// sampled with the sequence's own random stream. The stream is seeded from the
// request's seed, so a request with a seed gives the same tokens on every run
// and whatever else is in its batch.
//
// Not thread-safe (each sequence has its own Sampler).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/status.h"
#include "common/token.h"

namespace kvtier {

struct SamplingParams {
  float temperature = 0.0f;  // 0 = greedy
  float top_p = 1.0f;        // nucleus mass in (0, 1]
  int top_k = 0;             // 0 = no limit
  uint64_t seed = 0;         // seed of the sequence's random stream

  // kInvalidArgument for a negative or non-finite temperature, top_p outside
  // (0, 1] or a negative top_k.
  Status Validate() const;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  TokenId Sample(std::span<const float> logits);

 private:
  double NextUniform();  // in [0, 1)

  SamplingParams params_;
  uint64_t state_[4];           // xoshiro256** state
  std::vector<int32_t> order_;  // scratch: candidate ids
  std::vector<double> probs_;   // scratch: their probabilities
};

}  // namespace kvtier
