// The blocks crash_writer writes: block N's key and bytes follow from N.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/block_key.h"

namespace kvtier::testing {

inline BlockKey CrashKey(uint64_t id) { return BlockKey{0xc0ffee, id}; }

// n pseudo-random bytes (xorshift64) from `seed`.
inline std::vector<std::byte> PatternBytes(size_t n, uint64_t seed) {
  std::vector<std::byte> p(n);
  uint64_t x = seed;
  for (auto& b : p) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b = static_cast<std::byte>(x);
  }
  return p;
}

// 8-72 KiB, so both inline values and blob files are exercised.
inline std::vector<std::byte> CrashPayload(uint64_t id) {
  return PatternBytes(8192 + (id % 9) * 8192, id * 0x9e3779b97f4a7c15ull + 7);
}

}  // namespace kvtier::testing
