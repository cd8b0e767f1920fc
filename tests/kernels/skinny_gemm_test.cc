// Skinny GEMM (decode-step products with bf16 weights): the CPU twin against
// a double-precision reference, its argument checks, and the GPU kernel
// against the twin (skipped without a GPU). Tolerance: 1e-5 of the sum of
// |x·w| terms (f32 sums in different orders).
#include "kernels/skinny_gemm.cuh"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/dtype_convert.h"

namespace kvtier {
namespace {

struct Case {
  int rows;
  int64_t outs, k;
};

class SkinnyGemmTest : public ::testing::TestWithParam<Case> {};

struct Data {
  std::vector<float> x;
  std::vector<uint16_t> w;
  std::vector<double> want, scale;  // reference and sum of |terms| per output
};

Data Make(const Case& c) {
  Data d;
  std::mt19937 rng(static_cast<uint32_t>(c.rows * 131 + c.outs * 7 + c.k));
  std::uniform_real_distribution<float> u(-1, 1);
  d.x.resize(c.rows * c.k);
  for (float& v : d.x) v = u(rng);
  d.w.resize(c.outs * c.k);
  for (uint16_t& v : d.w) v = FloatToBf16Bits(u(rng));
  d.want.assign(c.rows * c.outs, 0);
  d.scale.assign(c.rows * c.outs, 0);
  for (int r = 0; r < c.rows; ++r) {
    for (int64_t o = 0; o < c.outs; ++o) {
      for (int64_t i = 0; i < c.k; ++i) {
        const double t = static_cast<double>(d.x[r * c.k + i]) * Bf16BitsToFloat(d.w[o * c.k + i]);
        d.want[r * c.outs + o] += t;
        d.scale[r * c.outs + o] += std::abs(t);
      }
    }
  }
  return d;
}

void ExpectClose(const std::vector<float>& got, const Data& d) {
  ASSERT_EQ(got.size(), d.want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_NEAR(got[i], d.want[i], 1e-5 * d.scale[i] + 1e-30) << "element " << i;
  }
}

TEST_P(SkinnyGemmTest, CpuTwinMatchesTheReference) {
  const Case c = GetParam();
  const Data d = Make(c);
  std::vector<float> y(c.rows * c.outs, -1);
  ASSERT_TRUE(
      SkinnyGemmBf16Cpu(d.x.data(), c.rows, d.w.data(), c.outs, c.k, y.data(), nullptr).ok());
  ExpectClose(y, d);
}

TEST_P(SkinnyGemmTest, GpuMatchesTheReference) {
  if (!DeviceAvailable()) GTEST_SKIP() << "no GPU: " << DeviceDescription();
  const Case c = GetParam();
  const Data d = Make(c);
  auto dx = DeviceBuffer::Allocate(d.x.size() * sizeof(float));
  auto dw = DeviceBuffer::Allocate(d.w.size() * sizeof(uint16_t));
  auto dy = DeviceBuffer::Allocate(c.rows * c.outs * sizeof(float));
  ASSERT_TRUE(dx.ok() && dw.ok() && dy.ok());
  ASSERT_TRUE(CopyToDevice(dx->data(), d.x.data(), d.x.size() * sizeof(float)).ok());
  ASSERT_TRUE(CopyToDevice(dw->data(), d.w.data(), d.w.size() * sizeof(uint16_t)).ok());
  ASSERT_TRUE(SkinnyGemmBf16(static_cast<const float*>(dx->data()), c.rows,
                             static_cast<const uint16_t*>(dw->data()), c.outs, c.k,
                             static_cast<float*>(dy->data()), nullptr)
                  .ok());
  ASSERT_TRUE(SynchronizeStream(nullptr).ok());
  std::vector<float> y(c.rows * c.outs);
  ASSERT_TRUE(CopyToHost(y.data(), dy->data(), y.size() * sizeof(float)).ok());
  ExpectClose(y, d);
}

INSTANTIATE_TEST_SUITE_P(Shapes, SkinnyGemmTest,
                         ::testing::Values(Case{1, 1, 8}, Case{1, 100, 64}, Case{2, 37, 256},
                                           Case{3, 512, 2048}, Case{5, 64, 8200}, Case{8, 300, 512},
                                           Case{8, 2048, 1024}, Case{1, 4096, 2048}),
                         [](const auto& info) {
                           return "r" + std::to_string(info.param.rows) + "_o" +
                                  std::to_string(info.param.outs) + "_k" +
                                  std::to_string(info.param.k);
                         });

TEST(SkinnyGemmArgumentsTest, BadArgumentsAreRefusedAndWriteNothing) {
  std::vector<float> x(16 * 9, 1), y(16, 7);
  alignas(16) uint16_t w[16 * 8] = {};
  auto code = [&](const float* xp, int rows, const uint16_t* wp, int64_t outs, int64_t k) {
    return SkinnyGemmBf16Cpu(xp, rows, wp, outs, k, y.data(), nullptr).code();
  };
  EXPECT_EQ(code(x.data(), 0, w, 2, 8), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(x.data(), kSkinnyMaxRows + 1, w, 2, 8), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(x.data(), 1, w, 0, 8), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(x.data(), 1, w, 2, 12), StatusCode::kInvalidArgument);  // k not a multiple of 8
  EXPECT_EQ(code(nullptr, 1, w, 2, 8), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(x.data(), 1, w + 1, 2, 8), StatusCode::kInvalidArgument);  // misaligned weights
  for (float v : y) EXPECT_EQ(v, 7);
}

}  // namespace
}  // namespace kvtier
