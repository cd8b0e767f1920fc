#include "model/cpu_math.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

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
#undef KVT_TARGET
}  // namespace portable

// Two ymm per Vec: 6 rows x 1 panel is 12 accumulators of the 16 registers.
namespace avx2 {
using namespace cpu_vec::avx2;
constexpr int kTileRows = 6;
constexpr int64_t kTilePanels = 1;
#define KVT_TARGET KVT_TARGET_AVX2
#include "model/cpu_matmul_kernel.inc"
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
#undef KVT_TARGET
}  // namespace avx512
KVT_AVX512_END

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

PackedMatrix::PackedMatrix(const float* w, int64_t outs, int64_t k)
    : outs_(outs), k_(k), data_(static_cast<size_t>((outs + 15) / 16 * 16 * k), 0.0f) {
  for (int64_t o = 0; o < outs; ++o) {
    float* panel = data_.data() + (o / 16) * k * 16 + o % 16;
    for (int64_t kk = 0; kk < k; ++kk) panel[kk * 16] = w[o * k + kk];
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

void MatMul(const float* x, int64_t rows, const PackedMatrix& w, float* y, ThreadPool* pool) {
  const int64_t panels = w.panels(), k = w.k(), outs = w.outs();
  if (rows <= 0 || panels == 0) return;
  const CpuIsa isa = CpuMathIsa();
  // x packed once by the caller; the workers see it through xp (a
  // thread_local named in the lambda would be each worker's own).
  thread_local std::vector<float> packed;
  packed.resize(static_cast<size_t>(rows * k));
  const float* xp = packed.data();
  switch (isa) {
    case CpuIsa::kAvx512:
      avx512::PackRows(x, rows, k, packed.data());
      break;
    case CpuIsa::kAvx2:
      avx2::PackRows(x, rows, k, packed.data());
      break;
    case CpuIsa::kPortable:
      portable::PackRows(x, rows, k, packed.data());
      break;
  }
  auto block = [&](int64_t p_begin, int64_t p_end) {
    switch (isa) {
      case CpuIsa::kAvx512:
        avx512::MatMulPanels(xp, rows, w.data(), k, outs, p_begin, p_end, y);
        break;
      case CpuIsa::kAvx2:
        avx2::MatMulPanels(xp, rows, w.data(), k, outs, p_begin, p_end, y);
        break;
      case CpuIsa::kPortable:
        portable::MatMulPanels(xp, rows, w.data(), k, outs, p_begin, p_end, y);
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

void MatMulTransposed(const float* x, int64_t rows, const float* w, int64_t outs, int64_t k,
                      float* y, ThreadPool* pool) {
  MatMul(x, rows, PackedMatrix(w, outs, k), y, pool);
}

}  // namespace kvtier
