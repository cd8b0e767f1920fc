#include "model/cpu_math.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/dtype_convert.h"
#include "model/thread_pool.h"
#include "tests/model/random_floats.h"

namespace kvtier {
namespace {

class MatMulTest : public ::testing::TestWithParam<std::tuple<int, int, int>> {};

TEST_P(MatMulTest, MatchesADoubleReferenceAndIsBatchInvariant) {
  const auto [rows, outs, k] = GetParam();
  const std::vector<float> x = RandomFloats(static_cast<size_t>(rows) * k, 1);
  const std::vector<float> w = RandomFloats(static_cast<size_t>(outs) * k, 2);
  ThreadPool pool(2);
  std::vector<float> y(static_cast<size_t>(rows) * outs);
  MatMulTransposed(x.data(), rows, w.data(), outs, k, y.data(), &pool);
  for (int t = 0; t < rows; ++t) {
    // Each row alone, without the pool: the same bits as in the batch.
    std::vector<float> one(outs);
    MatMulTransposed(&x[static_cast<size_t>(t) * k], 1, w.data(), outs, k, one.data(), nullptr);
    ASSERT_EQ(std::memcmp(one.data(), &y[static_cast<size_t>(t) * outs], outs * sizeof(float)), 0)
        << "row " << t;
    for (int o = 0; o < outs; ++o) {
      double ref = 0;
      for (int j = 0; j < k; ++j) ref += double(x[size_t(t) * k + j]) * w[size_t(o) * k + j];
      ASSERT_NEAR(y[size_t(t) * outs + o], ref, 1e-4 * std::sqrt(double(k))) << t << "," << o;
      // And Dot agrees bit for bit with the product's element.
      ASSERT_EQ(Dot(&x[size_t(t) * k], &w[size_t(o) * k], k), y[size_t(t) * outs + o]);
    }
  }
}

// Every lane of every set is one element's chain of fused multiply-adds
// over k: AVX-512, AVX2 and portable C++ give the same bits for every shape.
TEST_P(MatMulTest, EveryInstructionSetGivesTheSameBits) {
  const auto [rows, outs, k] = GetParam();
  const std::vector<float> x = RandomFloats(static_cast<size_t>(rows) * k, 4);
  const std::vector<float> w = RandomFloats(static_cast<size_t>(outs) * k, 5);
  ThreadPool pool(2);
  std::vector<float> want(static_cast<size_t>(rows) * outs);
  const CpuIsa saved = SetCpuMathIsa(CpuIsa::kPortable);
  MatMulTransposed(x.data(), rows, w.data(), outs, k, want.data(), &pool);
  for (CpuIsa isa : {CpuIsa::kAvx2, CpuIsa::kAvx512, CpuIsa::kAvx512Bf16, CpuIsa::kAmx}) {
    if (isa > CpuMathBestIsa()) {
      std::printf("this CPU has no %s: that path is not tested here\n", CpuIsaName(isa));
      continue;
    }
    SetCpuMathIsa(isa);
    std::vector<float> y(want.size());
    MatMulTransposed(x.data(), rows, w.data(), outs, k, y.data(), &pool);
    EXPECT_EQ(std::memcmp(y.data(), want.data(), y.size() * sizeof(float)), 0) << CpuIsaName(isa);
  }
  SetCpuMathIsa(saved);
}

// bf16 weights: every set, the hardware's vdpbf16ps included, gives the
// bits of the scalar definition (per pair of k, fma with the odd element,
// then with the even one, x and w rounded to bf16), in any batch, and that is
// close to the double-precision product of the rounded operands.
TEST_P(MatMulTest, Bf16WeightsFollowTheirDefinitionOnEverySet) {
  const auto [rows, outs, k] = GetParam();
  const std::vector<float> x = RandomFloats(static_cast<size_t>(rows) * k, 6);
  const std::vector<float> w = RandomFloats(static_cast<size_t>(outs) * k, 7);
  auto bf = [](float f) { return Bf16BitsToFloat(FloatToBf16Bits(f)); };
  std::vector<float> want(static_cast<size_t>(rows) * outs);
  for (int t = 0; t < rows; ++t) {
    for (int o = 0; o < outs; ++o) {
      float acc = 0.0f;
      double ref = 0.0;
      for (int j = 0; 2 * j < k; ++j) {
        const size_t e = 2 * size_t(j), xi = size_t(t) * k + e, wi = size_t(o) * k + e;
        if (e + 1 < size_t(k)) acc = std::fma(bf(x[xi + 1]), bf(w[wi + 1]), acc);
        acc = std::fma(bf(x[xi]), bf(w[wi]), acc);
      }
      for (int j = 0; j < k; ++j)
        ref += double(bf(x[size_t(t) * k + j])) * bf(w[size_t(o) * k + j]);
      want[size_t(t) * outs + o] = acc;
      ASSERT_NEAR(acc, ref, 1e-4 * std::sqrt(double(k)));
    }
  }
  const PackedMatrix packed(w.data(), outs, k, WeightType::kBf16);
  ThreadPool pool(2);
  const CpuIsa saved = CpuMathIsa();
  for (CpuIsa isa : {CpuIsa::kPortable, CpuIsa::kAvx2, CpuIsa::kAvx512, CpuIsa::kAvx512Bf16}) {
    if (isa > CpuMathBestIsa()) {
      std::printf("this CPU has no %s: that path is not tested here\n", CpuIsaName(isa));
      continue;
    }
    SetCpuMathIsa(isa);
    std::vector<float> y(want.size());
    MatMul(x.data(), rows, packed, y.data(), &pool);
    EXPECT_EQ(std::memcmp(y.data(), want.data(), y.size() * sizeof(float)), 0) << CpuIsaName(isa);
    std::vector<float> one(static_cast<size_t>(outs));
    MatMul(&x[static_cast<size_t>(rows - 1) * k], 1, packed, one.data(), nullptr);
    EXPECT_EQ(std::memcmp(one.data(), &want[static_cast<size_t>(rows - 1) * outs],
                          one.size() * sizeof(float)),
              0)
        << CpuIsaName(isa) << ": the last row alone";
  }
  SetCpuMathIsa(saved);
}

// The largest denormals (|x| from 0x007f8000) round to bf16's smallest
// normal, 2^-126, which no set flushes: every set's product keeps them, the
// avx512bf16 packing (vcvtne2ps2bf16 makes denormals zero) included. In
// tiles of 12 rows, of 4 and alone.
TEST(CpuMathTest, Bf16ProductsKeepDenormalsThatRoundToANormal) {
  auto from_bits = [](uint32_t b) {
    float f;
    std::memcpy(&f, &b, sizeof f);
    return f;
  };
  const int rows = 17, k = 5, outs = 3;
  std::vector<float> x(static_cast<size_t>(rows) * k, 0.0f);
  for (int t = 0; t < rows; ++t) {
    x[size_t(t) * k + t % k] = from_bits(t % 2 == 0 ? 0x007fffffu : 0x807f8000u);
  }
  const std::vector<float> w(static_cast<size_t>(outs) * k, 1.5f);
  const PackedMatrix packed(w.data(), outs, k, WeightType::kBf16);
  const float tiny = std::ldexp(1.0f, -126) * 1.5f;
  const CpuIsa saved = CpuMathIsa();
  ThreadPool pool(2);
  for (CpuIsa isa : {CpuIsa::kPortable, CpuIsa::kAvx2, CpuIsa::kAvx512, CpuIsa::kAvx512Bf16}) {
    if (isa > CpuMathBestIsa()) continue;
    SetCpuMathIsa(isa);
    std::vector<float> y(static_cast<size_t>(rows) * outs);
    MatMul(x.data(), rows, packed, y.data(), &pool);
    for (int t = 0; t < rows; ++t) {
      for (int o = 0; o < outs; ++o) {
        EXPECT_EQ(y[size_t(t) * outs + o], t % 2 == 0 ? tiny : -tiny)
            << CpuIsaName(isa) << " row " << t;
      }
    }
  }
  SetCpuMathIsa(saved);
}

// bf16 weights on AMX tiles: TDPBF16PS's rounding inside a tile step is
// its own (no simple model of one or two roundings per pair, or per group
// of pairs, matched it on this CPU), so its results are held to the
// double-precision product of the rounded operands and to the avx512bf16
// kernel within the same bound as every other path; and each row's bits
// are its own, whatever else is in the batch (the cache-hit invariant).
// Shapes whose k is not a multiple of 32 run the avx512bf16 kernel and keep
// its bits.
TEST_P(MatMulTest, Bf16WeightsOnAmxAreCloseAndBatchInvariant) {
  if (CpuMathBestIsa() < CpuIsa::kAmx) {
    GTEST_SKIP() << "this CPU (or its kernel) gives no AMX tiles: that path is not tested here";
  }
  const auto [rows, outs, k] = GetParam();
  const std::vector<float> x = RandomFloats(static_cast<size_t>(rows) * k, 8);
  const std::vector<float> w = RandomFloats(static_cast<size_t>(outs) * k, 9);
  auto bf = [](float f) { return double(Bf16BitsToFloat(FloatToBf16Bits(f))); };
  const PackedMatrix packed(w.data(), outs, k, WeightType::kBf16);
  ThreadPool pool(2);
  const CpuIsa saved = SetCpuMathIsa(CpuIsa::kAvx512Bf16);
  std::vector<float> vdp(static_cast<size_t>(rows) * outs), y(vdp.size());
  MatMul(x.data(), rows, packed, vdp.data(), &pool);
  SetCpuMathIsa(CpuIsa::kAmx);
  MatMul(x.data(), rows, packed, y.data(), &pool);
  if (k % 32 != 0) {
    EXPECT_EQ(std::memcmp(y.data(), vdp.data(), y.size() * sizeof(float)), 0);
  }
  const double bound = 1e-4 * std::sqrt(double(k));
  for (int t = 0; t < rows; ++t) {
    for (int o = 0; o < outs; ++o) {
      double ref = 0.0;
      for (int j = 0; j < k; ++j) ref += bf(x[size_t(t) * k + j]) * bf(w[size_t(o) * k + j]);
      const float got = y[size_t(t) * outs + o];
      ASSERT_NEAR(got, ref, bound) << t << "," << o;
      ASSERT_NEAR(got, vdp[size_t(t) * outs + o], bound) << t << "," << o;
    }
  }
  std::vector<float> one(static_cast<size_t>(outs));
  for (int t : {0, rows / 2, rows - 1}) {
    MatMul(&x[static_cast<size_t>(t) * k], 1, packed, one.data(), nullptr);
    EXPECT_EQ(
        std::memcmp(one.data(), &y[static_cast<size_t>(t) * outs], one.size() * sizeof(float)), 0)
        << "row " << t << " alone";
  }
  SetCpuMathIsa(saved);
}

INSTANTIATE_TEST_SUITE_P(Shapes, MatMulTest,
                         ::testing::Values(std::make_tuple(1, 1, 1), std::make_tuple(1, 37, 64),
                                           std::make_tuple(7, 50, 172), std::make_tuple(5, 96, 13),
                                           std::make_tuple(67, 200, 64),
                                           std::make_tuple(130, 27, 256), std::make_tuple(2, 7, 9),
                                           std::make_tuple(9, 13, 24), std::make_tuple(64, 96, 512),
                                           std::make_tuple(13, 33, 40), std::make_tuple(29, 70, 17),
                                           std::make_tuple(1, 100, 31), std::make_tuple(45, 83, 96),
                                           std::make_tuple(33, 48, 1024),
                                           // Enough rows that the pool packs x (odd k).
                                           std::make_tuple(151, 40, 531)));

TEST(CpuMathTest, RmsNorm) {
  const std::vector<float> x = {1, -2, 3, -4};
  const std::vector<float> g = {1, 1, 2, 0.5f};
  std::vector<float> out(4);
  RmsNorm(x.data(), g.data(), 4, 0.0f, out.data());
  const float inv = 1.0f / std::sqrt((1 + 4 + 9 + 16) / 4.0f);
  EXPECT_FLOAT_EQ(out[0], inv);
  EXPECT_FLOAT_EQ(out[2], 2 * 3 * inv);
  EXPECT_FLOAT_EQ(out[3], 0.5f * -4 * inv);
}

// SwiGLU's silu(gate) * up on every set: the same bits (a Cephes-style exp
// of lane-wise operations, not libm's), within a few ulp of double, at any
// length (the tail too), and sane far out on both sides.
TEST(CpuMathTest, SwiGluIsTheSameOnEverySetAndCloseToDouble) {
  std::vector<float> gate = RandomFloats(1000, 21), up = RandomFloats(1000, 22);
  for (size_t i = 0; i < gate.size(); i += 3) gate[i] *= 40.0f;
  const std::vector<float> edges = {0.0f,   -0.0f,   87.0f,  88.5f,  100.0f,  1e30f, -87.0f,
                                    -88.5f, -100.0f, -1e30f, 1e-30f, -1e-30f, 16.0f};
  for (size_t i = 0; i < edges.size(); ++i) gate[i] = edges[i];
  const CpuIsa saved = SetCpuMathIsa(CpuIsa::kPortable);
  for (int64_t n : {1000, 999, 17, 16, 15, 1}) {
    std::vector<float> want(static_cast<size_t>(n));
    SetCpuMathIsa(CpuIsa::kPortable);
    SwiGlu(gate.data(), up.data(), n, want.data());
    for (int64_t i = 0; i < n; ++i) {
      const double g = gate[size_t(i)], ref = g / (1.0 + std::exp(-g)) * up[size_t(i)];
      ASSERT_NEAR(want[size_t(i)], ref, 1e-6 * std::fabs(ref) + 1e-35) << "gate " << g;
    }
    for (CpuIsa isa : {CpuIsa::kAvx2, CpuIsa::kAvx512, CpuIsa::kAvx512Bf16, CpuIsa::kAmx}) {
      if (isa > CpuMathBestIsa()) continue;
      SetCpuMathIsa(isa);
      std::vector<float> got(static_cast<size_t>(n));
      SwiGlu(gate.data(), up.data(), n, got.data());
      ASSERT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0)
          << CpuIsaName(isa) << " n " << n;
    }
  }
  SetCpuMathIsa(saved);
}

// ArgMax is std::max_element's index on every set: ties (the first), NaN
// (never the largest, unless first), signed zeros, -inf, every length.
TEST(CpuMathTest, ArgMaxIsMaxElementsIndexOnEverySet) {
  std::mt19937 gen(5);
  const float specials[] = {std::nanf(""), -0.0f, 0.0f, -INFINITY, INFINITY, 1.0f, 3.0f};
  const CpuIsa saved = CpuMathIsa();
  for (int trial = 0; trial < 400; ++trial) {
    const int64_t n = std::uniform_int_distribution<int64_t>(0, 1200)(gen);
    std::vector<float> x = RandomFloats(static_cast<size_t>(n), 100 + trial);
    // Some rows: few distinct values (ties), specials sprinkled in.
    if (trial % 3 == 0) {
      for (float& v : x) v = std::round(v * 2.0f);
    }
    const int sprinkle = trial % 5 == 0 ? 0 : std::uniform_int_distribution<int>(0, 12)(gen);
    for (int s = 0; s < sprinkle && n > 0; ++s) {
      x[std::uniform_int_distribution<size_t>(0, x.size() - 1)(gen)] =
          specials[std::uniform_int_distribution<int>(0, 6)(gen)];
    }
    if (trial % 7 == 0) std::fill(x.begin(), x.end(), trial % 2 ? -INFINITY : std::nanf(""));
    if (trial % 11 == 0 && n > 0) x[0] = std::nanf("");
    const int64_t want = std::max_element(x.begin(), x.end()) - x.begin();
    for (CpuIsa isa :
         {CpuIsa::kPortable, CpuIsa::kAvx2, CpuIsa::kAvx512, CpuIsa::kAvx512Bf16, CpuIsa::kAmx}) {
      if (isa > CpuMathBestIsa()) continue;
      SetCpuMathIsa(isa);
      ASSERT_EQ(ArgMax(x.data(), n), want) << CpuIsaName(isa) << " trial " << trial << " n " << n;
    }
  }
  SetCpuMathIsa(saved);
}

}  // namespace
}  // namespace kvtier
