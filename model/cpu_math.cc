#include "model/cpu_math.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/dtype_convert.h"
#include "model/cpu_matmul_amx.h"
#include "model/cpu_vec.h"
#include "model/thread_pool.h"

namespace kvtier {
namespace {

namespace portable {
using namespace cpu_vec::portable;
constexpr int kTileRows = 4;
constexpr int64_t kTilePanels = 1;
#define KVT_TARGET
#include "model/cpu_matmul_kernel.inc"
#include "model/cpu_rowwise_kernel.inc"
#undef KVT_TARGET
}  // namespace portable

// Two ymm per Vec: 6 rows x 1 panel is 12 accumulators of the 16 registers.
namespace avx2 {
using namespace cpu_vec::avx2;
constexpr int kTileRows = 6;
constexpr int64_t kTilePanels = 1;
#define KVT_TARGET KVT_TARGET_AVX2
#include "model/cpu_matmul_kernel.inc"
#include "model/cpu_rowwise_kernel.inc"
#undef KVT_TARGET
}  // namespace avx2

// 12 rows x 2 panels is 24 accumulators of the 32 zmm registers.
KVT_AVX512_BEGIN
namespace avx512 {
using namespace cpu_vec::avx512;
constexpr int kTileRows = 12;
constexpr int64_t kTilePanels = 2;
#define KVT_TARGET KVT_TARGET_AVX512
#include "model/cpu_matmul_kernel.inc"
#include "model/cpu_rowwise_kernel.inc"
#undef KVT_TARGET
}  // namespace avx512

// avx512's kernels with BF16 dot products in hardware.
namespace avx512bf16 {
using namespace cpu_vec::avx512;
using cpu_vec::avx512bf16::VDotBf16;
constexpr int kTileRows = 12;
constexpr int64_t kTilePanels = 2;
#define KVT_TARGET KVT_TARGET_AVX512BF16
#include "model/cpu_matmul_kernel.inc"

// PackRows for bf16 weights, 32 of k at a time by vcvtne2ps2bf16 instead of
// element by element (with the packing on the pool below, a 512 x 2048 x 2048
// bf16 product on a Zen 4 went from 0.87 to 0.91-0.94 of oneDNN's). The same
// layout and, for the product here, the same bits: it rounds to nearest even
// like FloatToBf16Bits and quiets NaNs the same way, but makes denormals zero.
// A denormal that rounds to a bf16 denormal is zero to vdpbf16ps anyway; the
// largest ones (|x| from 0x007f8000) round up to the smallest normal, 2^-126,
// so they are made that first (found by review).
KVT_TARGET inline __m512 RoundUpTopDenormals(__m512 v) {
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i mag = _mm512_and_si512(bits, _mm512_set1_epi32(0x7fffffff));
  const __mmask16 top = _mm512_cmpge_epi32_mask(mag, _mm512_set1_epi32(0x007f8000)) &
                        _mm512_cmplt_epi32_mask(mag, _mm512_set1_epi32(0x00800000));
  const __m512i normal = _mm512_or_si512(_mm512_and_si512(bits, _mm512_set1_epi32(INT32_MIN)),
                                         _mm512_set1_epi32(0x00800000));
  return _mm512_castsi512_ps(_mm512_mask_mov_epi32(bits, top, normal));
}

template <int R>
KVT_TARGET void PackTileBf16(const float* x, int64_t k, uint32_t* xp) {
  const int64_t steps = (k + 1) / 2;
  alignas(64) uint32_t words[R][16];
  for (int64_t j0 = 0; j0 < steps; j0 += 16) {
    const int64_t left = k - 2 * j0;  // floats of k from pair j0 on
    const __mmask16 lo_mask = left >= 16 ? 0xffff : static_cast<__mmask16>((1u << left) - 1);
    const __mmask16 hi_mask = left >= 32   ? 0xffff
                              : left <= 16 ? 0
                                           : static_cast<__mmask16>((1u << (left - 16)) - 1);
    for (int r = 0; r < R; ++r) {
      const float* row = x + r * k + 2 * j0;
      const __m512bh v =
          _mm512_cvtne2ps_pbh(RoundUpTopDenormals(_mm512_maskz_loadu_ps(hi_mask, row + 16)),
                              RoundUpTopDenormals(_mm512_maskz_loadu_ps(lo_mask, row)));
      _mm512_store_si512(words[r], reinterpret_cast<__m512i>(v));
    }
    const int n = static_cast<int>(std::min<int64_t>(16, steps - j0));
    for (int j = 0; j < n; ++j) {
      for (int r = 0; r < R; ++r) xp[(j0 + j) * R + r] = words[r][j];
    }
  }
}

KVT_TARGET void PackRowsBf16(const float* x, int64_t rows, int64_t k, uint32_t* xp) {
  const int64_t steps = (k + 1) / 2;
  int64_t t = 0;
  for (; t + kTileRows <= rows; t += kTileRows)
    PackTileBf16<kTileRows>(x + t * k, k, xp + t * steps);
  for (; t + 4 <= rows; t += 4) PackTileBf16<4>(x + t * k, k, xp + t * steps);
  for (; t < rows; ++t) PackTileBf16<1>(x + t * k, k, xp + t * steps);
}
#undef KVT_TARGET
}  // namespace avx512bf16
KVT_AVX512_END

CpuIsa DetectIsa() {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return CpuIsa::kPortable;
  if (!__builtin_cpu_supports("avx512f")) return CpuIsa::kAvx2;
  if (!__builtin_cpu_supports("avx512bf16")) return CpuIsa::kAvx512;
  return AmxUsable() ? CpuIsa::kAmx : CpuIsa::kAvx512Bf16;
}

const CpuIsa kBestIsa = DetectIsa();

CpuIsa IsaFromEnvironment() {
  const char* want = std::getenv("KVTIER_CPU_ISA");
  if (want == nullptr || *want == '\0') return kBestIsa;
  for (CpuIsa isa :
       {CpuIsa::kPortable, CpuIsa::kAvx2, CpuIsa::kAvx512, CpuIsa::kAvx512Bf16, CpuIsa::kAmx}) {
    if (std::strcmp(want, CpuIsaName(isa)) != 0) continue;
    if (isa <= kBestIsa) return isa;
    std::fprintf(stderr, "KVTIER_CPU_ISA=%s: this CPU lacks it; using %s\n", want,
                 CpuIsaName(kBestIsa));
    return kBestIsa;
  }
  std::fprintf(stderr,
               "KVTIER_CPU_ISA=%s: not one of portable, avx2, avx512, avx512bf16, amx; using %s\n",
               want, CpuIsaName(kBestIsa));
  return kBestIsa;
}

std::atomic<CpuIsa> g_isa{IsaFromEnvironment()};

}  // namespace

const char* CpuIsaName(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAmx:
      return "amx";
    case CpuIsa::kAvx512Bf16:
      return "avx512bf16";
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

PackedMatrix::PackedMatrix(const float* w, int64_t outs, int64_t k, WeightType type)
    : outs_(outs), k_(k), type_(type) {
  const int64_t panels = (outs + 15) / 16;
  if (type == WeightType::kF32) {
    f32_.assign(static_cast<size_t>(panels * 16 * k), 0.0f);
    for (int64_t o = 0; o < outs; ++o) {
      float* panel = f32_.data() + (o / 16) * k * 16 + o % 16;
      for (int64_t kk = 0; kk < k; ++kk) panel[kk * 16] = w[o * k + kk];
    }
    return;
  }
  const int64_t pairs = (k + 1) / 2;
  bf16_.assign(static_cast<size_t>(panels * 16 * pairs), 0u);
  for (int64_t o = 0; o < outs; ++o) {
    uint32_t* panel = bf16_.data() + (o / 16) * pairs * 16 + o % 16;
    for (int64_t j = 0; j < pairs; ++j) {
      const uint32_t lo = FloatToBf16Bits(w[o * k + 2 * j]);
      const uint32_t hi = 2 * j + 1 < k ? FloatToBf16Bits(w[o * k + 2 * j + 1]) : 0u;
      panel[j * 16] = lo | (hi << 16);
    }
  }
}

float Dot(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s = std::fma(a[i], b[i], s);
  return s;
}

void RmsNorm(const float* x, const float* weight, int64_t n, float eps, float* out) {
  float ss = 0.0f;
  for (int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
  const float scale = 1.0f / std::sqrt(ss / static_cast<float>(n) + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = weight[i] * (scale * x[i]);
}

void SwiGlu(const float* gate, const float* up, int64_t n, float* out) {
  switch (CpuMathIsa()) {
    case CpuIsa::kAmx:
    case CpuIsa::kAvx512Bf16:
    case CpuIsa::kAvx512:
      avx512::SwiGluImpl(gate, up, n, out);
      break;
    case CpuIsa::kAvx2:
      avx2::SwiGluImpl(gate, up, n, out);
      break;
    case CpuIsa::kPortable:
      portable::SwiGluImpl(gate, up, n, out);
      break;
  }
}

int64_t ArgMax(const float* x, int64_t n) {
  switch (CpuMathIsa()) {
    case CpuIsa::kAmx:
    case CpuIsa::kAvx512Bf16:
    case CpuIsa::kAvx512:
      return avx512::ArgMaxImpl(x, n);
    case CpuIsa::kAvx2:
      return avx2::ArgMaxImpl(x, n);
    case CpuIsa::kPortable:
      break;
  }
  return portable::ArgMaxImpl(x, n);
}

namespace {

// Rows packed by one thread at a time: a multiple of every set's register
// tile of rows, so a run starting at a multiple of it is packed where
// PackRows of all the rows puts it, whatever the set.
constexpr int64_t kPackRun = 12;
static_assert(kPackRun % portable::kTileRows == 0 && kPackRun % avx2::kTileRows == 0 &&
              kPackRun % avx512::kTileRows == 0 && kPackRun % avx512bf16::kTileRows == 0);

// The product on one instruction set, f32 or bf16 by the packed weights.
template <class Elem>
void MatMulOn(CpuIsa isa, const float* x, int64_t rows, const Elem* w, int64_t steps, int64_t k,
              int64_t outs, int64_t panels, float* y, ThreadPool* pool) {
  // x packed once by the caller; the workers see it through xp (a
  // thread_local named in the lambda would be each worker's own).
  thread_local AlignedVector<Elem> packed;
  packed.resize(static_cast<size_t>(rows * steps));
  Elem* xp = packed.data();
  // Rows r0 .. r1 - 1 packed where PackRows of all the rows puts them, when
  // r0 is a multiple of kPackRun.
  auto pack = [&](int64_t r0, int64_t r1) {
    const float* xr = x + r0 * k;
    Elem* out = xp + r0 * steps;
    switch (isa) {
      case CpuIsa::kAmx:
      case CpuIsa::kAvx512Bf16:
        if constexpr (std::is_same_v<Elem, float>) {
          avx512::PackRows(xr, r1 - r0, k, out);
        } else {
          avx512bf16::PackRowsBf16(xr, r1 - r0, k, out);
        }
        break;
      case CpuIsa::kAvx512:
        avx512::PackRows(xr, r1 - r0, k, out);
        break;
      case CpuIsa::kAvx2:
        avx2::PackRows(xr, r1 - r0, k, out);
        break;
      case CpuIsa::kPortable:
        portable::PackRows(xr, r1 - r0, k, out);
        break;
    }
  };
  const int64_t threads = pool == nullptr ? 1 : pool->size();
  const int64_t runs = rows / kPackRun;
  if (threads > 1 && runs >= 2 * threads && rows * k >= (int64_t{1} << 16)) {
    // Packed on every thread (one thread packing while the others waited
    // was a visible part of a prefill chunk's product), in whole runs, the
    // rows past the last whole run with the last thread's.
    pool->ParallelFor(threads, [&](int64_t i) {
      const int64_t r0 = runs * i / threads * kPackRun;
      const int64_t r1 = i + 1 == threads ? rows : runs * (i + 1) / threads * kPackRun;
      if (r0 < r1) pack(r0, r1);
    });
  } else {
    pack(0, rows);
  }
  auto block = [&](int64_t p_begin, int64_t p_end) {
    auto run = [&](auto f32, auto bf16) {
      if constexpr (std::is_same_v<Elem, float>) {
        f32(xp, rows, w, steps, outs, p_begin, p_end, y);
      } else {
        bf16(xp, rows, w, steps, outs, p_begin, p_end, y);
      }
    };
    switch (isa) {
      case CpuIsa::kAmx:
      case CpuIsa::kAvx512Bf16:
        run(avx512bf16::MatMulF32, avx512bf16::MatMulBf16);
        break;
      case CpuIsa::kAvx512:
        run(avx512::MatMulF32, avx512::MatMulBf16);
        break;
      case CpuIsa::kAvx2:
        run(avx2::MatMulF32, avx2::MatMulBf16);
        break;
      case CpuIsa::kPortable:
        run(portable::MatMulF32, portable::MatMulBf16);
        break;
    }
  };
  // Small products run inline: waking the workers costs more than they save.
  const int64_t flops = rows * outs * k;
  if (pool == nullptr || pool->size() == 1 || flops < (int64_t{1} << 16)) {
    block(0, panels);
    return;
  }
  // Blocks of a multiple of 4 panels (a tile's width), several per thread so
  // uneven threads balance.
  const int64_t per_task = std::max<int64_t>(4, (panels / (pool->size() * 4) + 3) / 4 * 4);
  const int64_t tasks = (panels + per_task - 1) / per_task;
  pool->ParallelFor(tasks,
                    [&](int64_t i) { block(i * per_task, std::min(panels, (i + 1) * per_task)); });
}

// A core's L2 in bytes (1 MiB where the system does not say).
int64_t L2Bytes() {
  static const int64_t bytes = [] {
    const long b = sysconf(_SC_LEVEL2_CACHE_SIZE);
    return b > 0 ? static_cast<int64_t>(b) : int64_t{1} << 20;
  }();
  return bytes;
}

// bf16 weights on AMX tiles (k a multiple of 32), split over the threads
// the way that keeps each one's reads in its own L2: when a block of k of
// every panel fits in half of it and x is at least half the weights' size
// (a prefill chunk through a small matrix), by runs of 32 rows, each thread
// packing its own rows and reading every panel; otherwise (decode, large
// matrices) by runs of panels (an even number), each thread reading its
// panels once and x, packed by all threads first. Either way each element
// is the same chain over k.
void MatMulAmx(const float* x, int64_t rows, const PackedMatrix& w, float* y, ThreadPool* pool) {
  const int64_t k = w.k(), pairs = k / 2, panels = w.panels(), outs = w.outs();
  const int64_t threads = pool == nullptr ? 1 : pool->size();
  thread_local AlignedVector<uint32_t> packed;  // x, packed (the caller's)
  if (threads == 1 || rows * outs * k < (int64_t{1} << 16)) {
    packed.resize(static_cast<size_t>((rows + 15) / 16 * 16 * pairs));
    PackRowsAmx(x, rows, k, packed.data());
    MatMulAmxBf16(packed.data(), rows, w.bf16(), pairs, outs, 0, panels, y);
    return;
  }
  const int64_t runs = (rows + 31) / 32;
  const int64_t panel_block_bytes = std::min(pairs, kAmxPairsPerBlock) * 64;
  if (2 * rows >= outs && runs >= threads && panels * panel_block_bytes <= L2Bytes() / 2) {
    pool->ParallelFor(threads, [&](int64_t i) {
      const int64_t r0 = runs * i / threads * 32,
                    r1 = std::min(rows, runs * (i + 1) / threads * 32);
      if (r0 >= r1) return;
      thread_local AlignedVector<uint32_t> own;  // this thread's rows, packed
      own.resize(static_cast<size_t>((r1 - r0 + 15) / 16 * 16 * pairs));
      PackRowsAmx(x + r0 * k, r1 - r0, k, own.data());
      MatMulAmxBf16(own.data(), r1 - r0, w.bf16(), pairs, outs, 0, panels, y + r0 * outs);
    });
    return;
  }
  const int64_t blocks = (rows + 15) / 16;
  packed.resize(static_cast<size_t>(blocks * 16 * pairs));
  uint32_t* xp = packed.data();
  if (blocks == 1) {
    PackRowsAmx(x, rows, k, xp);
  } else {
    pool->ParallelFor(threads, [&](int64_t i) {
      const int64_t r0 = blocks * i / threads * 16,
                    r1 = std::min(rows, blocks * (i + 1) / threads * 16);
      if (r0 < r1) PackRowsAmx(x + r0 * k, r1 - r0, k, xp + r0 * pairs);
    });
  }
  pool->ParallelFor(threads, [&](int64_t i) {
    const int64_t p0 = panels * i / threads / 2 * 2;
    const int64_t p1 = i + 1 == threads ? panels : panels * (i + 1) / threads / 2 * 2;
    if (p0 < p1) MatMulAmxBf16(xp, rows, w.bf16(), pairs, outs, p0, p1, y);
  });
}

}  // namespace

void MatMul(const float* x, int64_t rows, const PackedMatrix& w, float* y, ThreadPool* pool) {
  if (rows <= 0 || w.panels() == 0) return;
  if (w.type() == WeightType::kF32) {
    MatMulOn(CpuMathIsa(), x, rows, w.f32(), w.k(), w.k(), w.outs(), w.panels(), y, pool);
  } else if (CpuMathIsa() == CpuIsa::kAmx && w.k() % 32 == 0) {
    MatMulAmx(x, rows, w, y, pool);
  } else {
    MatMulOn(CpuMathIsa(), x, rows, w.bf16(), (w.k() + 1) / 2, w.k(), w.outs(), w.panels(), y,
             pool);
  }
}

void MatMulTransposed(const float* x, int64_t rows, const float* w, int64_t outs, int64_t k,
                      float* y, ThreadPool* pool) {
  MatMul(x, rows, PackedMatrix(w, outs, k), y, pool);
}

}  // namespace kvtier
