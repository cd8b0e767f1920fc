// A 16-lane float vector for the CPU kernels, three times: AVX-512 (one zmm),
// AVX2 + FMA (two ymm) and portable C++ (an array). Every operation is
// lane-wise and IEEE-exact (fused multiply-add included), so a kernel written
// once against this interface computes the same bits on every set; which set
// runs is a run-time choice (CpuMathIsa), never a build-time one.
//
// A kernel file is included once per set inside a namespace that does
// `using namespace cpu_vec::<set>;` and defines KVT_TARGET as the set's
// function attribute (KVT_TARGET_AVX2, KVT_TARGET_AVX512, or nothing); the
// AVX-512 inclusion sits between KVT_AVX512_BEGIN and KVT_AVX512_END.
//
//   VZero, VSet1, VLoad, VStore (unaligned), VAdd, VSub, VMul, VDiv,
//   VFma(a, b, c) = a * b + c rounded once, VMax (maxps: b unless a > b),
//   VFirst(count, a, fill): a in lanes < count, fill in the others,
//   VPow2i(n): 2^n for integral n in [-126, 127], VScale2i(a, n) = a * 2^n
//     for such n rounded once (AVX-512's vscalefps; a product with VPow2i
//     elsewhere: the same bits), VHMax: the largest lane,
//   VDotBf16(acc, x, w): per lane i, with w 16 pairs of bf16 (w[i] holds
//     k = 2j in its low half, 2j + 1 in its high half) and x one such pair:
//     acc = fma(x.hi, w.hi, acc), then acc = fma(x.lo, w.lo, acc) (a product
//     of two bf16 is exact in f32, so this is AVX-512 BF16's vdpbf16ps,
//     which the avx512bf16 set runs natively).
//
// VExp (model/cpu_vec_exp.inc, included by a kernel file inside its set's
// namespace) is exp on these operations, with its constants below.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#define KVT_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define KVT_TARGET_AVX512 __attribute__((target("avx512f,fma")))
// GCC 12's AVX-512 headers self-initialise their "undefined" operands, which
// its own -Wuninitialized then flags wherever they are inlined.
#ifdef __clang__
#define KVT_AVX512_BEGIN \
  _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wuninitialized\"")
#else
#define KVT_AVX512_BEGIN                                                               \
  _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wuninitialized\"") \
      _Pragma("GCC diagnostic ignored \"-Wmaybe-uninitialized\"")
#endif
#define KVT_AVX512_END _Pragma("GCC diagnostic pop")

// Internal linkage: every file that includes this compiles its own copy, so
// no inline function is ever shared between files built with other flags.
namespace kvtier::cpu_vec {
namespace {

// exp's constants (Cephes' expf: x = n ln2 + r, a degree-6 polynomial in r,
// times 2^n). kExpMin keeps 2^n normal; below it exp is under 2^-125 and not
// worth a subnormal. kExpMax keeps 2^n finite.
constexpr float kExpMin = -87.0f;
constexpr float kExpMax = 88.0f;
constexpr float kRoundMagic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f;
constexpr float kLn2Lo = -2.12194440e-4f;
constexpr float kExpC[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                            4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};

// ---- Portable C++: 16 lanes in an array. ----
namespace portable {

struct Vec {
  float v[16];
};
#define KVT_LANEWISE(expr)                      \
  Vec r;                                        \
  for (int i = 0; i < 16; ++i) r.v[i] = (expr); \
  return r

inline Vec VZero() { KVT_LANEWISE(0.0f); }
inline Vec VSet1(float x) { KVT_LANEWISE(x); }
inline Vec VLoad(const float* p) { KVT_LANEWISE(p[i]); }
inline void VStore(float* p, Vec a) { std::memcpy(p, a.v, sizeof(a.v)); }
inline Vec VAdd(Vec a, Vec b) { KVT_LANEWISE(a.v[i] + b.v[i]); }
inline Vec VSub(Vec a, Vec b) { KVT_LANEWISE(a.v[i] - b.v[i]); }
inline Vec VMul(Vec a, Vec b) { KVT_LANEWISE(a.v[i] * b.v[i]); }
inline Vec VDiv(Vec a, Vec b) { KVT_LANEWISE(a.v[i] / b.v[i]); }
inline Vec VFma(Vec a, Vec b, Vec c) { KVT_LANEWISE(std::fma(a.v[i], b.v[i], c.v[i])); }
// max(a, b) as maxps computes it: b unless a > b.
inline Vec VMax(Vec a, Vec b) { KVT_LANEWISE(a.v[i] > b.v[i] ? a.v[i] : b.v[i]); }
inline Vec VFirst(int count, Vec a, Vec fill) { KVT_LANEWISE(i < count ? a.v[i] : fill.v[i]); }
inline Vec VPow2i(Vec n) {
  Vec r;
  for (int i = 0; i < 16; ++i) {
    const int32_t bits = (static_cast<int32_t>(n.v[i]) + 127) << 23;
    std::memcpy(&r.v[i], &bits, sizeof(float));
  }
  return r;
}
inline Vec VScale2i(Vec a, Vec n) { return VMul(a, VPow2i(n)); }
inline float VHMax(Vec a) {
  float m = a.v[0];
  for (int i = 1; i < 16; ++i) m = std::fmax(m, a.v[i]);
  return m;
}
inline float Bf16Lo(uint32_t pair) {
  const uint32_t bits = pair << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
inline float Bf16Hi(uint32_t pair) {
  const uint32_t bits = pair & 0xffff0000u;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
inline Vec VDotBf16(Vec acc, uint32_t x, const uint32_t* w) {
  const float xh = Bf16Hi(x), xl = Bf16Lo(x);
  KVT_LANEWISE(std::fma(xl, Bf16Lo(w[i]), std::fma(xh, Bf16Hi(w[i]), acc.v[i])));
}
#undef KVT_LANEWISE

}  // namespace portable

// ---- AVX2 + FMA: two ymm registers. ----
namespace avx2 {

struct Vec {
  __m256 lo, hi;
};

#define KVT_BOTH(op) \
  return Vec { op(a.lo, b.lo), op(a.hi, b.hi) }

KVT_TARGET_AVX2 inline Vec VZero() { return Vec{_mm256_setzero_ps(), _mm256_setzero_ps()}; }
KVT_TARGET_AVX2 inline Vec VSet1(float x) { return Vec{_mm256_set1_ps(x), _mm256_set1_ps(x)}; }
KVT_TARGET_AVX2 inline Vec VLoad(const float* p) {
  return Vec{_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)};
}
KVT_TARGET_AVX2 inline void VStore(float* p, Vec a) {
  _mm256_storeu_ps(p, a.lo);
  _mm256_storeu_ps(p + 8, a.hi);
}
KVT_TARGET_AVX2 inline Vec VAdd(Vec a, Vec b) { KVT_BOTH(_mm256_add_ps); }
KVT_TARGET_AVX2 inline Vec VSub(Vec a, Vec b) { KVT_BOTH(_mm256_sub_ps); }
KVT_TARGET_AVX2 inline Vec VMul(Vec a, Vec b) { KVT_BOTH(_mm256_mul_ps); }
KVT_TARGET_AVX2 inline Vec VDiv(Vec a, Vec b) { KVT_BOTH(_mm256_div_ps); }
KVT_TARGET_AVX2 inline Vec VMax(Vec a, Vec b) { KVT_BOTH(_mm256_max_ps); }
KVT_TARGET_AVX2 inline Vec VFma(Vec a, Vec b, Vec c) {
  return Vec{_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)};
}
KVT_TARGET_AVX2 inline Vec VFirst(int count, Vec a, Vec fill) {
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i lo = _mm256_cmpgt_epi32(_mm256_set1_epi32(count), lanes);
  const __m256i hi = _mm256_cmpgt_epi32(_mm256_set1_epi32(count - 8), lanes);
  return Vec{_mm256_blendv_ps(fill.lo, a.lo, _mm256_castsi256_ps(lo)),
             _mm256_blendv_ps(fill.hi, a.hi, _mm256_castsi256_ps(hi))};
}
KVT_TARGET_AVX2 inline __m256 Pow2i(__m256 n) {
  const __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
  return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
}
KVT_TARGET_AVX2 inline Vec VPow2i(Vec n) { return Vec{Pow2i(n.lo), Pow2i(n.hi)}; }
KVT_TARGET_AVX2 inline Vec VScale2i(Vec a, Vec n) { return VMul(a, VPow2i(n)); }
KVT_TARGET_AVX2 inline float VHMax(Vec a) {
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, _mm256_max_ps(a.lo, a.hi));
  float m = lanes[0];
  for (int i = 1; i < 8; ++i) m = std::fmax(m, lanes[i]);
  return m;
}
#undef KVT_BOTH

KVT_TARGET_AVX2 inline Vec VDotBf16(Vec acc, uint32_t x, const uint32_t* w) {
  const __m256i hi_mask = _mm256_set1_epi32(static_cast<int>(0xffff0000u));
  const __m256 xh = _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int>(x & 0xffff0000u)));
  const __m256 xl = _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int>(x << 16)));
  const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
  const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 8));
  auto step = [&](__m256i wv, __m256 a) KVT_TARGET_AVX2 {
    a = _mm256_fmadd_ps(xh, _mm256_castsi256_ps(_mm256_and_si256(wv, hi_mask)), a);
    return _mm256_fmadd_ps(xl, _mm256_castsi256_ps(_mm256_slli_epi32(wv, 16)), a);
  };
  return Vec{step(w0, acc.lo), step(w1, acc.hi)};
}

}  // namespace avx2

// ---- AVX-512: one zmm register. ----
KVT_AVX512_BEGIN
namespace avx512 {

using Vec = __m512;

KVT_TARGET_AVX512 inline Vec VZero() { return _mm512_setzero_ps(); }
KVT_TARGET_AVX512 inline Vec VSet1(float x) { return _mm512_set1_ps(x); }
KVT_TARGET_AVX512 inline Vec VLoad(const float* p) { return _mm512_loadu_ps(p); }
KVT_TARGET_AVX512 inline void VStore(float* p, Vec a) { _mm512_storeu_ps(p, a); }
KVT_TARGET_AVX512 inline Vec VAdd(Vec a, Vec b) { return _mm512_add_ps(a, b); }
KVT_TARGET_AVX512 inline Vec VSub(Vec a, Vec b) { return _mm512_sub_ps(a, b); }
KVT_TARGET_AVX512 inline Vec VMul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
KVT_TARGET_AVX512 inline Vec VDiv(Vec a, Vec b) { return _mm512_div_ps(a, b); }
KVT_TARGET_AVX512 inline Vec VMax(Vec a, Vec b) { return _mm512_max_ps(a, b); }
KVT_TARGET_AVX512 inline Vec VFma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
KVT_TARGET_AVX512 inline Vec VFirst(int count, Vec a, Vec fill) {
  const int c = std::clamp(count, 0, 16);
  const __mmask16 m = static_cast<__mmask16>((uint32_t{1} << c) - 1);
  return _mm512_mask_blend_ps(m, fill, a);
}
KVT_TARGET_AVX512 inline Vec VPow2i(Vec n) {
  const __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
  return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
}
KVT_TARGET_AVX512 inline Vec VScale2i(Vec a, Vec n) { return _mm512_scalef_ps(a, n); }
KVT_TARGET_AVX512 inline float VHMax(Vec a) { return _mm512_reduce_max_ps(a); }

KVT_TARGET_AVX512 inline Vec VDotBf16(Vec acc, uint32_t x, const uint32_t* w) {
  const __m512i wv = _mm512_loadu_si512(w);
  const __m512 xh = _mm512_castsi512_ps(_mm512_set1_epi32(static_cast<int>(x & 0xffff0000u)));
  const __m512 xl = _mm512_castsi512_ps(_mm512_set1_epi32(static_cast<int>(x << 16)));
  const __m512 wh =
      _mm512_castsi512_ps(_mm512_and_si512(wv, _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
  const __m512 wl = _mm512_castsi512_ps(_mm512_slli_epi32(wv, 16));
  return _mm512_fmadd_ps(xl, wl, _mm512_fmadd_ps(xh, wh, acc));
}

}  // namespace avx512

// ---- AVX-512 with BF16 dot products: avx512's Vec, VDotBf16 in hardware. ----
// A kernel namespace for it takes avx512's operations and this VDotBf16 by a
// using-declaration, which hides avx512's emulated one.
namespace avx512bf16 {
using Vec = avx512::Vec;
#define KVT_TARGET_AVX512BF16 __attribute__((target("avx512f,avx512bf16,fma")))
KVT_TARGET_AVX512BF16 inline Vec VDotBf16(Vec acc, uint32_t x, const uint32_t* w) {
  return _mm512_dpbf16_ps(acc, (__m512bh)_mm512_set1_epi32(static_cast<int>(x)),
                          (__m512bh)_mm512_loadu_si512(w));
}
}  // namespace avx512bf16
KVT_AVX512_END

}  // namespace
}  // namespace kvtier::cpu_vec
