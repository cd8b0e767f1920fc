#include "model/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "model/cpu_math.h"

namespace kvtier {
namespace {

uint64_t SplitMix64(uint64_t* x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

}  // namespace

Status SamplingParams::Validate() const {
  if (!std::isfinite(temperature) || temperature < 0.0f) {
    return Status::InvalidArgument("temperature must be a finite number >= 0");
  }
  if (!(top_p > 0.0f && top_p <= 1.0f)) return Status::InvalidArgument("top_p must be in (0, 1]");
  if (top_k < 0) return Status::InvalidArgument("top_k must be >= 0");
  return Status::Ok();
}

Sampler::Sampler(const SamplingParams& params) : params_(params) {
  uint64_t s = params.seed;
  for (uint64_t& w : state_) w = SplitMix64(&s);
}

double Sampler::NextUniform() {
  const uint64_t result = Rotl(state_[1] * 5, 7) * 9;
  const uint64_t t = state_[1] << 17;
  state_[2] ^= state_[0];
  state_[3] ^= state_[1];
  state_[1] ^= state_[2];
  state_[0] ^= state_[3];
  state_[2] ^= t;
  state_[3] = Rotl(state_[3], 45);
  return static_cast<double>(result >> 11) * 0x1.0p-53;
}

TokenId Sampler::Sample(std::span<const float> logits) {
  const int n = static_cast<int>(logits.size());
  if (params_.temperature == 0.0f || n == 1) {
    return static_cast<TokenId>(ArgMax(logits.data(), static_cast<int64_t>(logits.size())));
  }
  // Candidates by falling logit (ties by id, so the order is total).
  order_.resize(n);
  std::iota(order_.begin(), order_.end(), 0);
  auto by_logit = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  int keep = n;
  if (params_.top_k > 0 && params_.top_k < n) {
    keep = params_.top_k;
    std::partial_sort(order_.begin(), order_.begin() + keep, order_.end(), by_logit);
  } else {
    std::sort(order_.begin(), order_.end(), by_logit);
  }
  // Softmax over the candidates, in double, from the largest logit down.
  probs_.resize(keep);
  const double max = logits[order_[0]];
  double sum = 0.0;
  for (int i = 0; i < keep; ++i) {
    probs_[i] = std::exp((logits[order_[i]] - max) / params_.temperature);
    sum += probs_[i];
  }
  // Nucleus: the shortest head of the list whose mass reaches top_p.
  if (params_.top_p < 1.0f) {
    double mass = 0.0;
    int cut = keep;
    for (int i = 0; i < keep; ++i) {
      mass += probs_[i] / sum;
      if (mass >= params_.top_p) {
        cut = i + 1;
        break;
      }
    }
    keep = cut;
    sum = std::accumulate(probs_.begin(), probs_.begin() + keep, 0.0);
  }
  const double u = NextUniform() * sum;
  double acc = 0.0;
  for (int i = 0; i < keep; ++i) {
    acc += probs_[i];
    if (u < acc) return order_[i];
  }
  return order_[keep - 1];
}

}  // namespace kvtier
