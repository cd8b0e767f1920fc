// Paged attention and StoreKv: the CPU twins against references written here
// (explicit page arithmetic, softmax in double over explicitly gathered keys),
// argument checking, and the GPU launchers against the twins (skipped without
// a device).
//
// Tolerances (absolute, on outputs of magnitude <= 1):
//   twin vs double reference over the same stored K/V          kTwinTolerance
//   twin vs double reference over the f32 K/V before storing   DtypeTolerance()
//     (f32: the twin's f32 sums; f16/bf16: one rounding of each K and V
//     element to 11 / 8 significant bits)
//   GPU vs twin: both read the same stored bytes, so the dtype does not enter;
//     they differ by summation order and exp2f-vs-expf       kGpuTolerance
//   StoreKv GPU vs twin, and twin vs the reference encoding: bit-exact.
#include "kernels/attention.cuh"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/dtype_convert.h"

namespace kvtier {
namespace {

constexpr double kTwinTolerance = 5e-6;
constexpr double kGpuTolerance = 3e-5;
constexpr int kLayers = 2;
constexpr int kLayer = 1;  // the layer under test; layer 0 stays NaN

double DtypeTolerance(DType d) {
  switch (d) {
    case DType::kFloat32:
      return 5e-6;
    case DType::kFloat16:
      return 2.5e-3;
    case DType::kBFloat16:
      return 2e-2;
  }
  return 0;
}

// ---------------------------------------------------------------------------
// The host f16/bf16 conversions the twins and these tests share
// (kernels/dtype_convert.h), against fixed bit patterns and independent
// rounding.

TEST(DtypeConvertTest, KnownHalfAndBfloat16BitPatterns) {
  const float tiny = std::ldexp(1.0f, -24);  // the smallest f16 subnormal
  const std::pair<float, uint16_t> half[] = {
      {1.0f, 0x3c00},
      {-2.0f, 0xc000},
      {0.0f, 0x0000},
      {-0.0f, 0x8000},
      {65504.0f, 0x7bff},  // the largest finite
      {65519.0f, 0x7bff},  // below the tie: down
      {65520.0f, 0x7c00},  // the tie rounds to even: infinity
      {INFINITY, 0x7c00},
      {std::ldexp(1.0f, -14), 0x0400},  // the smallest normal
      {tiny, 0x0001},
      {tiny / 2, 0x0000},                          // tie between 0 and 1 ulp: even
      {tiny * 1.5f, 0x0002},                       // tie between 1 and 2 ulps: even
      {1.0f + std::ldexp(1.0f, -11), 0x3c00},      // tie: stays on the even 1.0
      {1.0f + 3 * std::ldexp(1.0f, -11), 0x3c02},  // tie: up to the even mantissa
      {0.1f, 0x2e66},
  };
  for (auto [f, h] : half) {
    EXPECT_EQ(FloatToHalfBits(f), h) << f;
  }
  EXPECT_EQ(HalfBitsToFloat(0x0001), tiny);
  EXPECT_EQ(HalfBitsToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(HalfBitsToFloat(0x3555), 0.333251953125f);
  EXPECT_TRUE(std::isnan(HalfBitsToFloat(FloatToHalfBits(NAN))));
  const std::pair<float, uint16_t> bf16[] = {
      {1.0f, 0x3f80},
      {-1.0f, 0xbf80},
      {1.0f + std::ldexp(1.0f, -8), 0x3f80},      // tie: even
      {1.0f + 3 * std::ldexp(1.0f, -8), 0x3f82},  // tie: up to even
      {3.4028235e38f, 0x7f80},                    // FLT_MAX rounds to infinity
      {std::ldexp(1.0f, -133), 0x0001},           // the smallest bf16 subnormal
  };
  for (auto [f, b] : bf16) {
    EXPECT_EQ(FloatToBf16Bits(f), b) << f;
  }
  EXPECT_EQ(Bf16BitsToFloat(0x3f80), 1.0f);
  EXPECT_TRUE(std::isnan(Bf16BitsToFloat(FloatToBf16Bits(NAN))));
}

TEST(DtypeConvertTest, EveryHalfAndBfloat16ValueRoundTrips) {
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const auto bits = static_cast<uint16_t>(b);
    const float h = HalfBitsToFloat(bits);
    if (!std::isnan(h)) {
      ASSERT_EQ(FloatToHalfBits(h), bits) << std::hex << b;
    }
    const float bf = Bf16BitsToFloat(bits);
    if (!std::isnan(bf)) {
      ASSERT_EQ(FloatToBf16Bits(bf), bits) << std::hex << b;
    }
  }
}

// Round to nearest even by comparing distances in double to the two
// neighbours of |f| that have 8 significant bits (bf16).
uint16_t ReferenceBf16(float f) {
  const uint32_t u = FloatBits(f);
  const uint32_t sign = u & 0x80000000u;
  const uint32_t lo = (u & 0x7fffffffu) & 0xffff0000u;  // truncated magnitude
  const int exp = static_cast<int>(lo >> 23);
  const double ulp = std::ldexp(1.0, (exp == 0 ? 1 : exp) - 127 - 7);
  const double below = BitsFloat(lo);
  const double x = std::fabs(static_cast<double>(f));
  const double d_lo = x - below, d_hi = below + ulp - x;
  const bool up = d_hi < d_lo || (d_hi == d_lo && ((lo >> 16) & 1u) != 0);
  return static_cast<uint16_t>((sign >> 16) | ((lo >> 16) + (up ? 1u : 0u)));
}

TEST(DtypeConvertTest, RandomFloatsRoundToNearestEven) {
  std::mt19937 rng(12);
  for (int i = 0; i < 1000000; ++i) {
    float f = BitsFloat(static_cast<uint32_t>(rng()));
    if (std::isnan(f) || std::isinf(f)) continue;
    ASSERT_EQ(FloatToBf16Bits(f), ReferenceBf16(f)) << f;
#if defined(__FLT16_MAX__)
    // The compiler's own IEEE binary16, where it has one.
    const _Float16 h = static_cast<_Float16>(f);
    uint16_t want;
    std::memcpy(&want, &h, sizeof want);
    ASSERT_EQ(FloatToHalfBits(f), want) << f;
    // Half-range values too, where the rounding is not just overflow or zero.
    f = std::ldexp(f, -std::ilogb(f) + static_cast<int>(rng() % 40) - 25);
    if (f == 0 || !std::isfinite(f)) continue;
    const _Float16 h2 = static_cast<_Float16>(f);
    std::memcpy(&want, &h2, sizeof want);
    ASSERT_EQ(FloatToHalfBits(f), want) << f;
#endif
  }
}

struct HeadShape {
  int kv_heads, n_heads, head_dim, block_tokens;
};

// One sequence of the batch: `start` tokens already in pages (the history),
// then a chunk of `tokens` new ones.
struct SeqSpec {
  int start, tokens;
};

enum class BatchKind { kDecode, kPrefill, kMixed };

std::vector<SeqSpec> Specs(BatchKind kind) {
  switch (kind) {
    case BatchKind::kDecode:  // contexts of 1, 17, 69, 130 and 300 keys
      return {{0, 1}, {16, 1}, {68, 1}, {129, 1}, {299, 1}};
    case BatchKind::kPrefill:  // from 0, mid-sequence, a 1-token chunk, >64 rows
      return {{0, 40}, {33, 70}, {0, 1}, {100, 80}};
    case BatchKind::kMixed:  // decodes and prefills, one starting on a page boundary
      return {{0, 1}, {77, 1}, {0, 50}, {200, 1}, {64, 65}, {5, 1}};
  }
  return {};
}

std::string KindName(BatchKind k) {
  return k == BatchKind::kDecode ? "decode" : k == BatchKind::kPrefill ? "prefill" : "mixed";
}

// A pool, block tables, a batch, and the f32 originals of every K/V row.
struct Scenario {
  KvGeometry g;
  int n_heads = 0;
  float scale = 0;
  int64_t num_pages = 0;
  int max_pages = 0;
  std::vector<SeqSpec> seqs;
  std::vector<int32_t> tables;  // [seqs][max_pages]
  std::vector<AttentionChunk> chunks;
  int rows = 0, max_chunk = 0;
  std::vector<float> q, k, v;  // batch rows
  // Originals of every position of every sequence: [seq][pos][kv_heads][head_dim].
  std::vector<std::vector<float>> all_k, all_v;
  std::vector<std::byte> pool;  // history stored, batch not yet

  KvPagesView View(void* p) const { return KvPagesView{p, g, num_pages}; }
  AttentionBatch Batch(const AttentionChunk* c, const int32_t* t) const {
    return AttentionBatch{c, static_cast<int32_t>(chunks.size()), rows,     max_chunk,
                          t, static_cast<int32_t>(seqs.size()),   max_pages};
  }
  AttentionParams Params() const { return AttentionParams{kLayer, n_heads, scale}; }
  size_t RowFloats() const { return static_cast<size_t>(g.kv_heads) * g.head_dim; }
};

// The pool offset of one element, written out from the layout in attention.cuh.
int64_t Offset(const Scenario& s, int seq, int64_t pos, int kv, int head, int d) {
  const int64_t page = s.tables[static_cast<size_t>(seq * s.max_pages + pos / s.g.block_tokens)];
  const int64_t slot = pos % s.g.block_tokens;
  return ((((page * s.g.layers + kLayer) * 2 + kv) * s.g.kv_heads + head) * s.g.block_tokens +
          slot) *
             s.g.head_dim +
         d;
}

Scenario MakeScenario(const HeadShape& h, DType dtype, const std::vector<SeqSpec>& seqs,
                      uint32_t seed) {
  Scenario s;
  s.g = KvGeometry{kLayers, h.kv_heads, h.head_dim, h.block_tokens, dtype};
  s.n_heads = h.n_heads;
  s.scale = 1.0f / std::sqrt(static_cast<float>(h.head_dim));
  s.seqs = seqs;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  int pages_needed = 0;
  for (const SeqSpec& q : seqs) {
    const int pages = (q.start + q.tokens + h.block_tokens - 1) / h.block_tokens;
    s.max_pages = std::max(s.max_pages, pages + 1);  // a spare entry past the end
    pages_needed += pages;
  }
  s.num_pages = pages_needed + 3;  // pages no table names stay NaN
  // Each sequence's pages: distinct, shuffled over the pool; unused entries -1.
  std::vector<int32_t> order(static_cast<size_t>(s.num_pages));
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  s.tables.assign(seqs.size() * static_cast<size_t>(s.max_pages), -1);
  size_t next = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    const int pages = (seqs[i].start + seqs[i].tokens + h.block_tokens - 1) / h.block_tokens;
    for (int p = 0; p < pages; ++p) s.tables[i * s.max_pages + p] = order[next++];
  }
  // Chunks in sequence order, rows assigned in reverse so first_row matters.
  for (const SeqSpec& q : seqs) s.rows += q.tokens;
  int row = s.rows;
  for (size_t i = 0; i < seqs.size(); ++i) {
    row -= seqs[i].tokens;
    s.chunks.push_back({static_cast<int32_t>(i), seqs[i].start, seqs[i].tokens, row});
    s.max_chunk = std::max(s.max_chunk, seqs[i].tokens);
  }
  // Originals for every position; the batch's K/V are the chunk positions' rows.
  const size_t rf = s.RowFloats();
  for (const SeqSpec& q : seqs) {
    std::vector<float> k(static_cast<size_t>(q.start + q.tokens) * rf);
    std::vector<float> v(k.size());
    for (auto& x : k) x = unit(rng);
    for (auto& x : v) x = unit(rng);
    s.all_k.push_back(std::move(k));
    s.all_v.push_back(std::move(v));
  }
  s.k.resize(static_cast<size_t>(s.rows) * rf);
  s.v.resize(s.k.size());
  for (size_t i = 0; i < seqs.size(); ++i) {
    const AttentionChunk& c = s.chunks[i];
    for (int t = 0; t < c.num_tokens; ++t) {
      const size_t src = static_cast<size_t>(c.start_pos + t) * rf;
      const size_t dst = static_cast<size_t>(c.first_row + t) * rf;
      std::copy_n(s.all_k[i].begin() + src, rf, s.k.begin() + dst);
      std::copy_n(s.all_v[i].begin() + src, rf, s.v.begin() + dst);
    }
  }
  s.q.resize(static_cast<size_t>(s.rows) * h.n_heads * h.head_dim);
  for (auto& x : s.q) x = 3.0f * unit(rng);  // scores of spread ~1: a non-flat softmax
  // The pool: NaN everywhere (0xff bytes are NaN in every dtype), then the
  // history written element by element.
  s.pool.assign(s.g.BlockBytes() * static_cast<size_t>(s.num_pages), std::byte{0xff});
  for (size_t i = 0; i < seqs.size(); ++i) {
    for (int pos = 0; pos < seqs[i].start; ++pos) {
      for (int kv = 0; kv < 2; ++kv) {
        const auto& src = kv == 0 ? s.all_k[i] : s.all_v[i];
        for (int hh = 0; hh < h.kv_heads; ++hh) {
          for (int d = 0; d < h.head_dim; ++d) {
            StoreAs(dtype, s.pool.data(), Offset(s, static_cast<int>(i), pos, kv, hh, d),
                    src[static_cast<size_t>(pos) * rf + hh * h.head_dim + d]);
          }
        }
      }
    }
  }
  return s;
}

// The pool after the batch's K/V are stored, encoded here element by element.
std::vector<std::byte> ExpectedPoolAfterStore(const Scenario& s) {
  std::vector<std::byte> pool = s.pool;
  const size_t rf = s.RowFloats();
  for (size_t i = 0; i < s.chunks.size(); ++i) {
    const AttentionChunk& c = s.chunks[i];
    for (int t = 0; t < c.num_tokens; ++t) {
      for (int hh = 0; hh < s.g.kv_heads; ++hh) {
        for (int d = 0; d < s.g.head_dim; ++d) {
          const size_t src = static_cast<size_t>(c.first_row + t) * rf + hh * s.g.head_dim + d;
          StoreAs(s.g.dtype, pool.data(), Offset(s, c.table, c.start_pos + t, 0, hh, d), s.k[src]);
          StoreAs(s.g.dtype, pool.data(), Offset(s, c.table, c.start_pos + t, 1, hh, d), s.v[src]);
        }
      }
    }
  }
  return pool;
}

// Attention in double: for each row and head, the keys 0..pos gathered one by
// one, an explicit softmax, the weighted sum of the values. From the stored
// pool (decoded exactly) or, with pool == nullptr, from the f32 originals.
std::vector<double> Reference(const Scenario& s, const std::byte* pool) {
  const int hd = s.g.head_dim;
  const int group = s.n_heads / s.g.kv_heads;
  const size_t rf = s.RowFloats();
  std::vector<double> out(s.q.size());
  for (size_t i = 0; i < s.chunks.size(); ++i) {
    const AttentionChunk& c = s.chunks[i];
    for (int t = 0; t < c.num_tokens; ++t) {
      const int pos = c.start_pos + t;
      for (int h = 0; h < s.n_heads; ++h) {
        const int kvh = h / group;
        const float* q = &s.q[(static_cast<size_t>(c.first_row + t) * s.n_heads + h) * hd];
        auto value = [&](int kv, int j, int d) -> double {
          if (pool != nullptr) return LoadAs(s.g.dtype, pool, Offset(s, c.table, j, kv, kvh, d));
          const auto& src = kv == 0 ? s.all_k[i] : s.all_v[i];
          return src[static_cast<size_t>(j) * rf + kvh * hd + d];
        };
        std::vector<double> p(static_cast<size_t>(pos) + 1);
        double mx = -INFINITY;
        for (int j = 0; j <= pos; ++j) {
          double dot = 0;
          for (int d = 0; d < hd; ++d) dot += static_cast<double>(q[d]) * value(0, j, d);
          p[j] = dot * s.scale;
          mx = std::max(mx, p[j]);
        }
        double sum = 0;
        for (double& x : p) sum += (x = std::exp(x - mx));
        double* o = &out[(static_cast<size_t>(c.first_row + t) * s.n_heads + h) * hd];
        for (int j = 0; j <= pos; ++j) {
          for (int d = 0; d < hd; ++d) o[d] += p[j] / sum * value(1, j, d);
        }
      }
    }
  }
  return out;
}

// Asserts |got - want| <= tol everywhere, reporting the worst element.
template <class T>
void ExpectNear(const std::vector<float>& got, const std::vector<T>& want, double tol,
                const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - static_cast<double>(want[i]));
    if (!(err <= worst)) {  // NaN counts as the worst
      worst = err;
      at = i;
    }
  }
  EXPECT_LE(worst, tol) << what << ": worst at element " << at << ": got " << got[at] << ", want "
                        << want[at];
}

struct Case {
  HeadShape h;
  DType dtype;
  BatchKind kind;
};

std::string CaseName(const Case& c) {
  return std::to_string(c.h.n_heads) + "q" + std::to_string(c.h.kv_heads) + "kv_d" +
         std::to_string(c.h.head_dim) + "_b" + std::to_string(c.h.block_tokens) + "_" +
         std::string(DTypeName(c.dtype)) + "_" + KindName(c.kind);
}

void PrintTo(const Case& c, std::ostream* os) { *os << CaseName(c); }

class AttentionTest : public ::testing::TestWithParam<Case> {
 protected:
  Scenario Make(uint32_t seed = 1) const {
    const Case& c = GetParam();
    return MakeScenario(c.h, c.dtype, Specs(c.kind), seed);
  }
};

TEST_P(AttentionTest, StoreKvCpuWritesEachRowWhereItsTableSays) {
  Scenario s = Make();
  const auto expect = ExpectedPoolAfterStore(s);
  ASSERT_NE(expect, s.pool);
  ASSERT_TRUE(StoreKvCpu(s.View(s.pool.data()), s.Batch(s.chunks.data(), s.tables.data()), kLayer,
                         s.k.data(), s.v.data(), nullptr)
                  .ok());
  EXPECT_TRUE(s.pool == expect) << "the stored pool differs from the reference encoding";
}

TEST_P(AttentionTest, CpuTwinsMatchAnExplicitSoftmax) {
  Scenario s = Make();
  const auto batch = s.Batch(s.chunks.data(), s.tables.data());
  ASSERT_TRUE(
      StoreKvCpu(s.View(s.pool.data()), batch, kLayer, s.k.data(), s.v.data(), nullptr).ok());
  const auto want = Reference(s, s.pool.data());
  std::vector<float> out(s.q.size(), 12345.0f);
  ASSERT_TRUE(PagedAttentionDecodeCpu(s.View(s.pool.data()), batch, s.Params(), s.q.data(),
                                      out.data(), nullptr)
                  .ok());
  ExpectNear(out, want, kTwinTolerance, "decode twin");
  std::fill(out.begin(), out.end(), 12345.0f);
  ASSERT_TRUE(PagedAttentionPrefillCpu(s.View(s.pool.data()), batch, s.Params(), s.q.data(),
                                       out.data(), nullptr)
                  .ok());
  ExpectNear(out, want, kTwinTolerance, "prefill twin");
  // Against the f32 originals, the dtype's rounding shows.
  ExpectNear(out, Reference(s, nullptr), DtypeTolerance(s.g.dtype), "twin vs f32 originals");
}

// Copies a scenario's buffers to the device and back.
struct DeviceScenario {
  DeviceBuffer pool, chunks, tables, q, k, v, out;

  static DeviceScenario Upload(const Scenario& s) {
    DeviceScenario d;
    auto up = [](DeviceBuffer* b, const void* src, size_t bytes) {
      auto r = DeviceBuffer::Allocate(bytes);
      EXPECT_TRUE(r.ok()) << r.status();
      if (!r.ok()) return;
      *b = std::move(*r);
      if (src != nullptr) {
        EXPECT_TRUE(CopyToDevice(b->data(), src, bytes).ok());
      }
    };
    up(&d.pool, s.pool.data(), s.pool.size());
    up(&d.chunks, s.chunks.data(), s.chunks.size() * sizeof(AttentionChunk));
    up(&d.tables, s.tables.data(), s.tables.size() * sizeof(int32_t));
    up(&d.q, s.q.data(), s.q.size() * sizeof(float));
    up(&d.k, s.k.data(), s.k.size() * sizeof(float));
    up(&d.v, s.v.data(), s.v.size() * sizeof(float));
    up(&d.out, nullptr, s.q.size() * sizeof(float));
    return d;
  }
  AttentionBatch Batch(const Scenario& s) const {
    return s.Batch(static_cast<const AttentionChunk*>(chunks.data()),
                   static_cast<const int32_t*>(tables.data()));
  }
  const float* Q() const { return static_cast<const float*>(q.data()); }
  float* Out() const { return static_cast<float*>(out.data()); }
};

std::vector<float> Download(const DeviceBuffer& b, size_t n) {
  std::vector<float> v(n);
  EXPECT_TRUE(SynchronizeStream(nullptr).ok());
  EXPECT_TRUE(CopyToHost(v.data(), b.data(), n * sizeof(float)).ok());
  return v;
}

// StoreKv on both sides (bit-exact pools), then both attention launchers
// against the twin.
void CheckGpuAgainstTwin(Scenario& s, double tol) {
  DeviceScenario d = DeviceScenario::Upload(s);
  const auto batch = s.Batch(s.chunks.data(), s.tables.data());
  ASSERT_TRUE(
      StoreKvCpu(s.View(s.pool.data()), batch, kLayer, s.k.data(), s.v.data(), nullptr).ok());
  const auto dbatch = d.Batch(s);
  ASSERT_TRUE(StoreKv(s.View(d.pool.data()), dbatch, kLayer, static_cast<const float*>(d.k.data()),
                      static_cast<const float*>(d.v.data()), nullptr)
                  .ok());
  ASSERT_TRUE(SynchronizeStream(nullptr).ok());
  std::vector<std::byte> gpu_pool(s.pool.size());
  ASSERT_TRUE(CopyToHost(gpu_pool.data(), d.pool.data(), gpu_pool.size()).ok());
  ASSERT_TRUE(gpu_pool == s.pool) << "StoreKv: GPU and CPU pools differ";

  std::vector<float> want(s.q.size());
  ASSERT_TRUE(PagedAttentionDecodeCpu(s.View(s.pool.data()), batch, s.Params(), s.q.data(),
                                      want.data(), nullptr)
                  .ok());
  // Each launcher writes into an output full of NaN, so a row it skips shows.
  const std::vector<float> nan(want.size(), NAN);
  ASSERT_TRUE(CopyToDevice(d.out.data(), nan.data(), nan.size() * sizeof(float)).ok());
  ASSERT_TRUE(
      PagedAttentionDecode(s.View(d.pool.data()), dbatch, s.Params(), d.Q(), d.Out(), nullptr)
          .ok());
  ExpectNear(Download(d.out, want.size()), want, tol, "GPU decode");
  ASSERT_TRUE(CopyToDevice(d.out.data(), nan.data(), nan.size() * sizeof(float)).ok());
  ASSERT_TRUE(
      PagedAttentionPrefill(s.View(d.pool.data()), dbatch, s.Params(), d.Q(), d.Out(), nullptr)
          .ok());
  ExpectNear(Download(d.out, want.size()), want, tol, "GPU prefill");
}

TEST_P(AttentionTest, GpuLaunchersMatchTheCpuTwins) {
  if (!DeviceAvailable()) GTEST_SKIP() << DeviceDescription();
  Scenario s = Make(2);
  CheckGpuAgainstTwin(s, kGpuTolerance);
}

std::vector<Case> Cases() {
  const HeadShape shapes[] = {
      {2, 8, 64, 16},   // GQA 4x, Llama-ish 64-dim heads, small pages
      {4, 4, 128, 64},  // MHA, 128-dim heads
      {2, 8, 128, 64},  // GQA 4x, 128-dim heads
      {1, 4, 48, 16},   // odd-ish head_dim, one KV head
      {4, 8, 8, 16},    // stories260K's heads: 8 dims, GQA 2x
      {1, 2, 256, 32},  // the widest heads
      {2, 6, 50, 16},   // a group of 3 and head_dim not a multiple of 4
  };
  std::vector<Case> cases;
  for (const HeadShape& h : shapes) {
    for (DType d : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
      for (BatchKind k : {BatchKind::kDecode, BatchKind::kPrefill, BatchKind::kMixed}) {
        cases.push_back({h, d, k});
      }
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionTest, ::testing::ValuesIn(Cases()),
                         [](const auto& info) { return CaseName(info.param); });

// Long contexts for the decode kernel: 4096 keys (and 2000 beside it).
class AttentionLongTest : public ::testing::TestWithParam<DType> {};

TEST_P(AttentionLongTest, DecodeOver4096KeysMatchesTheReference) {
  Scenario s = MakeScenario({2, 8, 128, 64}, GetParam(), {{4095, 1}, {1999, 1}}, 3);
  const auto batch = s.Batch(s.chunks.data(), s.tables.data());
  ASSERT_TRUE(
      StoreKvCpu(s.View(s.pool.data()), batch, kLayer, s.k.data(), s.v.data(), nullptr).ok());
  std::vector<float> out(s.q.size());
  ASSERT_TRUE(PagedAttentionDecodeCpu(s.View(s.pool.data()), batch, s.Params(), s.q.data(),
                                      out.data(), nullptr)
                  .ok());
  ExpectNear(out, Reference(s, s.pool.data()), kTwinTolerance, "decode twin, 4096 keys");
}

TEST_P(AttentionLongTest, GpuDecodeOver4096KeysMatchesTheTwin) {
  if (!DeviceAvailable()) GTEST_SKIP() << DeviceDescription();
  Scenario s = MakeScenario({2, 8, 128, 64}, GetParam(), {{4095, 1}, {1999, 1}}, 4);
  CheckGpuAgainstTwin(s, kGpuTolerance);
}

TEST_P(AttentionLongTest, GpuDecodeOver32KKeysMatchesTheTwin) {
  if (!DeviceAvailable()) GTEST_SKIP() << DeviceDescription();
  Scenario s = MakeScenario({2, 8, 128, 64}, GetParam(), {{32767, 1}, {5000, 2}}, 5);
  CheckGpuAgainstTwin(s, kGpuTolerance);
}

// Many decoding sequences, so that the decode launcher shares K/V loads across
// several query heads per block (it does so once the grid fills the GPU).
TEST_P(AttentionLongTest, GpuWideDecodeBatchMatchesTheTwin) {
  if (!DeviceAvailable()) GTEST_SKIP() << DeviceDescription();
  for (const HeadShape& h : {HeadShape{8, 32, 128, 16}, HeadShape{8, 64, 64, 64},
                             HeadShape{2, 16, 256, 16}, HeadShape{4, 32, 32, 16}}) {
    std::vector<SeqSpec> seqs;
    std::mt19937 rng(6);
    for (int i = 0; i < 96; ++i) seqs.push_back({static_cast<int>(rng() % 200), 1});
    Scenario s = MakeScenario(h, GetParam(), seqs, 7);
    SCOPED_TRACE(std::to_string(h.n_heads) + " heads of " + std::to_string(h.head_dim));
    CheckGpuAgainstTwin(s, kGpuTolerance);
  }
}

// A long prefill chunk in the middle of a sequence, next to short ones.
TEST_P(AttentionLongTest, GpuLongPrefillChunkMatchesTheTwin) {
  if (!DeviceAvailable()) GTEST_SKIP() << DeviceDescription();
  for (const HeadShape& h :
       {HeadShape{2, 8, 128, 64}, HeadShape{1, 4, 256, 16}, HeadShape{2, 4, 64, 16}}) {
    Scenario s = MakeScenario(h, GetParam(), {{200, 600}, {0, 3}, {50, 1}}, 8);
    SCOPED_TRACE(std::to_string(h.n_heads) + " heads of " + std::to_string(h.head_dim));
    CheckGpuAgainstTwin(s, kGpuTolerance);
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, AttentionLongTest,
                         ::testing::Values(DType::kFloat32, DType::kFloat16, DType::kBFloat16),
                         [](const auto& info) { return std::string(DTypeName(info.param)); });

// A 16K-token prefill, 32 heads of 64 (f16): rows spot-checked against the
// double reference, and the time of one launch recorded (never asserted).
TEST(AttentionPrefillScaleTest, GpuPrefillOf16KTokensSpotChecks) {
  if (!DeviceAvailable()) GTEST_SKIP() << DeviceDescription();
  constexpr int kTokens = 16384;
  const HeadShape h{8, 32, 64, 64};
  Scenario s;
  s.g = KvGeometry{kLayers, h.kv_heads, h.head_dim, h.block_tokens, DType::kFloat16};
  s.n_heads = h.n_heads;
  s.scale = 0.125f;
  s.seqs = {{0, kTokens}};
  s.max_pages = kTokens / h.block_tokens;
  s.num_pages = s.max_pages;
  s.tables.resize(static_cast<size_t>(s.max_pages));
  std::iota(s.tables.begin(), s.tables.end(), 0);
  std::shuffle(s.tables.begin(), s.tables.end(), std::mt19937(9));
  s.chunks = {{0, 0, kTokens, 0}};
  s.rows = s.max_chunk = kTokens;
  std::mt19937 rng(10);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  s.k.resize(static_cast<size_t>(kTokens) * s.RowFloats());
  s.v.resize(s.k.size());
  s.q.resize(static_cast<size_t>(kTokens) * h.n_heads * h.head_dim);
  for (auto& x : s.k) x = unit(rng);
  for (auto& x : s.v) x = unit(rng);
  for (auto& x : s.q) x = 3.0f * unit(rng);
  s.pool.assign(s.g.BlockBytes() * static_cast<size_t>(s.num_pages), std::byte{0xff});
  DeviceScenario d = DeviceScenario::Upload(s);
  const auto dbatch = d.Batch(s);
  ASSERT_TRUE(StoreKv(s.View(d.pool.data()), dbatch, kLayer, static_cast<const float*>(d.k.data()),
                      static_cast<const float*>(d.v.data()), nullptr)
                  .ok());
  ASSERT_TRUE(SynchronizeStream(nullptr).ok());
  ASSERT_TRUE(CopyToHost(s.pool.data(), d.pool.data(), s.pool.size()).ok());
  // Warm up once, then time one launch.
  ASSERT_TRUE(
      PagedAttentionPrefill(s.View(d.pool.data()), dbatch, s.Params(), d.Q(), d.Out(), nullptr)
          .ok());
  ASSERT_TRUE(SynchronizeStream(nullptr).ok());
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(
      PagedAttentionPrefill(s.View(d.pool.data()), dbatch, s.Params(), d.Q(), d.Out(), nullptr)
          .ok());
  ASSERT_TRUE(SynchronizeStream(nullptr).ok());
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  RecordProperty("prefill_16k_ms", std::to_string(ms));
  std::printf("PagedAttentionPrefill, %d tokens, 32 heads of 64, f16: %.2f ms\n", kTokens, ms);
  const auto got = Download(d.out, s.q.size());
  // Spot rows: the first, some inside, the last; the reference over the stored pool.
  Scenario one;
  one.g = s.g;
  one.n_heads = s.n_heads;
  one.scale = s.scale;
  one.max_pages = s.max_pages;
  one.tables = s.tables;
  for (int row : {0, 1, 63, 64, 1000, 8191, 12345, kTokens - 1}) {
    one.seqs = {{row, 1}};
    one.chunks = {{0, row, 1, 0}};
    one.rows = one.max_chunk = 1;
    one.q.assign(s.q.begin() + static_cast<int64_t>(row) * h.n_heads * h.head_dim,
                 s.q.begin() + static_cast<int64_t>(row + 1) * h.n_heads * h.head_dim);
    const auto want = Reference(one, s.pool.data());
    const std::vector<float> got_row(
        got.begin() + static_cast<int64_t>(row) * h.n_heads * h.head_dim,
        got.begin() + static_cast<int64_t>(row + 1) * h.n_heads * h.head_dim);
    ExpectNear(got_row, want, kGpuTolerance, "row " + std::to_string(row));
  }
}

// ---------------------------------------------------------------------------
// Argument checking

class AttentionArgumentsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    s_ = MakeScenario({2, 4, 16, 16}, DType::kFloat16, {{3, 2}, {20, 1}}, 11);
  }

  // Every call must refuse with kInvalidArgument and leave out and the pool as they were.
  void ExpectRefused(const KvPagesView& kv, const AttentionBatch& batch, const AttentionParams& p,
                     const float* q, const float* k, const std::string& what) {
    std::vector<float> out(s_.q.size(), 7.0f);
    const auto pool_before = s_.pool;
    const auto out_before = out;
    EXPECT_EQ(PagedAttentionDecodeCpu(kv, batch, p, q, out.data(), nullptr).code(),
              StatusCode::kInvalidArgument)
        << what;
    EXPECT_EQ(PagedAttentionPrefillCpu(kv, batch, p, q, out.data(), nullptr).code(),
              StatusCode::kInvalidArgument)
        << what;
    EXPECT_EQ(StoreKvCpu(kv, batch, p.layer, k, s_.v.data(), nullptr).code(),
              StatusCode::kInvalidArgument)
        << what;
    EXPECT_EQ(out, out_before) << what;
    EXPECT_TRUE(s_.pool == pool_before) << what;
  }
  void ExpectChunkRefused(const std::vector<AttentionChunk>& chunks, const std::string& what) {
    auto batch = s_.Batch(chunks.data(), s_.tables.data());
    ExpectRefused(s_.View(s_.pool.data()), batch, s_.Params(), s_.q.data(), s_.k.data(), what);
  }

  Scenario s_;
};

TEST_F(AttentionArgumentsTest, TheScenarioItselfIsAccepted) {
  std::vector<float> out(s_.q.size());
  const auto batch = s_.Batch(s_.chunks.data(), s_.tables.data());
  EXPECT_TRUE(
      StoreKvCpu(s_.View(s_.pool.data()), batch, kLayer, s_.k.data(), s_.v.data(), nullptr).ok());
  EXPECT_TRUE(PagedAttentionDecodeCpu(s_.View(s_.pool.data()), batch, s_.Params(), s_.q.data(),
                                      out.data(), nullptr)
                  .ok());
  // An empty batch is fine too and touches nothing.
  AttentionBatch empty;
  EXPECT_TRUE(PagedAttentionPrefillCpu(s_.View(s_.pool.data()), empty, s_.Params(), nullptr,
                                       nullptr, nullptr)
                  .ok());
}

TEST_F(AttentionArgumentsTest, BadChunksAreRefusedWithoutWriting) {
  // s_.chunks: {table 0, start 3, 2 tokens, row 1}, {table 1, start 20, 1 token, row 0}
  auto bad = [&](auto mutate, const std::string& what) {
    auto chunks = s_.chunks;
    mutate(chunks);
    ExpectChunkRefused(chunks, what);
  };
  bad([](auto& c) { c[0].table = -1; }, "negative table");
  bad([](auto& c) { c[1].table = 2; }, "table past num_tables");
  bad([](auto& c) { c[0].num_tokens = 0; }, "empty chunk");
  bad([](auto& c) { c[1].num_tokens = 3; }, "chunk longer than max_chunk_tokens");
  bad([](auto& c) { c[0].start_pos = -1; }, "negative start_pos");
  bad([&](auto& c) { c[1].start_pos = s_.max_pages * 16; }, "position past the table");
  bad([](auto& c) { c[0].first_row = -1; }, "negative first_row");
  bad([](auto& c) { c[0].first_row = 2; }, "rows past the batch");
  bad([](auto& c) { c[1].first_row = 1; }, "overlapping rows");
}

TEST_F(AttentionArgumentsTest, BadPagesAreRefusedWithoutWriting) {
  for (int32_t page : {-1, static_cast<int32_t>(s_.num_pages)}) {
    auto tables = s_.tables;
    tables[1 * s_.max_pages + 1] = page;  // sequence 1's position 20 is in its page 1
    auto batch = s_.Batch(s_.chunks.data(), tables.data());
    ExpectRefused(s_.View(s_.pool.data()), batch, s_.Params(), s_.q.data(), s_.k.data(),
                  "page " + std::to_string(page));
  }
  // A bad entry past the pages a chunk reaches is never read: accepted.
  auto tables = s_.tables;
  tables[0 * s_.max_pages + s_.max_pages - 1] = -7;
  std::vector<float> out(s_.q.size());
  EXPECT_TRUE(PagedAttentionDecodeCpu(s_.View(s_.pool.data()),
                                      s_.Batch(s_.chunks.data(), tables.data()), s_.Params(),
                                      s_.q.data(), out.data(), nullptr)
                  .ok());
}

TEST_F(AttentionArgumentsTest, BadShapesAndPointersAreRefusedWithoutWriting) {
  const auto kv = s_.View(s_.pool.data());
  const auto batch = s_.Batch(s_.chunks.data(), s_.tables.data());
  const auto p = s_.Params();
  const float* q = s_.q.data();
  const float* k = s_.k.data();
  auto with_batch = [&](auto mutate, const std::string& what) {
    auto b = batch;
    mutate(b);
    ExpectRefused(kv, b, p, q, k, what);
  };
  with_batch([](auto& b) { b.rows = 4; }, "rows not the sum of the chunks");
  with_batch([](auto& b) { b.num_chunks = -1; }, "negative num_chunks");
  with_batch([](auto& b) { b.max_chunk_tokens = 0; }, "zero max_chunk_tokens");
  with_batch([](auto& b) { b.chunks = nullptr; }, "null chunks");
  with_batch([](auto& b) { b.block_tables = nullptr; }, "null block tables");
  with_batch([](auto& b) { b.max_pages = 0; }, "zero max_pages");
  auto with_kv = [&](auto mutate, const std::string& what) {
    auto v = kv;
    mutate(v);
    ExpectRefused(v, batch, p, q, k, what);
  };
  with_kv([](auto& v) { v.pool = nullptr; }, "null pool");
  with_kv([](auto& v) { v.num_pages = 0; }, "no pages");
  with_kv([](auto& v) { v.geometry.block_tokens = 24; }, "block_tokens not a power of two");
  with_kv([](auto& v) { v.geometry.head_dim = 0; }, "zero head_dim");
  auto with_params = [&](auto mutate, const std::string& what) {
    auto pp = p;
    mutate(pp);
    ExpectRefused(kv, batch, pp, q, k, what);
  };
  with_params([](auto& pp) { pp.layer = kLayers; }, "layer past the geometry");
  with_params([](auto& pp) { pp.layer = -1; }, "negative layer");
  // n_heads and scale do not concern StoreKv: check the attention twins alone.
  for (auto mutate :
       {+[](AttentionParams& pp) { pp.n_heads = 5; }, +[](AttentionParams& pp) { pp.n_heads = 0; },
        +[](AttentionParams& pp) { pp.scale = NAN; }}) {
    auto pp = p;
    mutate(pp);
    std::vector<float> out(s_.q.size(), 7.0f);
    EXPECT_EQ(PagedAttentionDecodeCpu(kv, batch, pp, q, out.data(), nullptr).code(),
              StatusCode::kInvalidArgument);
    EXPECT_EQ(PagedAttentionPrefillCpu(kv, batch, pp, q, out.data(), nullptr).code(),
              StatusCode::kInvalidArgument);
    EXPECT_EQ(out, std::vector<float>(s_.q.size(), 7.0f));
  }
  ExpectRefused(kv, batch, p, nullptr, nullptr, "null q and k");
  std::vector<float> out(s_.q.size());
  EXPECT_EQ(PagedAttentionDecodeCpu(kv, batch, p, q, nullptr, nullptr).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(StoreKvCpu(kv, batch, kLayer, k, nullptr, nullptr).code(),
            StatusCode::kInvalidArgument);
}

// The launchers' own host-side checks: no device memory is touched before
// they refuse, so this runs in any CUDA build, with or without a GPU.
TEST_F(AttentionArgumentsTest, LaunchersRefuseWhatTheyCanSeeOnTheHost) {
#if KVTIER_HAVE_CUDA
  const auto batch = s_.Batch(s_.chunks.data(), s_.tables.data());
  float out = 0;
  auto kv = s_.View(s_.pool.data());
  auto p = s_.Params();
  auto refused = [&](const KvPagesView& v, const AttentionParams& pp, const float* q, float* o) {
    EXPECT_EQ(PagedAttentionDecode(v, batch, pp, q, o, nullptr).code(),
              StatusCode::kInvalidArgument);
    EXPECT_EQ(PagedAttentionPrefill(v, batch, pp, q, o, nullptr).code(),
              StatusCode::kInvalidArgument);
  };
  auto wide = kv;
  wide.geometry.head_dim = 264;  // past the kernels' 256
  refused(wide, p, s_.q.data(), &out);
  auto pp = p;
  pp.n_heads = 3;
  refused(kv, pp, s_.q.data(), &out);
  refused(kv, p, nullptr, &out);
  auto misaligned = kv;
  misaligned.pool = reinterpret_cast<std::byte*>(s_.pool.data()) + 1;
  refused(misaligned, p, s_.q.data(), &out);
  EXPECT_EQ(StoreKv(misaligned, batch, kLayer, s_.k.data(), s_.v.data(), nullptr).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(StoreKv(kv, batch, kLayers, s_.k.data(), s_.v.data(), nullptr).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(out, 0.0f);
#else
  GTEST_SKIP() << "built without CUDA: the launchers answer Unavailable";
#endif
}

}  // namespace
}  // namespace kvtier
