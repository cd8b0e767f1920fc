// Blocked causal attention on the CPU (flash-attention style): a task's
// queries share each tile of keys, staged once, with an online softmax. The
// kernel (cpu_attention_kernel.inc) is compiled three times, for AVX-512,
// AVX2 and portable C++, over a 16-lane vector type; every step is lane-wise
// so the three give the same bits, and the one chosen at start-up is only a
// matter of speed.
//
// What a query's result depends on: its own q, the keys and values at
// positions 0..pos, and the fixed tiling of those positions (tiles of
// kTileKeys from position 0). Not on the other queries of the task, on how
// the prompt was chunked, or on the CPU. So a token's attention output is the
// same in a prefill chunk, in a decode step and after a cache hit.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "model/cpu_attention.h"
#include "model/cpu_vec.h"

namespace kvtier {
namespace {

constexpr int kTileKeys = 32;  // keys per staged tile
constexpr int kTileVecs = kTileKeys / 16;
constexpr int kScoreRows = 4;  // queries scored together against a tile

// exp's constants (Cephes' expf). kExpMin keeps 2^n normal; below it the
// weight is under 2^-125 of the largest and is not worth a subnormal.
constexpr float kExpMin = -87.0f;
constexpr float kRoundMagic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f;
constexpr float kLn2Lo = -2.12194440e-4f;
constexpr float kExpC[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                            4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};

// std::fmax without a call into libm: the larger of a and b, or the one
// that is not NaN (for +0 and -0 either: nothing computed from a maximum
// here tells them apart).
__attribute__((always_inline)) inline float FMax(float a, float b) {
  return (a >= b || b != b) ? a : b;
}

// The scalar exp of the running max's rescale, in VExp's operations.
// Inlined into each instruction set's kernel, where std::fma is its FMA
// instruction (the same bits as libm's fmaf, without a call per query and
// tile through the PLT: 8 % of a 4K prefill's cycles).
__attribute__((always_inline)) inline float ExpScalar(float x) {
  x = FMax(x, kExpMin);
  const float n = (x * kLog2e + kRoundMagic) - kRoundMagic;
  float r = std::fma(n, -kLn2Hi, x);
  r = std::fma(n, -kLn2Lo, r);
  float p = kExpC[0];
  for (int i = 1; i < 6; ++i) p = std::fma(p, r, kExpC[i]);
  p = p * (r * r) + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// The running sum's 16 lanes, added in one fixed tree.
float SumSixteen(const float* v) {
  float h[8], q[4];
  for (int i = 0; i < 8; ++i) h[i] = v[i] + v[i + 8];
  for (int i = 0; i < 4; ++i) q[i] = h[i] + h[i + 4];
  return (q[0] + q[2]) + (q[1] + q[3]);
}

struct QueryState {
  float max = -INFINITY;
  float* sum = nullptr;  // 16 lanes of the running softmax denominator
  float* acc = nullptr;  // dims16 floats of the running output
};

// A thread's working memory: the staged tile (keys
// transposed, values padded to whole vectors), the scores of kScoreRows
// queries and every query's running state.
struct Scratch {
  float* kt = nullptr;      // [head_dim][kTileKeys]
  float* v = nullptr;       // [kTileKeys][dims16]
  float* scores = nullptr;  // [kScoreRows][kTileKeys]
  std::vector<QueryState> state;
  std::vector<float> mem;

  void Reserve(int queries, int head_dim, int dims16) {
    const size_t per_query = 16 + static_cast<size_t>(dims16);
    const size_t kt_size = static_cast<size_t>(head_dim) * kTileKeys;
    const size_t v_size = static_cast<size_t>(kTileKeys) * dims16;
    const size_t fixed = (kt_size + 15) / 16 * 16 + v_size + kScoreRows * kTileKeys;
    const size_t need = fixed + per_query * static_cast<size_t>(queries);
    if (mem.size() < need) mem.resize(need);
    kt = mem.data();
    v = kt + (kt_size + 15) / 16 * 16;
    scores = v + v_size;
    state.resize(static_cast<size_t>(queries));
    float* p = scores + kScoreRows * kTileKeys;
    for (QueryState& st : state) {
      st.sum = p;
      st.acc = p + 16;
      p += per_query;
    }
  }
};

// Copies keys k0 .. k0 + keys - 1 to kt and v: K transposed so that one
// vector load gives 16 keys' element d, V row by row with the padding zeroed.
// Key lanes past `keys` are zero (their scores are masked off anyway).
void StageKeys(const CausalAttention& a, int64_t k0, int keys, int dims16, float* kt, float* v) {
  const int hd = a.head_dim;
  if (keys < kTileKeys) std::fill_n(kt, static_cast<size_t>(hd) * kTileKeys, 0.0f);
  for (int j = 0; j < keys; ++j) {
    const int64_t t = k0 + j;
    const int64_t page = t / a.page_tokens, slot = t % a.page_tokens;
    const float* kr = a.k_pages[page] + slot * hd;
    const float* vr = a.v_pages[page] + slot * hd;
    for (int d = 0; d < hd; ++d) kt[d * kTileKeys + j] = kr[d];
    float* vs = v + static_cast<size_t>(j) * dims16;
    std::memcpy(vs, vr, sizeof(float) * static_cast<size_t>(hd));
    std::fill(vs + hd, vs + dims16, 0.0f);
  }
}

int Dims16(int head_dim) { return (head_dim + 15) / 16 * 16; }

// The tile starting at key k0 (keys of it up to the run's last position):
// pre-staged in a.staged, else staged into the scratch.
void TileOf(const CausalAttention& a, int64_t k0, int keys, int dims16, Scratch& sc,
            const float** kt, const float** v) {
  if (a.staged != nullptr) {
    *kt = a.staged + (k0 / kTileKeys) * StagedTileFloats(a.head_dim);
    *v = *kt + static_cast<size_t>(a.head_dim) * kTileKeys;
    return;
  }
  StageKeys(a, k0, keys, dims16, sc.kt, sc.v);
  *kt = sc.kt;
  *v = sc.v;
}

// kShareValues: the tile's value vectors are loaded once for kScoreRows
// queries (AVX-512's 32 registers hold their 16 accumulators; AVX2's 16 would
// spill). The same operations either way.
namespace portable {
using namespace cpu_vec::portable;
constexpr bool kShareValues = false;
#define KVT_TARGET
#include "model/cpu_attention_kernel.inc"
#undef KVT_TARGET
}  // namespace portable

namespace avx2 {
using namespace cpu_vec::avx2;
constexpr bool kShareValues = false;
#define KVT_TARGET KVT_TARGET_AVX2
#include "model/cpu_attention_kernel.inc"
#undef KVT_TARGET
}  // namespace avx2

KVT_AVX512_BEGIN
namespace avx512 {
using namespace cpu_vec::avx512;
constexpr bool kShareValues = true;
#define KVT_TARGET KVT_TARGET_AVX512
#include "model/cpu_attention_kernel.inc"
#undef KVT_TARGET
}  // namespace avx512
KVT_AVX512_END

}  // namespace

int64_t StagedTileFloats(int head_dim) {
  return static_cast<int64_t>(kTileKeys) * (head_dim + Dims16(head_dim));
}

int64_t StagedTiles(int64_t keys) { return (keys + kTileKeys - 1) / kTileKeys; }

void StageTile(const CausalAttention& a, int64_t keys, int64_t tile, float* out) {
  const int64_t k0 = tile * kTileKeys;
  const int n = static_cast<int>(std::min<int64_t>(kTileKeys, keys - k0));
  StageKeys(a, k0, n, Dims16(a.head_dim), out, out + static_cast<size_t>(a.head_dim) * kTileKeys);
}

const float* CausalAttention::Query(int i) const {
  return q + (i / heads) * q_stride + static_cast<int64_t>(i % heads) * head_dim;
}

float* CausalAttention::Out(int i) const {
  return out + (i / heads) * out_stride + static_cast<int64_t>(i % heads) * head_dim;
}

void AttendCausal(const CausalAttention& a) {
  if (a.tokens <= 0 || a.heads <= 0) return;
  thread_local Scratch scratch;
  switch (CpuMathIsa()) {
    case CpuIsa::kAmx:  // nothing of attention is bf16
    case CpuIsa::kAvx512Bf16:
    case CpuIsa::kAvx512:
      avx512::AttendCausalImpl(a, scratch);
      break;
    case CpuIsa::kAvx2:
      avx2::AttendCausalImpl(a, scratch);
      break;
    case CpuIsa::kPortable:
      portable::AttendCausalImpl(a, scratch);
      break;
  }
}

void CpuAttentionExpForTesting(CpuIsa isa, const float* x, float* out) {
  switch (isa) {
    case CpuIsa::kAmx:
    case CpuIsa::kAvx512Bf16:
    case CpuIsa::kAvx512:
      avx512::ExpLanes(x, out);
      break;
    case CpuIsa::kAvx2:
      avx2::ExpLanes(x, out);
      break;
    case CpuIsa::kPortable:
      portable::ExpLanes(x, out);
      break;
  }
}

float CpuAttentionScalarExpForTesting(float x) { return ExpScalar(x); }

}  // namespace kvtier
