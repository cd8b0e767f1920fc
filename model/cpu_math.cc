#include "model/cpu_math.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>

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

// run.c's softmax in place: max, then exp and the sum in order, then the
// normalised weights.
void SoftmaxInPlace(float* scores, int64_t n) {
  float max = scores[0];
  for (int64_t t = 1; t < n; ++t) max = std::max(max, scores[t]);
  float sum = 0.0f;
  for (int64_t t = 0; t < n; ++t) {
    scores[t] = std::exp(scores[t] - max);
    sum += scores[t];
  }
  for (int64_t t = 0; t < n; ++t) scores[t] = scores[t] / sum;
}

inline const float* Row(const float* const* pages, int64_t t, int page_tokens, int head_dim) {
  return pages[t / page_tokens] + (t % page_tokens) * head_dim;
}

// Attention with a given dot product and axpy: scores, softmax, weighted sum.
void AttendWith(float (*dot)(const float*, const float*, int64_t),
                void (*axpy)(float, const float*, float*, int64_t), const float* q,
                const float* const* k_pages, const float* const* v_pages, int64_t n,
                int page_tokens, int head_dim, float scale, float* scores, float* out) {
  for (int64_t t = 0; t < n; ++t) {
    scores[t] = dot(q, Row(k_pages, t, page_tokens, head_dim), head_dim) * scale;
  }
  SoftmaxInPlace(scores, n);
  std::fill_n(out, head_dim, 0.0f);
  for (int64_t t = 0; t < n; ++t)
    axpy(scores[t], Row(v_pages, t, page_tokens, head_dim), out, head_dim);
}

__attribute__((target("avx2,fma"))) void AttendAvx2(const float* q, const float* const* k_pages,
                                                    const float* const* v_pages, int64_t n,
                                                    int page_tokens, int head_dim, float scale,
                                                    float* scores, float* out) {
  if (head_dim % 8 != 0 || head_dim > 128) {
    AttendWith(DotAvx2, AxpyAvx2, q, k_pages, v_pages, n, page_tokens, head_dim, scale, scores,
               out);
    return;
  }
  // The same operations as DotAvx2 and AxpyAvx2, inlined, with the query and
  // the output held in registers across all keys.
  const int vecs = head_dim / 8;
  __m256 qv[16], acc[16];
  for (int j = 0; j < vecs; ++j) {
    qv[j] = _mm256_loadu_ps(q + 8 * j);
    acc[j] = _mm256_setzero_ps();
  }
  for (int64_t t = 0; t < n; ++t) {
    const float* k = Row(k_pages, t, page_tokens, head_dim);
    __m256 s = _mm256_setzero_ps();
    for (int j = 0; j < vecs; ++j) s = _mm256_fmadd_ps(qv[j], _mm256_loadu_ps(k + 8 * j), s);
    scores[t] = SumLanesAvx2(s) * scale;
  }
  SoftmaxInPlace(scores, n);
  for (int64_t t = 0; t < n; ++t) {
    const float* v = Row(v_pages, t, page_tokens, head_dim);
    const __m256 p = _mm256_set1_ps(scores[t]);
    for (int j = 0; j < vecs; ++j) acc[j] = _mm256_fmadd_ps(p, _mm256_loadu_ps(v + 8 * j), acc[j]);
  }
  for (int j = 0; j < vecs; ++j) _mm256_storeu_ps(out + 8 * j, acc[j]);
}

bool DetectAvx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

const bool kAvx2 = DetectAvx2();

}  // namespace

bool CpuMathUsesAvx2() { return kAvx2; }

void AttendOneQuery(const float* q, const float* const* k_pages, const float* const* v_pages,
                    int64_t n, int page_tokens, int head_dim, float scale, float* scores,
                    float* out) {
  if (kAvx2) {
    AttendAvx2(q, k_pages, v_pages, n, page_tokens, head_dim, scale, scores, out);
  } else {
    AttendWith(DotPortable, AxpyPortable, q, k_pages, v_pages, n, page_tokens, head_dim, scale,
               scores, out);
  }
}

float Dot(const float* a, const float* b, int64_t n) {
  return kAvx2 ? DotAvx2(a, b, n) : DotPortable(a, b, n);
}

void Axpy(float alpha, const float* x, float* y, int64_t n) {
  if (kAvx2) {
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
  auto block = [&](int64_t o_begin, int64_t o_end) {
    if (kAvx2) {
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
