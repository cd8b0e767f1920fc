// Deterministic uniform floats in [-1, 1) for the model tests.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace kvtier {

inline std::vector<float> RandomFloats(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = d(gen);
  return v;
}

}  // namespace kvtier
