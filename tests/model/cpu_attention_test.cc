#include "model/cpu_attention.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/attention.cuh"
#include "kernels/dtype_convert.h"
#include "tests/model/random_floats.h"

namespace kvtier {
namespace {

// Every instruction set this CPU can run, portable first.
std::vector<CpuIsa> IsasHere() {
  std::vector<CpuIsa> isas;
  for (CpuIsa isa : {CpuIsa::kPortable, CpuIsa::kAvx2, CpuIsa::kAvx512, CpuIsa::kAvx512Bf16}) {
    if (isa <= CpuMathBestIsa()) isas.push_back(isa);
  }
  return isas;
}

// Runs with `isa` for the lifetime of the object.
class WithIsa {
 public:
  explicit WithIsa(CpuIsa isa) : saved_(SetCpuMathIsa(isa)) {}
  ~WithIsa() { SetCpuMathIsa(saved_); }
  WithIsa(const WithIsa&) = delete;
  WithIsa& operator=(const WithIsa&) = delete;

 private:
  CpuIsa saved_;
};

TEST(CpuAttentionTest, ExpIsTheSameOnEverySetAndCloseToExpf) {
  std::vector<float> xs = {0.0f,   -0.0f,  -1e-30f, -1e-7f, -0.5f,    -0.6931472f, -1.0f,
                           -10.0f, -86.9f, -87.0f,  -87.5f, -1000.0f, -INFINITY};
  for (int i = 0; i < 4000; ++i) xs.push_back(-90.0f * static_cast<float>(i) / 4000.0f);
  while (xs.size() % 16 != 0) xs.push_back(-3.25f);
  for (size_t at = 0; at < xs.size(); at += 16) {
    float want[16];
    CpuAttentionExpForTesting(CpuIsa::kPortable, &xs[at], want);
    for (int i = 0; i < 16; ++i) {
      const float x = xs[at + i];
      // The rescale's scalar exp computes the same bits.
      ASSERT_EQ(CpuAttentionScalarExpForTesting(x), want[i]) << x;
      if (x >= -86.0f) {
        const double ref = std::exp(static_cast<double>(x));
        ASSERT_NEAR(want[i], ref, 4e-7 * ref) << x;
      } else {
        ASSERT_LE(want[i], 2e-37f) << x;  // clamped: negligible, never subnormal or NaN
        ASSERT_GT(want[i], 0.0f) << x;
      }
    }
    for (CpuIsa isa : IsasHere()) {
      float got[16];
      CpuAttentionExpForTesting(isa, &xs[at], got);
      for (int i = 0; i < 16; ++i) {
        ASSERT_EQ(std::bit_cast<uint32_t>(got[i]), std::bit_cast<uint32_t>(want[i]))
            << CpuIsaName(isa) << " at " << xs[at + i];
      }
    }
  }
}

// The bf16 kernel's 2^x (its weights are rounded to bf16 right after):
// within 1e-4 of 2^x relative (a bf16 ulp is 2^-8), exactly 1 at 0, and
// below -125 the clamp's tiny positive value, never 0, subnormal or NaN.
TEST(CpuAttentionTest, Bf16Exp2IsCloseToExp2) {
  if (CpuMathBestIsa() < CpuIsa::kAvx512) GTEST_SKIP() << "this CPU has no AVX-512";
  std::vector<float> xs = {0.0f,  -0.0f,  -1e-30f, -1e-7f,  -0.4999999f, -0.5f, -0.5000001f,
                           -1.0f, -10.0f, -124.9f, -125.0f, -125.5f,     -1e4f, -INFINITY};
  for (int i = 0; i < 40000; ++i) xs.push_back(-130.0f * static_cast<float>(i) / 40000.0f);
  while (xs.size() % 16 != 0) xs.push_back(-3.25f);
  for (size_t at = 0; at < xs.size(); at += 16) {
    float got[16];
    CpuAttentionBf16Exp2ForTesting(&xs[at], got);
    for (int i = 0; i < 16; ++i) {
      const float x = xs[at + i];
      if (x == 0.0f) {
        ASSERT_EQ(got[i], 1.0f);
      }
      if (x >= -124.0f) {
        const double ref = std::exp2(static_cast<double>(x));
        ASSERT_NEAR(got[i], ref, 1e-4 * ref) << x;
      } else {
        ASSERT_LE(got[i], 1e-37f) << x;
        ASSERT_GE(got[i], std::numeric_limits<float>::min()) << x;  // normal
      }
    }
  }
}

// Random paged K and V for positions 0..n-1, one KV head.
struct Pages {
  int page_tokens, head_dim;
  std::vector<std::vector<float>> k, v;
  std::vector<const float*> kp, vp;

  Pages(int64_t n, int page_tokens_in, int head_dim_in, uint32_t seed)
      : page_tokens(page_tokens_in), head_dim(head_dim_in) {
    const int64_t pages = (n + page_tokens - 1) / page_tokens;
    for (int64_t p = 0; p < pages; ++p) {
      k.push_back(RandomFloats(size_t(page_tokens) * head_dim, seed + 2 * uint32_t(p)));
      v.push_back(RandomFloats(size_t(page_tokens) * head_dim, seed + 2 * uint32_t(p) + 1));
      // Slots past n hold NaN: the kernel must never read them.
      for (int64_t t = n; t < (p + 1) * page_tokens; ++t) {
        if (t < p * page_tokens) continue;
        for (int d = 0; d < head_dim; ++d) {
          k.back()[size_t(t - p * page_tokens) * head_dim + d] = std::nanf("");
          v.back()[size_t(t - p * page_tokens) * head_dim + d] = std::nanf("");
        }
      }
    }
    for (auto& x : k) kp.push_back(x.data());
    for (auto& x : v) vp.push_back(x.data());
  }
  const float* K(int64_t t) const { return kp[t / page_tokens] + (t % page_tokens) * head_dim; }
  const float* V(int64_t t) const { return vp[t / page_tokens] + (t % page_tokens) * head_dim; }
};

// Attends tokens [from, from + tokens) of a run laid out as [token][heads][hd],
// with tiles of keys staged beforehand where `tiles` gives them.
void Attend(const Pages& pg, const std::vector<float>& q, int heads, int64_t first_pos, int from,
            int tokens, float scale, std::vector<float>& out, const float* const* tiles = nullptr,
            bool bf16 = false) {
  const int64_t stride = int64_t{heads} * pg.head_dim;
  CausalAttention a;
  a.q = q.data() + from * stride;
  a.q_stride = stride;
  a.out = out.data() + from * stride;
  a.out_stride = stride;
  a.tokens = tokens;
  a.heads = heads;
  a.first_pos = first_pos + from;
  a.k_pages = pg.kp.data();
  a.v_pages = pg.vp.data();
  a.page_tokens = pg.page_tokens;
  a.head_dim = pg.head_dim;
  a.scale = scale;
  a.tiles = tiles;
  a.bf16 = bf16;
  AttendCausal(a);
}

// Tiles of keys 0..n-1 staged beforehand: every one, as the forward pass
// stages a chunk's for its runs; or (`mixed`) only every other tile, the
// rest left null for each run to stage itself, as a page's side copy holds
// some tiles and not others.
struct StagedForTest {
  std::vector<float> floats;
  std::vector<const float*> tiles;
};
StagedForTest StageAll(const Pages& pg, int64_t n, bool bf16 = false, bool mixed = false) {
  CausalAttention a;
  a.k_pages = pg.kp.data();
  a.v_pages = pg.vp.data();
  a.page_tokens = pg.page_tokens;
  a.head_dim = pg.head_dim;
  a.bf16 = bf16;
  const int64_t tf = StagedTileFloats(a);
  StagedForTest st;
  st.floats.resize(static_cast<size_t>(StagedTiles(n) * tf));
  for (int64_t t = 0; t < StagedTiles(n); ++t) {
    float* out = st.floats.data() + t * tf;
    StageTile(a, n, t, out);
    st.tiles.push_back(mixed && t % 2 == 1 ? nullptr : out);
  }
  return st;
}

// One token at a time, as decode steps over pages with side copies
// (forward.h): a tile staged at an earlier step is read from `side`, a tile
// that is whole by this step's position is staged into `side` by the step
// itself (stage_into), the rest by the step in its scratch. Returns `side`.
std::vector<float> DecodeThroughSideTiles(const Pages& pg, const std::vector<float>& q, int heads,
                                          int64_t first_pos, int tokens, float scale, bool bf16,
                                          std::vector<float>& out) {
  CausalAttention shape;
  shape.head_dim = pg.head_dim;
  shape.bf16 = bf16;
  const int64_t tf = StagedTileFloats(shape), n = first_pos + tokens;
  std::vector<float> side(static_cast<size_t>(StagedTiles(n) * tf));
  std::vector<bool> current(static_cast<size_t>(StagedTiles(n)));
  for (int t = 0; t < tokens; ++t) {
    const int64_t pos = first_pos + t, whole = (pos + 1) / kAttentionTileKeys;
    std::vector<const float*> tiles(current.size());
    std::vector<float*> into(current.size());
    for (int64_t k = 0; k < whole; ++k) {
      float* at = side.data() + k * tf;
      if (current[k]) {
        tiles[k] = at;
      } else {
        into[k] = at;
        current[k] = true;
      }
    }
    const int64_t stride = int64_t{heads} * pg.head_dim;
    CausalAttention a = shape;
    a.q = q.data() + t * stride;
    a.q_stride = stride;
    a.out = out.data() + t * stride;
    a.out_stride = stride;
    a.tokens = 1;
    a.heads = heads;
    a.first_pos = pos;
    a.k_pages = pg.kp.data();
    a.v_pages = pg.vp.data();
    a.page_tokens = pg.page_tokens;
    a.scale = scale;
    a.tiles = tiles.data();
    a.stage_into = into.data();
    AttendCausal(a);
  }
  return side;
}

// The side tiles DecodeThroughSideTiles left are StageTile's bytes for every
// whole tile.
void ExpectSideTilesAreStaged(const Pages& pg, int64_t n, bool bf16,
                              const std::vector<float>& side) {
  const StagedForTest all = StageAll(pg, n, bf16);
  const int64_t whole = n / kAttentionTileKeys;
  const size_t floats = all.floats.size() / static_cast<size_t>(StagedTiles(n));
  EXPECT_EQ(std::memcmp(side.data(), all.floats.data(), whole * floats * sizeof(float)), 0);
}

struct Shape {
  int head_dim, heads, page_tokens;
  int64_t first_pos;
  int tokens;
};

class CausalAttentionTest : public ::testing::TestWithParam<Shape> {};

float RoundBf16(float x) { return Bf16BitsToFloat(FloatToBf16Bits(x)); }

// Every output of a run laid out as Attend's against causal attention in
// double precision, on q, K and V as they are or rounded to bf16.
void ExpectNearDouble(const Pages& pg, const std::vector<float>& q, const Shape& s, float scale,
                      const std::vector<float>& got, bool bf16_inputs, double tolerance) {
  auto in = [&](float x) { return bf16_inputs ? double(RoundBf16(x)) : double(x); };
  for (int t = 0; t < s.tokens; ++t) {
    const int64_t pos = s.first_pos + t;
    for (int h = 0; h < s.heads; ++h) {
      const float* qh = &q[(size_t(t) * s.heads + h) * s.head_dim];
      std::vector<double> sc(size_t(pos + 1));
      double mx = -1e300, sum = 0;
      for (int64_t j = 0; j <= pos; ++j) {
        double d = 0;
        for (int e = 0; e < s.head_dim; ++e) d += in(qh[e]) * in(pg.K(j)[e]);
        sc[size_t(j)] = d * scale;
        mx = std::max(mx, sc[size_t(j)]);
      }
      for (double& x : sc) sum += (x = std::exp(x - mx));
      for (int e = 0; e < s.head_dim; ++e) {
        double ref = 0;
        for (int64_t j = 0; j <= pos; ++j) ref += sc[size_t(j)] / sum * in(pg.V(j)[e]);
        ASSERT_NEAR(got[(size_t(t) * s.heads + h) * s.head_dim + e], ref, tolerance)
            << "token " << t << " head " << h << " dim " << e;
      }
    }
  }
}

TEST_P(CausalAttentionTest, MatchesDoubleAndIsTheSameChunkedOnEverySet) {
  const Shape s = GetParam();
  const int64_t n = s.first_pos + s.tokens;
  const Pages pg(n, s.page_tokens, s.head_dim, 7);
  const std::vector<float> q = RandomFloats(size_t(s.tokens) * s.heads * s.head_dim, 3);
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  const size_t size = q.size();

  std::vector<float> whole(size);
  {
    WithIsa isa(CpuIsa::kPortable);
    Attend(pg, q, s.heads, s.first_pos, 0, s.tokens, scale, whole);
  }
  // Against double precision.
  ASSERT_NO_FATAL_FAILURE(ExpectNearDouble(pg, q, s, scale, whole, /*bf16_inputs=*/false, 2e-5));
  for (CpuIsa isa_here : IsasHere()) {
    WithIsa isa(isa_here);
    // The whole run, on this set: the same bits.
    std::vector<float> again(size);
    Attend(pg, q, s.heads, s.first_pos, 0, s.tokens, scale, again);
    ASSERT_EQ(std::memcmp(again.data(), whole.data(), size * sizeof(float)), 0)
        << CpuIsaName(isa_here);
    // One token at a time (decode steps), and in uneven chunks: the same bits.
    std::vector<float> single(size), chunked(size);
    for (int t = 0; t < s.tokens; ++t) Attend(pg, q, s.heads, s.first_pos, t, 1, scale, single);
    for (int t = 0, len = 5; t < s.tokens; t += len, len = len * 2 + 1) {
      Attend(pg, q, s.heads, s.first_pos, t, std::min(len, s.tokens - t), scale, chunked);
    }
    ASSERT_EQ(std::memcmp(single.data(), whole.data(), size * sizeof(float)), 0)
        << CpuIsaName(isa_here);
    ASSERT_EQ(std::memcmp(chunked.data(), whole.data(), size * sizeof(float)), 0)
        << CpuIsaName(isa_here);
    // With the tiles staged once for the whole run, as the forward pass
    // does for a chunk of several runs: the same bits, in any chunking.
    // Decode steps keeping their whole tiles for the next (side copies).
    std::vector<float> kept(size);
    const std::vector<float> side =
        DecodeThroughSideTiles(pg, q, s.heads, s.first_pos, s.tokens, scale, false, kept);
    ASSERT_EQ(std::memcmp(kept.data(), whole.data(), size * sizeof(float)), 0)
        << CpuIsaName(isa_here) << " through side tiles";
    ExpectSideTilesAreStaged(pg, n, false, side);
    // And with only some tiles staged beforehand, the rest by each run.
    for (const bool mixed : {false, true}) {
      const StagedForTest staged = StageAll(pg, n, false, mixed);
      std::vector<float> shared(size);
      for (int t = 0, len = 3; t < s.tokens; t += len, len = len * 2 + 1) {
        Attend(pg, q, s.heads, s.first_pos, t, std::min(len, s.tokens - t), scale, shared,
               staged.tiles.data());
      }
      ASSERT_EQ(std::memcmp(shared.data(), whole.data(), size * sizeof(float)), 0)
          << CpuIsaName(isa_here) << " with staged tiles" << (mixed ? ", some" : "");
    }
  }
}

// bf16 attention (CausalAttention::bf16): scores and weighted values as bf16
// products, on AMX tiles (amx) or by vdpbf16ps (avx512bf16), each set this
// CPU has. Close to double precision on the rounded q, K and V; a query's
// bits the same whatever the chunking and staging (the cache-hit
// invariant); without AVX-512 BF16, or for a head_dim that is not a
// multiple of 32, the f32 kernel's bits.
TEST_P(CausalAttentionTest, Bf16IsCloseAndTheSameChunkedOnEveryBf16Set) {
  const Shape s = GetParam();
  const int64_t n = s.first_pos + s.tokens;
  const Pages pg(n, s.page_tokens, s.head_dim, 7);
  const std::vector<float> q = RandomFloats(size_t(s.tokens) * s.heads * s.head_dim, 3);
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  const size_t size = q.size();
  std::vector<float> f32(size);
  Attend(pg, q, s.heads, s.first_pos, 0, s.tokens, scale, f32);
  {
    // Without AVX-512 BF16, bf16 asks for nothing: the f32 kernel.
    WithIsa isa(std::min(CpuMathBestIsa(), CpuIsa::kAvx512));
    std::vector<float> off(size);
    Attend(pg, q, s.heads, s.first_pos, 0, s.tokens, scale, off, nullptr, true);
    ASSERT_EQ(std::memcmp(off.data(), f32.data(), size * sizeof(float)), 0);
  }
  if (CpuMathBestIsa() < CpuIsa::kAvx512Bf16) GTEST_SKIP() << "this CPU has no AVX-512 BF16";
  std::vector<std::vector<float>> per_set;
  for (const CpuIsa set : {CpuIsa::kAvx512Bf16, CpuIsa::kAmx}) {
    if (set > CpuMathBestIsa()) {
      std::printf("this CPU has no %s: that path is not tested here\n", CpuIsaName(set));
      continue;
    }
    SCOPED_TRACE(CpuIsaName(set));
    WithIsa isa(set);
    std::vector<float> whole(size);
    Attend(pg, q, s.heads, s.first_pos, 0, s.tokens, scale, whole, nullptr, true);
    if (s.head_dim % 32 != 0) {
      ASSERT_EQ(std::memcmp(whole.data(), f32.data(), size * sizeof(float)), 0);
      continue;
    }
    ASSERT_NE(std::memcmp(whole.data(), f32.data(), size * sizeof(float)), 0)
        << "bf16 gave the f32 kernel's bits";
    // Against double precision on the rounded inputs: what is left is the
    // weights' rounding to bf16 (2^-9 of each), so at most 2^-8 of the
    // largest |v| (1 here), and the products' f32 accumulation.
    ASSERT_NO_FATAL_FAILURE(ExpectNearDouble(pg, q, s, scale, whole, /*bf16_inputs=*/true, 4e-3));
    // One token at a time (decode steps), in uneven chunks, and with the
    // tiles staged once for the run, all of them or some: the same bits.
    std::vector<float> single(size), chunked(size), shared(size), some(size);
    for (int t = 0; t < s.tokens; ++t)
      Attend(pg, q, s.heads, s.first_pos, t, 1, scale, single, nullptr, true);
    for (int t = 0, len = 5; t < s.tokens; t += len, len = len * 2 + 1) {
      Attend(pg, q, s.heads, s.first_pos, t, std::min(len, s.tokens - t), scale, chunked, nullptr,
             true);
    }
    const StagedForTest staged = StageAll(pg, n, true), half = StageAll(pg, n, true, true);
    for (int t = 0, len = 3; t < s.tokens; t += len, len = len * 2 + 1) {
      Attend(pg, q, s.heads, s.first_pos, t, std::min(len, s.tokens - t), scale, shared,
             staged.tiles.data(), true);
      Attend(pg, q, s.heads, s.first_pos, t, std::min(len, s.tokens - t), scale, some,
             half.tiles.data(), true);
    }
    ASSERT_EQ(std::memcmp(single.data(), whole.data(), size * sizeof(float)), 0) << "decode steps";
    ASSERT_EQ(std::memcmp(chunked.data(), whole.data(), size * sizeof(float)), 0) << "chunked";
    ASSERT_EQ(std::memcmp(shared.data(), whole.data(), size * sizeof(float)), 0) << "staged";
    ASSERT_EQ(std::memcmp(some.data(), whole.data(), size * sizeof(float)), 0) << "some staged";
    std::vector<float> kept(size);
    const std::vector<float> side =
        DecodeThroughSideTiles(pg, q, s.heads, s.first_pos, s.tokens, scale, true, kept);
    ASSERT_EQ(std::memcmp(kept.data(), whole.data(), size * sizeof(float)), 0) << "side tiles";
    ExpectSideTilesAreStaged(pg, n, true, side);
    per_set.push_back(whole);
  }
  // Where both run, each within the bound above; their bits may differ.
  if (per_set.size() == 2) {
    for (size_t i = 0; i < size; ++i) ASSERT_NEAR(per_set[0][i], per_set[1][i], 8e-3) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, CausalAttentionTest,
                         ::testing::Values(Shape{8, 1, 16, 0, 40}, Shape{12, 3, 16, 5, 37},
                                           Shape{64, 2, 16, 0, 100}, Shape{64, 4, 64, 70, 33},
                                           Shape{136, 1, 32, 31, 34}, Shape{64, 1, 16, 500, 3},
                                           Shape{256, 2, 16, 0, 20}, Shape{32, 3, 16, 5, 37},
                                           Shape{128, 8, 16, 0, 40},
                                           // 96: the bf16 vector path's value
                                           // chunks of 4 and of 2 dims' vectors.
                                           Shape{96, 2, 32, 3, 45}));

// The kernels' CPU twin (kernels/attention_cpu.cc) is the one reference for
// attention over pages; the engine's blocked kernel agrees with it.
TEST(CpuAttentionTest, AgreesWithTheKernelsReference) {
  KvGeometry geo;
  geo.layers = 1;
  geo.kv_heads = 2;
  geo.head_dim = 32;
  geo.block_tokens = 16;
  geo.dtype = DType::kFloat32;
  const int heads = 6, group = heads / geo.kv_heads;
  const int start = 20, tokens = 45, n = start + tokens;
  const int pages = (n + geo.block_tokens - 1) / geo.block_tokens;
  const size_t page_floats = geo.BlockBytes() / sizeof(float);
  std::vector<float> pool = RandomFloats(page_floats * pages, 11);
  const std::vector<float> q = RandomFloats(size_t(tokens) * heads * geo.head_dim, 12);
  const float scale = 0.2f;

  KvPagesView view{pool.data(), geo, pages};
  std::vector<int32_t> table(static_cast<size_t>(pages));
  for (int p = 0; p < pages; ++p) table[size_t(p)] = pages - 1 - p;  // pages out of order
  AttentionChunk chunk{0, start, tokens, 0};
  AttentionBatch batch;
  batch.chunks = &chunk;
  batch.num_chunks = 1;
  batch.rows = tokens;
  batch.max_chunk_tokens = tokens;
  batch.block_tables = table.data();
  batch.num_tables = 1;
  batch.max_pages = pages;
  AttentionParams params{0, heads, scale};
  std::vector<float> want(q.size());
  ASSERT_TRUE(PagedAttentionPrefillCpu(view, batch, params, q.data(), want.data(), nullptr).ok());

  // Page layout [layer][K|V][kv_head][token][head_dim].
  const size_t head_floats = size_t(geo.block_tokens) * geo.head_dim;
  std::vector<float> got(q.size());
  for (int g = 0; g < geo.kv_heads; ++g) {
    std::vector<const float*> kp, vp;
    for (int p = 0; p < pages; ++p) {
      const float* page = pool.data() + size_t(table[size_t(p)]) * page_floats;
      kp.push_back(page + size_t(g) * head_floats);
      vp.push_back(page + size_t(geo.kv_heads + g) * head_floats);
    }
    CausalAttention a;
    a.q = q.data() + size_t(g) * group * geo.head_dim;
    a.q_stride = int64_t{heads} * geo.head_dim;
    a.out = got.data() + size_t(g) * group * geo.head_dim;
    a.out_stride = a.q_stride;
    a.tokens = tokens;
    a.heads = group;
    a.first_pos = start;
    a.k_pages = kp.data();
    a.v_pages = vp.data();
    a.page_tokens = geo.block_tokens;
    a.head_dim = geo.head_dim;
    a.scale = scale;
    AttendCausal(a);
  }
  for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-5) << i;
}

TEST(CpuAttentionTest, NothingToDoWritesNothing) {
  std::vector<float> out(8, 42.0f);
  CausalAttention a;
  a.out = out.data();
  a.tokens = 0;
  a.heads = 1;
  AttendCausal(a);
  for (float x : out) EXPECT_EQ(x, 42.0f);
}

}  // namespace
}  // namespace kvtier
