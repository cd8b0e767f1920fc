// Bit-exact host conversions between f32 and the 16-bit KV dtypes, for the
// CPU twins of kernels/ and their tests. They give the same bits as the CUDA
// intrinsics (__float2half_rn, __float2bfloat16_rn, and back) for every
// non-NaN input: f32 -> f16/bf16 rounds to nearest, ties to even, overflows to
// infinity and keeps subnormals; f16/bf16 -> f32 is exact. A NaN stays a quiet
// NaN of the same sign with the top bits of its payload (CUDA returns a
// canonical NaN instead; nothing compares NaN bits). Thread-safe (pure).
#pragma once

#include <cstdint>
#include <cstring>

#include "common/kv_geometry.h"

namespace kvtier {

inline uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

inline float BitsFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// IEEE binary16, round to nearest even (after F. Giesen's float_to_half_fast3_rtne).
inline uint16_t FloatToHalfBits(float f) {
  uint32_t u = FloatBits(f);
  const uint32_t sign = u & 0x80000000u;
  u ^= sign;
  uint32_t h;
  if (u >= 0x47800000u) {  // |f| >= 65536 (rounds to infinity), infinity or NaN
    h = u > 0x7f800000u ? 0x7e00u | ((u >> 13) & 0x3ffu) : 0x7c00u;
  } else if (u < 0x38800000u) {  // below 2^-14: a subnormal half or zero
    // Adding 0.5f aligns the half's subnormal ulp (2^-24) with the float's
    // last mantissa bit, so the FPU's own round-to-nearest-even does the work.
    const float magic = BitsFloat(0x3f000000u);
    h = FloatBits(BitsFloat(u) + magic) - 0x3f000000u;
  } else {
    const uint32_t mant_odd = (u >> 13) & 1u;
    u += 0xc8000fffu + mant_odd;  // rebias the exponent (-112 << 23) and round
    h = u >> 13;                  // a carry out of the mantissa may reach infinity: correct
  }
  return static_cast<uint16_t>(h | (sign >> 16));
}

inline float HalfBitsToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return BitsFloat(sign | 0x7f800000u | (mant << 13));
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24, exact in f32.
    const float mag = static_cast<float>(mant) * BitsFloat(0x33800000u);
    return BitsFloat(sign | FloatBits(mag));
  }
  return BitsFloat(sign | ((exp + 112) << 23) | (mant << 13));
}

// bfloat16: the top 16 bits of an f32, rounded to nearest even.
inline uint16_t FloatToBf16Bits(float f) {
  const uint32_t u = FloatBits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

inline float Bf16BitsToFloat(uint16_t b) { return BitsFloat(static_cast<uint32_t>(b) << 16); }

// Stores f at element i of a buffer of dtype d, rounding as above.
inline void StoreAs(DType d, void* base, int64_t i, float f) {
  switch (d) {
    case DType::kFloat32:
      static_cast<float*>(base)[i] = f;
      return;
    case DType::kFloat16:
      static_cast<uint16_t*>(base)[i] = FloatToHalfBits(f);
      return;
    case DType::kBFloat16:
      static_cast<uint16_t*>(base)[i] = FloatToBf16Bits(f);
      return;
  }
}

// Element i of a buffer of dtype d, as f32 (exact).
inline float LoadAs(DType d, const void* base, int64_t i) {
  switch (d) {
    case DType::kFloat32:
      return static_cast<const float*>(base)[i];
    case DType::kFloat16:
      return HalfBitsToFloat(static_cast<const uint16_t*>(base)[i]);
    case DType::kBFloat16:
      return Bf16BitsToFloat(static_cast<const uint16_t*>(base)[i]);
  }
  return 0.0f;
}

}  // namespace kvtier
