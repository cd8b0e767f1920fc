#include "model/cpu_math.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "model/thread_pool.h"

namespace kvtier {
namespace {

// ---- Portable kernels: eight emulated lanes, the same order as AVX2. ----

struct Lanes {
  float v[8] = {0, 0, 0, 0, 0, 0, 0, 0};
};

inline float SumLanes(const Lanes& l) {
  // The AVX2 tree: (lo128 + hi128), then (0+2, 1+3), then (0 + 1).
  const float a0 = l.v[0] + l.v[4], a1 = l.v[1] + l.v[5], a2 = l.v[2] + l.v[6],
              a3 = l.v[3] + l.v[7];
  const float b0 = a0 + a2, b1 = a1 + a3;
  return b0 + b1;
}

float DotPortable(const float* a, const float* b, int64_t n) {
  Lanes acc;
  const int64_t n8 = n & ~int64_t{7};
  for (int64_t k = 0; k < n8; k += 8) {
    for (int l = 0; l < 8; ++l) acc.v[l] = std::fma(a[k + l], b[k + l], acc.v[l]);
  }
  float s = SumLanes(acc);
  for (int64_t k = n8; k < n; ++k) s = std::fma(a[k], b[k], s);
  return s;
}

void MatMulBlockPortable(const float* x, int64_t rows, const float* w, int64_t o_begin,
                         int64_t o_end, int64_t k, int64_t outs, float* y) {
  for (int64_t t = 0; t < rows; ++t) {
    for (int64_t o = o_begin; o < o_end; ++o)
      y[t * outs + o] = DotPortable(x + t * k, w + o * k, k);
  }
}

// ---- AVX2 + FMA kernels. ----

__attribute__((target("avx2,fma"))) inline float SumLanesAvx2(__m256 v) {
  const __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 b = _mm_add_ps(a, _mm_movehl_ps(a, a));         // (0+2, 1+3, ...)
  const __m128 c = _mm_add_ss(b, _mm_shuffle_ps(b, b, 0x55));  // (0 + 1)
  return _mm_cvtss_f32(c);
}

__attribute__((target("avx2,fma"))) inline float TailAvx2(float s, const float* a, const float* b,
                                                          int64_t from, int64_t n) {
  for (int64_t k = from; k < n; ++k) s = std::fma(a[k], b[k], s);
  return s;
}

__attribute__((target("avx2,fma"))) float DotAvx2(const float* a, const float* b, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  const int64_t n8 = n & ~int64_t{7};
  for (int64_t k = 0; k < n8; k += 8) {
    acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), acc);
  }
  return TailAvx2(SumLanesAvx2(acc), a, b, n8, n);
}

// A register tile of TT rows of x by OO rows of w. Each accumulator is one
// (t, o) dot product, so the tile shape does not change any result.
template <int TT, int OO>
__attribute__((target("avx2,fma"))) inline void TileAvx2(const float* x, const float* w, int64_t k,
                                                         int64_t outs, float* y) {
  __m256 acc[TT][OO];
  for (int t = 0; t < TT; ++t) {
    for (int o = 0; o < OO; ++o) acc[t][o] = _mm256_setzero_ps();
  }
  const int64_t k8 = k & ~int64_t{7};
  for (int64_t kk = 0; kk < k8; kk += 8) {
    __m256 wv[OO];
    for (int o = 0; o < OO; ++o) wv[o] = _mm256_loadu_ps(w + o * k + kk);
    for (int t = 0; t < TT; ++t) {
      const __m256 xv = _mm256_loadu_ps(x + t * k + kk);
      for (int o = 0; o < OO; ++o) acc[t][o] = _mm256_fmadd_ps(xv, wv[o], acc[t][o]);
    }
  }
  for (int t = 0; t < TT; ++t) {
    for (int o = 0; o < OO; ++o) {
      y[t * outs + o] = TailAvx2(SumLanesAvx2(acc[t][o]), x + t * k, w + o * k, k8, k);
    }
  }
}

// Rows of x are taken in panels that stay in L2 while a thread's outputs
// stream past them; within a panel, tiles of 4 rows x 3 outputs (12
// accumulators, 3 weight vectors and one x vector: the 16 ymm registers).
constexpr int64_t kRowPanel = 64;

__attribute__((target("avx2,fma"))) void MatMulBlockAvx2(const float* x, int64_t rows,
                                                         const float* w, int64_t o_begin,
                                                         int64_t o_end, int64_t k, int64_t outs,
                                                         float* y) {
  if (rows == 1) {
    // A single row: eight independent accumulators hide the FMA latency.
    int64_t o = o_begin;
    for (; o + 8 <= o_end; o += 8) TileAvx2<1, 8>(x, w + o * k, k, outs, y + o);
    for (; o < o_end; ++o) TileAvx2<1, 1>(x, w + o * k, k, outs, y + o);
    return;
  }
  for (int64_t p = 0; p < rows; p += kRowPanel) {
    const int64_t p_end = std::min(rows, p + kRowPanel);
    int64_t o = o_begin;
    for (; o + 3 <= o_end; o += 3) {
      int64_t t = p;
      for (; t + 4 <= p_end; t += 4)
        TileAvx2<4, 3>(x + t * k, w + o * k, k, outs, y + t * outs + o);
      for (; t < p_end; ++t) TileAvx2<1, 3>(x + t * k, w + o * k, k, outs, y + t * outs + o);
    }
    for (; o < o_end; ++o) {
      int64_t t = p;
      for (; t + 4 <= p_end; t += 4)
        TileAvx2<4, 1>(x + t * k, w + o * k, k, outs, y + t * outs + o);
      for (; t < p_end; ++t) TileAvx2<1, 1>(x + t * k, w + o * k, k, outs, y + t * outs + o);
    }
  }
}

// ---- AVX-512: the AVX2 kernel's arithmetic, two rows per register. ----
//
// A zmm register holds the 8 AVX2 lanes of row t in its low half and those of
// row t + 1 in its high half, so each half performs exactly the AVX2 kernel's
// operations and the result is the same bits, at twice the work per
// instruction. x is packed once per product into row pairs: pair p, block i
// (k = 8i .. 8i + 7) is 16 floats, row 2p's 8 then row 2p + 1's 8 (zeros past
// the last row).
void PackRowPairs(const float* x, int64_t rows, int64_t k, float* xp) {
  const int64_t k8 = k & ~int64_t{7};
  for (int64_t p = 0; p < (rows + 1) / 2; ++p) {
    for (int64_t i = 0; i < k8; i += 8) {
      float* dst = xp + (p * k8 + i) * 2;
      for (int h = 0; h < 2; ++h) {
        const int64_t t = 2 * p + h;
        for (int l = 0; l < 8; ++l) dst[8 * h + l] = t < rows ? x[t * k + i + l] : 0.0f;
      }
    }
  }
}

#pragma GCC diagnostic push
// GCC 12's AVX-512 headers self-initialise their "undefined" operands.
#pragma GCC diagnostic ignored "-Wuninitialized"
#ifndef __clang__
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

// TP row pairs x OO outputs: 24 accumulators, OO weight vectors, one x pair.
template <int TP, int OO>
__attribute__((target("avx512f,fma"))) inline void TileAvx512(const float* xp, const float* x,
                                                              int64_t rows_left, const float* w,
                                                              int64_t k, int64_t outs, float* y) {
  const int64_t k8 = k & ~int64_t{7};
  __m512 acc[TP][OO];
  for (int p = 0; p < TP; ++p) {
    for (int o = 0; o < OO; ++o) acc[p][o] = _mm512_setzero_ps();
  }
  for (int64_t kk = 0; kk < k8; kk += 8) {
    __m512 wv[OO];
    for (int o = 0; o < OO; ++o) {
      wv[o] = _mm512_castpd_ps(
          _mm512_broadcast_f64x4(_mm256_castps_pd(_mm256_loadu_ps(w + o * k + kk))));
    }
    for (int p = 0; p < TP; ++p) {
      const __m512 xv = _mm512_loadu_ps(xp + (p * k8 + kk) * 2);
      for (int o = 0; o < OO; ++o) acc[p][o] = _mm512_fmadd_ps(xv, wv[o], acc[p][o]);
    }
  }
  for (int p = 0; p < TP; ++p) {
    for (int h = 0; h < 2 && 2 * p + h < rows_left; ++h) {
      const int64_t t = 2 * p + h;
      for (int o = 0; o < OO; ++o) {
        const __m256 half =
            h == 0 ? _mm512_castps512_ps256(acc[p][o])
                   : _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[p][o]), 1));
        y[t * outs + o] = TailAvx2(SumLanesAvx2(half), x + t * k, w + o * k, k8, k);
      }
    }
  }
}
#pragma GCC diagnostic pop

template <int OO>
__attribute__((target("avx512f,fma"))) inline void PanelAvx512(const float* xp, const float* x,
                                                               int64_t rows, const float* w,
                                                               int64_t k, int64_t outs, float* y) {
  const int64_t k8 = k & ~int64_t{7};
  int64_t t = 0;
  for (; t + 8 <= rows; t += 8)
    TileAvx512<4, OO>(xp + t * k8, x + t * k, rows - t, w, k, outs, y + t * outs);
  for (; t < rows; t += 2)
    TileAvx512<1, OO>(xp + t * k8, x + t * k, rows - t, w, k, outs, y + t * outs);
}

__attribute__((target("avx512f,fma"))) void MatMulBlockAvx512(const float* xp, const float* x,
                                                              int64_t rows, const float* w,
                                                              int64_t o_begin, int64_t o_end,
                                                              int64_t k, int64_t outs, float* y) {
  const int64_t k8 = k & ~int64_t{7};
  for (int64_t p = 0; p < rows; p += kRowPanel) {
    const int64_t p_end = std::min(rows, p + kRowPanel);
    int64_t o = o_begin;
    for (; o + 6 <= o_end; o += 6)
      PanelAvx512<6>(xp + p * k8, x + p * k, p_end - p, w + o * k, k, outs, y + p * outs + o);
    for (; o < o_end; ++o)
      PanelAvx512<1>(xp + p * k8, x + p * k, p_end - p, w + o * k, k, outs, y + p * outs + o);
  }
}

__attribute__((target("avx2,fma"))) void AxpyAvx2(float alpha, const float* x, float* y,
                                                  int64_t n) {
  const __m256 a = _mm256_set1_ps(alpha);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(a, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  }
  for (; i < n; ++i) y[i] = std::fma(alpha, x[i], y[i]);
}

void AxpyPortable(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = std::fma(alpha, x[i], y[i]);
}

CpuIsa DetectIsa() {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return CpuIsa::kPortable;
  if (!__builtin_cpu_supports("avx512f")) return CpuIsa::kAvx2;
  return CpuIsa::kAvx512;
}

const CpuIsa kBestIsa = DetectIsa();

CpuIsa IsaFromEnvironment() {
  const char* want = std::getenv("KVTIER_CPU_ISA");
  if (want == nullptr || *want == '\0') return kBestIsa;
  for (CpuIsa isa : {CpuIsa::kPortable, CpuIsa::kAvx2, CpuIsa::kAvx512}) {
    if (std::strcmp(want, CpuIsaName(isa)) != 0) continue;
    if (isa <= kBestIsa) return isa;
    std::fprintf(stderr, "KVTIER_CPU_ISA=%s: this CPU lacks it; using %s\n", want,
                 CpuIsaName(kBestIsa));
    return kBestIsa;
  }
  std::fprintf(stderr, "KVTIER_CPU_ISA=%s: not one of portable, avx2, avx512; using %s\n", want,
               CpuIsaName(kBestIsa));
  return kBestIsa;
}

std::atomic<CpuIsa> g_isa{IsaFromEnvironment()};

bool UseAvx2() { return g_isa.load(std::memory_order_relaxed) != CpuIsa::kPortable; }

}  // namespace

const char* CpuIsaName(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512:
      return "avx512";
    case CpuIsa::kAvx2:
      return "avx2";
    case CpuIsa::kPortable:
      break;
  }
  return "portable";
}

CpuIsa CpuMathIsa() { return g_isa.load(std::memory_order_relaxed); }
CpuIsa CpuMathBestIsa() { return kBestIsa; }
CpuIsa SetCpuMathIsa(CpuIsa isa) { return g_isa.exchange(std::min(isa, kBestIsa)); }
bool CpuMathUsesAvx2() { return UseAvx2(); }

float Dot(const float* a, const float* b, int64_t n) {
  return UseAvx2() ? DotAvx2(a, b, n) : DotPortable(a, b, n);
}

void Axpy(float alpha, const float* x, float* y, int64_t n) {
  if (UseAvx2()) {
    AxpyAvx2(alpha, x, y, n);
  } else {
    AxpyPortable(alpha, x, y, n);
  }
}

void RmsNorm(const float* x, const float* weight, int64_t n, float eps, float* out) {
  float ss = 0.0f;
  for (int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
  const float scale = 1.0f / std::sqrt(ss / static_cast<float>(n) + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = weight[i] * (scale * x[i]);
}

void MatMulTransposed(const float* x, int64_t rows, const float* w, int64_t outs, int64_t k,
                      float* y, ThreadPool* pool) {
  if (rows <= 0 || outs <= 0) return;
  // AVX-512 pairs rows, so it serves products of two rows or more.
  const bool avx512 = rows >= 2 && CpuMathIsa() == CpuIsa::kAvx512;
  // The caller's buffer; the workers see it through xp (thread_local names
  // their own).
  thread_local std::vector<float> packed;
  const float* xp = nullptr;
  if (avx512) {
    packed.resize(static_cast<size_t>((rows + 1) / 2 * 2 * (k & ~int64_t{7})));
    PackRowPairs(x, rows, k, packed.data());
    xp = packed.data();
  }
  auto block = [&](int64_t o_begin, int64_t o_end) {
    if (avx512) {
      MatMulBlockAvx512(xp, x, rows, w, o_begin, o_end, k, outs, y);
    } else if (UseAvx2()) {
      MatMulBlockAvx2(x, rows, w, o_begin, o_end, k, outs, y);
    } else {
      MatMulBlockPortable(x, rows, w, o_begin, o_end, k, outs, y);
    }
  };
  // Small products run inline: waking the workers costs more than they save.
  const int64_t flops = rows * outs * k;
  if (pool == nullptr || pool->size() == 1 || flops < (int64_t{1} << 16)) {
    block(0, outs);
    return;
  }
  // Output blocks of a multiple of 24 rows of w (8 for one-row tiles, 3 for
  // four-row ones), several per thread so uneven threads balance.
  const int64_t per_task = std::max<int64_t>(24, (outs / (pool->size() * 4) + 23) / 24 * 24);
  const int64_t tasks = (outs + per_task - 1) / per_task;
  pool->ParallelFor(tasks,
                    [&](int64_t i) { block(i * per_task, std::min(outs, (i + 1) * per_task)); });
}

}  // namespace kvtier
