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
//
// bf16 (the bf16 namespace below: products on AMX tiles, or by vdpbf16ps
// where there is no AMX) keeps that: each row of an AMX product is a
// function of its own row of A, and each lane of a vdpbf16ps chain its own,
// so a query's scores and weighted values do not depend on the other queries
// sharing its tiles.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "model/cpu_attention.h"
#include "model/cpu_matmul_amx.h"
#include "model/cpu_vec.h"

namespace kvtier {
namespace {

constexpr int kTileKeys = kAttentionTileKeys;
constexpr int kTileVecs = kTileKeys / 16;
constexpr int kScoreRows = 4;  // queries scored together against a tile

using cpu_vec::kExpC;
using cpu_vec::kExpMin;
using cpu_vec::kLn2Hi;
using cpu_vec::kLn2Lo;
using cpu_vec::kLog2e;
using cpu_vec::kRoundMagic;

// std::fmax without a call into libm: the larger of a and b, or the one
// that is not NaN (for +0 and -0 either: nothing computed from a maximum
// here tells them apart).
__attribute__((always_inline)) inline float FMax(float a, float b) {
  return (a >= b || b != b) ? a : b;
}

// The scalar exp of the running max's rescale, in VExp's operations
// (cpu_vec_exp.inc), for x <= 0.
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

// Floats per staged tile of the f32 kernel: K transposed, then V padded.
int64_t F32TileFloats(int head_dim) {
  return static_cast<int64_t>(kTileKeys) * (head_dim + Dims16(head_dim));
}

// The tile of `a` staged beforehand that starts at key k0, or null; and
// where the run is to stage it if not (null: its scratch).
const float* StagedTile(const CausalAttention& a, int64_t k0) {
  return a.tiles == nullptr ? nullptr : a.tiles[k0 / kTileKeys];
}
float* StageInto(const CausalAttention& a, int64_t k0) {
  return a.stage_into == nullptr ? nullptr : a.stage_into[k0 / kTileKeys];
}

// The tile starting at key k0 (keys of it up to the run's last position):
// pre-staged (a.tiles), else staged into the scratch.
void TileOf(const CausalAttention& a, int64_t k0, int keys, int dims16, Scratch& sc,
            const float** kt, const float** v) {
  if (const float* staged = StagedTile(a, k0); staged != nullptr) {
    *kt = staged;
    *v = *kt + static_cast<size_t>(a.head_dim) * kTileKeys;
    return;
  }
  if (float* into = StageInto(a, k0); into != nullptr) {
    StageKeys(a, k0, keys, dims16, into, into + static_cast<size_t>(a.head_dim) * kTileKeys);
    *kt = into;
    *v = into + static_cast<size_t>(a.head_dim) * kTileKeys;
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

// bf16 attention (CausalAttention::bf16 where the set is amx or avx512bf16),
// described for AMX tiles; KeyBlockVec below is the same with vdpbf16ps.
// Queries in blocks of 16 (a 16-row A tile, padded with zero rows), two
// blocks at a time; keys in blocks of 128 from position 0 (four staged tiles
// of 32). Per pair of query blocks and block of keys: the scores S = Q K^T
// (per 32 keys, 2 x 2 C tiles over head_dim / 32 steps) stored as f32; one
// online-softmax step per query over its 128 scores; the weights P rounded
// to bf16 as A tiles (32 keys = 16 pairs each); P V (C tiles carrying the
// sum over the four tiles of keys) stored and folded into each query's
// output by fma(out, rescale, P V). Whole blocks of 128 keys keep the AMX
// unit busy between the round trips through memory (tile stores read by
// vectors, vector stores read by tile loads) and spread each query's
// per-step work (max, rescale) over 128 keys.
//
// Staged layout of a 32-key tile (uint32 words, each a pair of bf16, the
// lower element in the low half): K as B tiles [head_dim / 32][2] of 16
// pairs of dims x 16 keys, then V as B tiles [head_dim / 16] of 16 pairs of
// keys x 16 dims.
namespace bf16 {
using namespace cpu_vec::avx512;

// The staging, the softmax and the vector products need AVX-512 BF16 only;
// the tile products AMX too.
#define KVT_TARGET_BF16 __attribute__((target("avx512f,fma,avx512bf16")))
#define KVT_TARGET_AMX __attribute__((target("avx512f,fma,avx512bf16,amx-tile,amx-bf16")))

constexpr int kRows = 16;       // queries per A tile
constexpr int kBlockTiles = 4;  // 32-key tiles per softmax step
constexpr int kBlockKeys = kBlockTiles * kTileKeys;

int64_t TileWords(int head_dim) { return int64_t{kTileKeys} * head_dim; }

// m[j][i] = m[i][j] for 16 vectors of 16 words: interleaves of 32 and 64
// bits within 128-bit lanes, then a 4 x 4 transpose of the lanes.
KVT_TARGET_BF16 inline void Transpose16(__m512i* m) {
  __m512i b[16], c[16];
  for (int k = 0; k < 16; k += 2) {
    b[k] = _mm512_unpacklo_epi32(m[k], m[k + 1]);
    b[k + 1] = _mm512_unpackhi_epi32(m[k], m[k + 1]);
  }
  for (int k = 0; k < 16; k += 4) {
    c[k] = _mm512_unpacklo_epi64(b[k], b[k + 2]);
    c[k + 1] = _mm512_unpackhi_epi64(b[k], b[k + 2]);
    c[k + 2] = _mm512_unpacklo_epi64(b[k + 1], b[k + 3]);
    c[k + 3] = _mm512_unpackhi_epi64(b[k + 1], b[k + 3]);
  }
  // c[4 g + e], lane l: column 4 l + e of rows 4 g .. 4 g + 3.
  for (int e = 0; e < 4; ++e) {
    const __m512i d0 = _mm512_shuffle_i32x4(c[e], c[4 + e], 0x44);
    const __m512i d1 = _mm512_shuffle_i32x4(c[e], c[4 + e], 0xEE);
    const __m512i d2 = _mm512_shuffle_i32x4(c[8 + e], c[12 + e], 0x44);
    const __m512i d3 = _mm512_shuffle_i32x4(c[8 + e], c[12 + e], 0xEE);
    m[e] = _mm512_shuffle_i32x4(d0, d2, 0x88);
    m[4 + e] = _mm512_shuffle_i32x4(d0, d2, 0xDD);
    m[8 + e] = _mm512_shuffle_i32x4(d1, d3, 0x88);
    m[12 + e] = _mm512_shuffle_i32x4(d1, d3, 0xDD);
  }
}

// Keys k0 .. k0 + keys - 1 in the staged layout, the rest of the tile zero.
KVT_TARGET_BF16 void Stage(const CausalAttention& a, int64_t k0, int keys, uint32_t* out) {
  const int hd = a.head_dim;
  uint32_t* const kt = out;
  uint32_t* const vt = out + TileWords(hd) / 2;
  if (keys < kTileKeys) std::memset(out, 0, sizeof(uint32_t) * static_cast<size_t>(TileWords(hd)));
  auto at = [&](int64_t t, const float* const* pages) {
    return pages[t / a.page_tokens] + (t % a.page_tokens) * hd;
  };
  // K tile (b, half): row j holds pair j of dims 32 b .. 32 b + 31 for keys
  // 16 half .. 16 half + 15, the transpose of those keys' rows of pairs.
  for (int half = 0; 16 * half < keys; ++half) {
    const int n = std::min(16, keys - 16 * half);
    for (int b = 0; b < hd / 32; ++b) {
      __m512i m[16];
      for (int i = 0; i < 16; ++i) {
        if (i >= n) {
          m[i] = _mm512_setzero_si512();
          continue;
        }
        const float* kr = at(k0 + 16 * half + i, a.k_pages) + 32 * b;
        m[i] = reinterpret_cast<__m512i>(
            _mm512_cvtne2ps_pbh(_mm512_loadu_ps(kr + 16), _mm512_loadu_ps(kr)));
      }
      Transpose16(m);
      uint32_t* tile = kt + (2 * b + half) * 256;
      for (int j = 0; j < 16; ++j) _mm512_storeu_si512(tile + 16 * j, m[j]);
    }
  }
  for (int j = 0; 2 * j < keys; ++j) {
    // Keys 2j and 2j + 1 interleaved: row j of each V tile.
    const float* v0 = at(k0 + 2 * j, a.v_pages);
    const float* v1 = 2 * j + 1 < keys ? at(k0 + 2 * j + 1, a.v_pages) : nullptr;
    for (int c = 0; c < hd / 16; ++c) {
      const __m512i lo = _mm512_cvtepu16_epi32(
          reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(_mm512_loadu_ps(v0 + 16 * c))));
      const __m512i hi = v1 == nullptr ? _mm512_setzero_si512()
                                       : _mm512_cvtepu16_epi32(reinterpret_cast<__m256i>(
                                             _mm512_cvtneps_pbh(_mm512_loadu_ps(v1 + 16 * c))));
      _mm512_storeu_si512(vt + c * 256 + j * 16, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
    }
  }
}

struct Scratch {
  AlignedVector<uint32_t> q;      // the queries as A tiles: [block][head_dim / 32][16 x 16]
  AlignedVector<uint32_t> tiles;  // a block of keys' staged tiles
  AlignedVector<float> s;         // two query blocks' scores [32][128]
  AlignedVector<uint32_t> p;      // their weights as A tiles [2][4][16 x 16 pairs]
  AlignedVector<float> pv;        // their weighted values [32][head_dim]
  AlignedVector<float> acc;       // each query's output so far [queries][head_dim]
  AlignedVector<float> sum;       // each query's 16-lane running sum
  std::vector<float> max;         // each query's running max
};

constexpr float kLn2 = 0.693147180559945309f;

// 2^x for the softmax's weights, which are rounded to bf16 (8 significant
// bits) right after (the scores are in log2 units: q is scaled by
// scale * log2e before its rounding, Attend). x = n + r, |r| <= 1/2, exact;
// 2^r = e^(r ln2) by the degree-4 Taylor polynomial in r ln2 (relative
// error under (ln2 / 2)^5 / 120 e^(ln2 / 2) < 7e-5, 4 % of half a bf16
// ulp), times 2^n. x below -125 counts as -125 (2^n stays normal).
// Lane-wise.
KVT_TARGET_BF16 inline Vec Exp2ForBf16(Vec x) {
  constexpr float kC1 = kLn2, kC2 = kC1 * kLn2 / 2, kC3 = kC2 * kLn2 / 3, kC4 = kC3 * kLn2 / 4;
  x = VMax(x, VSet1(-125.0f));
  const Vec n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const Vec r = VSub(x, n);
  Vec p = VFma(VSet1(kC4), r, VSet1(kC3));
  p = VFma(p, r, VSet1(kC2));
  p = VFma(p, r, VSet1(kC1));
  p = VFma(p, r, VSet1(1.0f));
  return VScale2i(p, n);
}

KVT_TARGET_BF16 void Exp2Lanes(const float* x, float* out) { VStore(out, Exp2ForBf16(VLoad(x))); }

// One query's online-softmax step over its scores sr (a row of `tiles`
// tiles of 32 keys, the first `valid` counting; kTiles > 0: that many, all
// valid, the masks left out, which changes no bit): the running max and
// 16-lane sum, the weights to bf16 at pr (row of A tile t at pr + 256 t).
// Returns the rescale of the output so far.
template <int kTiles, bool kMasked>
KVT_TARGET_BF16 inline float SoftmaxRow(const float* sr, int valid, float& max, float* sum,
                                        uint32_t* pr, int tiles = kTiles) {
  if constexpr (kTiles > 0) tiles = kTiles;
  Vec sv[2 * kBlockTiles];
  Vec mx = VSet1(-INFINITY);
  for (int j = 0; j < 2 * tiles; ++j) {
    sv[j] = VLoad(sr + 16 * j);
    if constexpr (kMasked) sv[j] = VFirst(valid - 16 * j, sv[j], VSet1(-INFINITY));
    mx = VMax(mx, sv[j]);
  }
  const float m_new = FMax(max, VHMax(mx));
  // ExpScalar(0) is 1 exactly: an unchanged max skips it, same bits.
  const float alpha = max == -INFINITY ? 0.0f
                      : m_new == max   ? 1.0f
                                       : ExpScalar((max - m_new) * kLn2);
  max = m_new;
  const Vec vm = VSet1(m_new);
  Vec l = VMul(VLoad(sum), VSet1(alpha));
  for (int t = 0; t < tiles; ++t) {
    Vec p0 = Exp2ForBf16(VSub(sv[2 * t], vm));
    Vec p1 = Exp2ForBf16(VSub(sv[2 * t + 1], vm));
    if constexpr (kMasked) {
      p0 = VFirst(valid - 32 * t, p0, VZero());
      p1 = VFirst(valid - 32 * t - 16, p1, VZero());
    }
    l = VAdd(VAdd(l, p0), p1);
    _mm512_storeu_si512(pr + t * 256, reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(p1, p0)));
  }
  VStore(sum, l);
  return alpha;
}

// The online softmax of queries i0 .. i0 + n - 1 (a block's rows, scored
// in sc.s) over keys k0 .. (`tiles` tiles), query by query; the weights to
// bf16, row r % 16 of A tile (r / 16, t) for keys 32 t .. 32 t + 31 (zero
// for a query that sees none of these keys). alpha[r]: the rescale of the
// output so far; active[r]: whether the query sees any of these keys.
KVT_TARGET_BF16 void SoftmaxStep(const CausalAttention& a, int64_t k0, int tiles, int i0, int n,
                                 Scratch& sc, float* alpha, bool* active) {
  for (int r = 0; r < n; ++r) {
    const int i = i0 + r;
    const int64_t pos = a.first_pos + i / a.heads;
    const int valid = static_cast<int>(std::min<int64_t>(kBlockKeys, pos + 1 - k0));
    uint32_t* pr = sc.p.data() + (r / kRows) * kBlockTiles * 256 + (r % kRows) * 16;
    active[r] = valid > 0;
    if (!active[r]) {
      for (int t = 0; t < tiles; ++t) _mm512_storeu_si512(pr + t * 256, _mm512_setzero_si512());
      continue;
    }
    float* sum = sc.sum.data() + i * 16;
    float& max = sc.max[static_cast<size_t>(i)];
    const float* sr = sc.s.data() + r * kBlockKeys;
    alpha[r] = valid == kBlockKeys ? SoftmaxRow<kBlockTiles, false>(sr, valid, max, sum, pr)
                                   : SoftmaxRow<0, true>(sr, valid, max, sum, pr, tiles);
  }
}

// Each active query's output so far becomes fma(out, rescale, weighted
// values) (sc.pv, row r for query i0 + r).
KVT_TARGET_BF16 void Fold(const CausalAttention& a, int i0, int n, Scratch& sc, const float* alpha,
                          const bool* active) {
  const int hd = a.head_dim;
  for (int r = 0; r < n; ++r) {
    if (!active[r]) continue;
    float* acc = sc.acc.data() + static_cast<size_t>(i0 + r) * hd;
    const float* pr = sc.pv.data() + static_cast<size_t>(r) * hd;
    const Vec va = VSet1(alpha[r]);
    for (int c = 0; c < hd; c += 16) VStore(acc + c, VFma(VLoad(acc + c), va, VLoad(pr + c)));
  }
}

// Query blocks b .. b + RB - 1 against the `tiles` staged tiles of 32 keys
// at kt[0..tiles) (keys k0 ..): scores, the online-softmax step, weighted
// values.
template <int RB>
KVT_TARGET_AMX void KeyBlock(const CausalAttention& a, int64_t k0, const uint32_t* const* kt,
                             int tiles, int b, Scratch& sc) {
  const int hd = a.head_dim, dblocks = hd / 32;
  const int queries = a.tokens * a.heads;
  const int64_t block_words = int64_t{dblocks} * 256, tile_words = TileWords(hd);
  const int i0 = b * kRows, n = std::min(RB * kRows, queries - i0);
  float* const s = sc.s.data();
  constexpr int64_t s_stride = kBlockKeys * 4;  // bytes between rows of s
  // Scores, per tile of keys: C tile 2 rb + half; the query blocks in A
  // tiles 4 + rb, the keys' halves in B tiles 6 and 7.
  const uint32_t* qb = sc.q.data() + b * block_words;
  for (int t = 0; t < tiles; ++t) {
    const uint32_t* k = kt[t];
    _tile_zero(0);
    _tile_zero(1);
    if constexpr (RB > 1) {
      _tile_zero(2);
      _tile_zero(3);
    }
    for (int d = 0; d < dblocks; ++d) {
      _tile_loadd(6, k + (2 * d) * 256, 64);
      _tile_loadd(7, k + (2 * d + 1) * 256, 64);
      _tile_loadd(4, qb + d * 256, 64);
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(1, 4, 7);
      if constexpr (RB > 1) {
        _tile_loadd(5, qb + block_words + d * 256, 64);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      }
    }
    float* st = s + t * kTileKeys;
    _tile_stored(0, st, s_stride);
    _tile_stored(1, st + 16, s_stride);
    if constexpr (RB > 1) {
      _tile_stored(2, st + kRows * kBlockKeys, s_stride);
      _tile_stored(3, st + kRows * kBlockKeys + 16, s_stride);
    }
  }
  float alpha[RB * kRows];
  bool active[RB * kRows];
  SoftmaxStep(a, k0, tiles, i0, n, sc, alpha, active);
  // Weighted values, 32 dims at a time: C tile 2 rb + half carries the sum
  // over the tiles of keys; the weights in A tiles 4 + rb, the values' dims
  // in B tiles 6 and 7.
  float* const pv = sc.pv.data();
  const int64_t pv_stride = int64_t{hd} * 4;  // bytes
  const uint32_t* p0 = sc.p.data();
  const uint32_t* p1 = p0 + kBlockTiles * 256;
  for (int c = 0; c < hd / 16; c += 2) {
    _tile_zero(0);
    _tile_zero(1);
    if constexpr (RB > 1) {
      _tile_zero(2);
      _tile_zero(3);
    }
    for (int t = 0; t < tiles; ++t) {
      const uint32_t* v = kt[t] + tile_words / 2;
      _tile_loadd(4, p0 + t * 256, 64);
      _tile_loadd(6, v + c * 256, 64);
      _tile_loadd(7, v + (c + 1) * 256, 64);
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(1, 4, 7);
      if constexpr (RB > 1) {
        _tile_loadd(5, p1 + t * 256, 64);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      }
    }
    _tile_stored(0, pv + 16 * c, pv_stride);
    _tile_stored(1, pv + 16 * (c + 1), pv_stride);
    if constexpr (RB > 1) {
      _tile_stored(2, pv + kRows * hd + 16 * c, pv_stride);
      _tile_stored(3, pv + kRows * hd + 16 * (c + 1), pv_stride);
    }
  }
  Fold(a, i0, n, sc, alpha, active);
}

// The same step for query block b on AVX-512 BF16's vdpbf16ps where there
// is no AMX: the products a tile row at a time, from the same staged tiles
// and A-tile rows (a K tile's row j holds dims pair j of 16 keys, a V tile's
// row j keys pair j of 16 dims). Each lane is one query's chain over the
// pairs in order, so a query's bits are its own here too (not the AMX
// path's: TDPBF16PS rounds inside a step its own way).
constexpr int kVecRows = 4;  // queries whose products share each tile row loaded

// Scores of rows r0 .. r0 + 3 of the block (rows past the block's queries
// are zero q: harmless) against tile kt: 8 accumulators, head_dim / 2
// pairs each.
KVT_TARGET_BF16 inline void ScoresVec(const uint32_t* qb, const uint32_t* kt, int dblocks, int r0,
                                      float* s_tile) {
  __m512 acc[kVecRows][2];
  for (auto& row : acc) row[0] = row[1] = _mm512_setzero_ps();
  for (int d = 0; d < dblocks; ++d) {
    const uint32_t* k_lo = kt + (2 * d) * 256;
    const uint32_t* k_hi = kt + (2 * d + 1) * 256;
    const uint32_t* q = qb + d * 256 + r0 * 16;
    for (int j = 0; j < 16; ++j) {
      const __m512bh k0 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(k_lo + 16 * j));
      const __m512bh k1 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(k_hi + 16 * j));
#pragma GCC unroll 4
      for (int r = 0; r < kVecRows; ++r) {
        const __m512bh qj =
            reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(q[r * 16 + j])));
        acc[r][0] = _mm512_dpbf16_ps(acc[r][0], qj, k0);
        acc[r][1] = _mm512_dpbf16_ps(acc[r][1], qj, k1);
      }
    }
  }
  for (int r = 0; r < kVecRows; ++r) {
    _mm512_storeu_ps(s_tile + (r0 + r) * kBlockKeys, acc[r][0]);
    _mm512_storeu_ps(s_tile + (r0 + r) * kBlockKeys + 16, acc[r][1]);
  }
}

// Weighted values of rows r0 .. r0 + 3, dims 16 c0 .. 16 (c0 + C) - 1, over
// the `tiles` tiles of keys: 4 C accumulators, 16 pairs of keys per tile.
template <int C>
KVT_TARGET_BF16 inline void ValuesVec(const uint32_t* p, const uint32_t* const* kt, int tiles,
                                      int64_t tile_words, int hd, int r0, int c0, float* pv) {
  __m512 acc[kVecRows][C];
  for (auto& row : acc) {
    for (auto& v : row) v = _mm512_setzero_ps();
  }
  for (int t = 0; t < tiles; ++t) {
    const uint32_t* v = kt[t] + tile_words / 2 + c0 * 256;
    const uint32_t* pt = p + t * 256 + r0 * 16;
    for (int j = 0; j < 16; ++j) {
      __m512bh vj[C];
#pragma GCC unroll 4
      for (int c = 0; c < C; ++c)
        vj[c] = reinterpret_cast<__m512bh>(_mm512_loadu_si512(v + c * 256 + 16 * j));
#pragma GCC unroll 4
      for (int r = 0; r < kVecRows; ++r) {
        const __m512bh pj =
            reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(pt[r * 16 + j])));
#pragma GCC unroll 4
        for (int c = 0; c < C; ++c) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], pj, vj[c]);
      }
    }
  }
  for (int r = 0; r < kVecRows; ++r) {
    for (int c = 0; c < C; ++c) _mm512_storeu_ps(pv + (r0 + r) * hd + 16 * (c0 + c), acc[r][c]);
  }
}

KVT_TARGET_BF16 void KeyBlockVec(const CausalAttention& a, int64_t k0, const uint32_t* const* kt,
                                 int tiles, int b, Scratch& sc) {
  const int hd = a.head_dim, dblocks = hd / 32;
  const int queries = a.tokens * a.heads;
  const int64_t block_words = int64_t{dblocks} * 256, tile_words = TileWords(hd);
  const int i0 = b * kRows, n = std::min(kRows, queries - i0);
  const uint32_t* qb = sc.q.data() + b * block_words;
  for (int t = 0; t < tiles; ++t) {
    for (int r0 = 0; r0 < n; r0 += kVecRows) {
      ScoresVec(qb, kt[t], dblocks, r0, sc.s.data() + t * kTileKeys);
    }
  }
  float alpha[kRows];
  bool active[kRows];
  SoftmaxStep(a, k0, tiles, i0, n, sc, alpha, active);
  for (int r0 = 0; r0 < n; r0 += kVecRows) {
    int c0 = 0;
    for (; c0 + 4 <= hd / 16; c0 += 4)
      ValuesVec<4>(sc.p.data(), kt, tiles, tile_words, hd, r0, c0, sc.pv.data());
    if (c0 < hd / 16) ValuesVec<2>(sc.p.data(), kt, tiles, tile_words, hd, r0, c0, sc.pv.data());
  }
  Fold(a, i0, n, sc, alpha, active);
}

// Attention over AMX tiles (on_amx) or with vdpbf16ps: the same staging,
// softmax and folding around the products.
KVT_TARGET_AMX void Attend(const CausalAttention& a, Scratch& sc, bool on_amx) {
  const int hd = a.head_dim, dblocks = hd / 32;
  const int queries = a.tokens * a.heads;
  const int blocks = (queries + kRows - 1) / kRows;
  const int64_t block_words = int64_t{dblocks} * 256, tile_words = TileWords(hd);
  sc.q.assign(static_cast<size_t>(blocks * block_words), 0);
  sc.tiles.resize(static_cast<size_t>(kBlockTiles * tile_words));
  sc.s.resize(2 * kRows * kBlockKeys);
  sc.p.assign(2 * kBlockTiles * 256, 0);
  sc.pv.resize(static_cast<size_t>(2 * kRows) * hd);
  sc.acc.assign(static_cast<size_t>(queries) * hd, 0.0f);
  sc.sum.assign(static_cast<size_t>(queries) * 16, 0.0f);
  sc.max.assign(static_cast<size_t>(queries), -INFINITY);
  const Vec log2_scale = VSet1(a.scale * kLog2e);
  for (int i = 0; i < queries; ++i) {
    const float* row = a.Query(i);
    uint32_t* out = sc.q.data() + (i / kRows) * block_words + (i % kRows) * 16;
    for (int b = 0; b < dblocks; ++b) {
      // Scaled into log2 units (Exp2ForBf16) before the rounding to bf16.
      const __m512bh v = _mm512_cvtne2ps_pbh(VMul(VLoad(row + 32 * b + 16), log2_scale),
                                             VMul(VLoad(row + 32 * b), log2_scale));
      _mm512_storeu_si512(out + b * 256, reinterpret_cast<__m512i>(v));
    }
  }
  if (on_amx) ConfigureAmxTiles();
  const int64_t last = a.first_pos + a.tokens - 1;
  for (int64_t k0 = 0; k0 <= last; k0 += kBlockKeys) {
    const int keys = static_cast<int>(std::min<int64_t>(kBlockKeys, last + 1 - k0));
    const int tiles = (keys + kTileKeys - 1) / kTileKeys;
    const uint32_t* kt[kBlockTiles];
    for (int t = 0; t < tiles; ++t) {
      const int64_t t0 = k0 + t * kTileKeys;
      kt[t] = reinterpret_cast<const uint32_t*>(StagedTile(a, t0));
      if (kt[t] == nullptr) {
        uint32_t* own = reinterpret_cast<uint32_t*>(StageInto(a, t0));
        if (own == nullptr) own = sc.tiles.data() + t * tile_words;
        Stage(a, t0, std::min(kTileKeys, keys - t * kTileKeys), own);
        kt[t] = own;
      }
    }
    const int step = on_amx ? 2 : 1;  // query blocks at a time
    for (int b = 0; b < blocks; b += step) {
      const int rb = std::min(step, blocks - b);
      const int last_query = std::min(queries, (b + rb) * kRows) - 1;
      if (a.first_pos + last_query / a.heads < k0) continue;  // none of them sees these keys
      if (!on_amx) {
        KeyBlockVec(a, k0, kt, tiles, b, sc);
      } else if (rb == 2) {
        KeyBlock<2>(a, k0, kt, tiles, b, sc);
      } else {
        KeyBlock<1>(a, k0, kt, tiles, b, sc);
      }
    }
  }
  if (on_amx) _tile_release();
  for (int i = 0; i < queries; ++i) {
    const Vec l = VSet1(SumSixteen(sc.sum.data() + i * 16));
    const float* acc = sc.acc.data() + static_cast<size_t>(i) * hd;
    float* out = a.Out(i);
    for (int c = 0; c < hd; c += 16) VStore(out + c, VDiv(VLoad(acc + c), l));
  }
}

#undef KVT_TARGET_AMX
#undef KVT_TARGET_BF16
}  // namespace bf16
KVT_AVX512_END

}  // namespace

// bf16: asked for, the set in use has AVX-512 BF16 (amx or avx512bf16), and
// head_dim whole A tiles.
bool AttendsInBf16(const CausalAttention& a) {
  const CpuIsa isa = CpuMathIsa();
  return a.bf16 && (isa == CpuIsa::kAmx || isa == CpuIsa::kAvx512Bf16) && a.head_dim % 32 == 0;
}

int64_t StagedTileFloats(const CausalAttention& a) {
  return AttendsInBf16(a) ? bf16::TileWords(a.head_dim) : F32TileFloats(a.head_dim);
}

int64_t StagedTiles(int64_t keys) { return (keys + kTileKeys - 1) / kTileKeys; }

void StageTile(const CausalAttention& a, int64_t keys, int64_t tile, float* out) {
  const int64_t k0 = tile * kTileKeys;
  const int n = static_cast<int>(std::min<int64_t>(kTileKeys, keys - k0));
  if (AttendsInBf16(a)) {
    bf16::Stage(a, k0, n, reinterpret_cast<uint32_t*>(out));
    return;
  }
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
  if (AttendsInBf16(a)) {
    thread_local bf16::Scratch bf16_scratch;
    bf16::Attend(a, bf16_scratch, CpuMathIsa() == CpuIsa::kAmx);
    return;
  }
  thread_local Scratch scratch;
  switch (CpuMathIsa()) {
    case CpuIsa::kAmx:  // f32 attention: the AVX-512 kernel
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

void CpuAttentionBf16Exp2ForTesting(const float* x, float* out) { bf16::Exp2Lanes(x, out); }

}  // namespace kvtier
