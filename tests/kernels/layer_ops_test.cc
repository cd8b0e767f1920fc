// The per-token layer operations: each CPU twin against a reference in double
// written here, argument checking, and each GPU launcher against its twin
// (skipped without a device).
//
// Tolerances: RMSNorm twin vs double 1e-5 relative to the row's scale (its
// f32 sum of squares over up to 4099 elements); RoPE and SwiGLU 1e-6 (one or
// two f32 roundings of values <= 4); the add and the gather are exact. GPU vs
// twin: RMSNorm 1e-5 (another summation order), RoPE 1e-6 (FMA contraction),
// SwiGLU 1e-6 relative (expf to 2 ulp), add and gather exact.
#include "kernels/layer_ops.cuh"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

namespace kvtier {
namespace {

std::vector<float> Random(size_t n, uint32_t seed, float lo = -2.0f, float hi = 2.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

// |got - want| <= tol * (1 + |want|) everywhere (relative above 1, absolute below).
template <class T>
void ExpectClose(const std::vector<float>& got, const std::vector<T>& want, double tol,
                 const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    const double w = static_cast<double>(want[i]);
    ASSERT_LE(std::fabs(static_cast<double>(got[i]) - w), tol * (1.0 + std::fabs(w)))
        << what << " at " << i << ": got " << got[i] << ", want " << w;
  }
}

// Device copies for the GPU comparisons.
template <class T>
DeviceBuffer Upload(const std::vector<T>& v) {
  auto b = DeviceBuffer::Allocate(v.size() * sizeof(T));
  EXPECT_TRUE(b.ok());
  if (!b.ok()) return {};
  EXPECT_TRUE(CopyToDevice(b->data(), v.data(), v.size() * sizeof(T)).ok());
  return std::move(*b);
}

template <class T>
std::vector<T> Download(const DeviceBuffer& b, size_t n) {
  std::vector<T> v(n);
  EXPECT_TRUE(SynchronizeStream(nullptr).ok());
  EXPECT_TRUE(CopyToHost(v.data(), b.data(), n * sizeof(T)).ok());
  return v;
}

float* F(const DeviceBuffer& b) { return static_cast<float*>(b.data()); }
int32_t* I(const DeviceBuffer& b) { return static_cast<int32_t*>(b.data()); }

// ---------------------------------------------------------------------------
// RMSNorm

class RmsNormTest : public ::testing::TestWithParam<int> {};

std::vector<double> RmsNormReference(const std::vector<float>& x, const std::vector<float>& w,
                                     int64_t rows, int n, double eps) {
  std::vector<double> out(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int i = 0; i < n; ++i) ss += static_cast<double>(x[r * n + i]) * x[r * n + i];
    const double inv = 1.0 / std::sqrt(ss / n + eps);
    for (int i = 0; i < n; ++i) out[r * n + i] = w[i] * x[r * n + i] * inv;
  }
  return out;
}

TEST_P(RmsNormTest, CpuTwinMatchesTheReferenceAlsoInPlace) {
  const int n = GetParam();
  const int64_t rows = 5;
  auto x = Random(static_cast<size_t>(rows * n), 1);
  const auto w = Random(static_cast<size_t>(n), 2, 0.5f, 1.5f);
  x[3] = 0.0f;  // rows with small values and zeros are fine
  const auto want = RmsNormReference(x, w, rows, n, 1e-5);
  std::vector<float> out(x.size(), NAN);
  ASSERT_TRUE(RmsNormRowsCpu(x.data(), w.data(), rows, n, 1e-5f, out.data(), nullptr).ok());
  ExpectClose(out, want, 1e-5, "twin");
  ASSERT_TRUE(RmsNormRowsCpu(x.data(), w.data(), rows, n, 1e-5f, x.data(), nullptr).ok());
  EXPECT_EQ(x, out) << "in place must equal out of place";
}

TEST_P(RmsNormTest, GpuMatchesTheCpuTwin) {
  if (!DeviceAvailable()) GTEST_SKIP() << DeviceDescription();
  const int n = GetParam();
  const int64_t rows = 37;
  const auto x = Random(static_cast<size_t>(rows * n), 3);
  const auto w = Random(static_cast<size_t>(n), 4, 0.5f, 1.5f);
  std::vector<float> want(x.size());
  ASSERT_TRUE(RmsNormRowsCpu(x.data(), w.data(), rows, n, 1e-6f, want.data(), nullptr).ok());
  auto dx = Upload(x), dw = Upload(w), dout = Upload(std::vector<float>(x.size()));
  ASSERT_TRUE(RmsNormRows(F(dx), F(dw), rows, n, 1e-6f, F(dout), nullptr).ok());
  ExpectClose(Download<float>(dout, x.size()), want, 1e-5, "GPU out of place");
  ASSERT_TRUE(RmsNormRows(F(dx), F(dw), rows, n, 1e-6f, F(dx), nullptr).ok());
  ExpectClose(Download<float>(dx, x.size()), want, 1e-5, "GPU in place");
}

INSTANTIATE_TEST_SUITE_P(Widths, RmsNormTest, ::testing::Values(1, 7, 64, 288, 4099));

// ---------------------------------------------------------------------------
// RoPE

struct RopeShape {
  int64_t rows;
  int width, head_dim, max_pos;
};

class RopeTest : public ::testing::TestWithParam<RopeShape> {
 protected:
  void SetUp() override {
    const RopeShape s = GetParam();
    const int half = s.head_dim / 2;
    cos_.resize(static_cast<size_t>(s.max_pos) * half);
    sin_.resize(cos_.size());
    for (int p = 0; p < s.max_pos; ++p) {
      for (int j = 0; j < half; ++j) {
        const double angle = p * std::pow(10000.0, -2.0 * j / s.head_dim);
        cos_[static_cast<size_t>(p) * half + j] = static_cast<float>(std::cos(angle));
        sin_[static_cast<size_t>(p) * half + j] = static_cast<float>(std::sin(angle));
      }
    }
    x_ = Random(static_cast<size_t>(s.rows) * s.width, 5);
    std::mt19937 rng(6);
    for (int64_t r = 0; r < s.rows; ++r)
      positions_.push_back(static_cast<int32_t>(rng() % s.max_pos));
    positions_[0] = 0;
    positions_.back() = s.max_pos - 1;
  }
  std::vector<float> cos_, sin_, x_;
  std::vector<int32_t> positions_;
};

TEST_P(RopeTest, CpuTwinRotatesEachPairOfEachHead) {
  const RopeShape s = GetParam();
  const int half = s.head_dim / 2;
  // The reference walks heads and pairs explicitly, in double.
  std::vector<double> want(x_.size());
  for (int64_t r = 0; r < s.rows; ++r) {
    for (int h = 0; h < s.width / s.head_dim; ++h) {
      for (int j = 0; j < half; ++j) {
        const size_t i = static_cast<size_t>(r * s.width + h * s.head_dim + 2 * j);
        const double c = cos_[static_cast<size_t>(positions_[r]) * half + j];
        const double sn = sin_[static_cast<size_t>(positions_[r]) * half + j];
        want[i] = x_[i] * c - x_[i + 1] * sn;
        want[i + 1] = x_[i] * sn + x_[i + 1] * c;
      }
    }
  }
  auto x = x_;
  ASSERT_TRUE(RopeRowsCpu(x.data(), s.rows, s.width, s.head_dim, positions_.data(), cos_.data(),
                          sin_.data(), s.max_pos, nullptr)
                  .ok());
  ExpectClose(x, want, 1e-6, "twin");
}

TEST_P(RopeTest, GpuMatchesTheCpuTwinAndSkipsBadPositions) {
  if (!DeviceAvailable()) GTEST_SKIP() << DeviceDescription();
  const RopeShape s = GetParam();
  auto want = x_;
  ASSERT_TRUE(RopeRowsCpu(want.data(), s.rows, s.width, s.head_dim, positions_.data(), cos_.data(),
                          sin_.data(), s.max_pos, nullptr)
                  .ok());
  // A row with a position out of range is left as it was on the GPU.
  auto positions = positions_;
  positions[s.rows / 2] = s.max_pos;
  std::copy_n(x_.begin() + s.rows / 2 * s.width, s.width, want.begin() + s.rows / 2 * s.width);
  auto dx = Upload(x_), dp = Upload(positions), dc = Upload(cos_), ds = Upload(sin_);
  ASSERT_TRUE(
      RopeRows(F(dx), s.rows, s.width, s.head_dim, I(dp), F(dc), F(ds), s.max_pos, nullptr).ok());
  ExpectClose(Download<float>(dx, x_.size()), want, 1e-6, "GPU");
}

INSTANTIATE_TEST_SUITE_P(Shapes, RopeTest,
                         ::testing::Values(RopeShape{3, 64, 8, 32},       // stories260K
                                           RopeShape{9, 4096, 128, 512},  // 32 heads of 128
                                           RopeShape{4, 96, 48, 17},      // odd-ish head_dim
                                           RopeShape{2, 2, 2, 5}),        // one pair
                         [](const auto& info) {
                           return "w" + std::to_string(info.param.width) + "_d" +
                                  std::to_string(info.param.head_dim);
                         });

// ---------------------------------------------------------------------------
// SwiGLU, add, gather

TEST(SwiGluTest, CpuTwinMatchesTheReferenceAlsoAliased) {
  const int64_t n = 1000;
  auto gate = Random(n, 7, -8.0f, 8.0f);
  const auto up = Random(n, 8);
  std::vector<double> want(n);
  for (int64_t i = 0; i < n; ++i) want[i] = gate[i] / (1.0 + std::exp(-double{gate[i]})) * up[i];
  std::vector<float> out(n);
  ASSERT_TRUE(SwiGluCpu(gate.data(), up.data(), n, out.data(), nullptr).ok());
  ExpectClose(out, want, 1e-6, "twin");
  ASSERT_TRUE(SwiGluCpu(gate.data(), up.data(), n, gate.data(), nullptr).ok());
  EXPECT_EQ(gate, out);
}

TEST(SwiGluTest, GpuMatchesTheCpuTwin) {
  if (!DeviceAvailable()) GTEST_SKIP() << DeviceDescription();
  const int64_t n = 100003;
  const auto gate = Random(n, 9, -8.0f, 8.0f), up = Random(n, 10);
  std::vector<float> want(n);
  ASSERT_TRUE(SwiGluCpu(gate.data(), up.data(), n, want.data(), nullptr).ok());
  auto dg = Upload(gate), du = Upload(up), dout = Upload(std::vector<float>(n));
  ASSERT_TRUE(SwiGlu(F(dg), F(du), n, F(dout), nullptr).ok());
  ExpectClose(Download<float>(dout, n), want, 1e-6, "GPU");
  ASSERT_TRUE(SwiGlu(F(dg), F(du), n, F(du), nullptr).ok());  // out aliases up
  ExpectClose(Download<float>(du, n), want, 1e-6, "GPU aliased");
}

TEST(AddInPlaceTest, CpuTwinAndGpuAddExactly) {
  const int64_t n = 70001;
  const auto y0 = Random(n, 11), x = Random(n, 12);
  std::vector<float> want(n);
  for (int64_t i = 0; i < n; ++i) want[i] = y0[i] + x[i];
  auto y = y0;
  ASSERT_TRUE(AddInPlaceCpu(y.data(), x.data(), n, nullptr).ok());
  EXPECT_EQ(y, want);
  if (!DeviceAvailable()) GTEST_SKIP() << DeviceDescription();
  auto dy = Upload(y0), dx = Upload(x);
  ASSERT_TRUE(AddInPlace(F(dy), F(dx), n, nullptr).ok());
  EXPECT_EQ(Download<float>(dy, n), want);
}

TEST(GatherRowsTest, CpuTwinCopiesTheNamedRows) {
  const int width = 5;
  const int64_t table_rows = 7;
  std::vector<float> table(table_rows * width);
  for (size_t i = 0; i < table.size(); ++i) table[i] = static_cast<float>(i);
  const std::vector<int32_t> ids = {6, 0, 3, 3};
  std::vector<float> out(ids.size() * width, -1.0f);
  ASSERT_TRUE(
      GatherRowsCpu(table.data(), table_rows, ids.data(), 4, width, out.data(), nullptr).ok());
  for (size_t r = 0; r < ids.size(); ++r) {
    for (int i = 0; i < width; ++i) EXPECT_EQ(out[r * width + i], ids[r] * width + i);
  }
}

TEST(GatherRowsTest, GpuMatchesTheCpuTwinAndSkipsBadIds) {
  if (!DeviceAvailable()) GTEST_SKIP() << DeviceDescription();
  const int width = 288;
  const int64_t table_rows = 512, rows = 300;
  const auto table = Random(static_cast<size_t>(table_rows) * width, 13);
  std::vector<int32_t> ids(rows);
  std::mt19937 rng(14);
  for (auto& id : ids) id = static_cast<int32_t>(rng() % table_rows);
  std::vector<float> want(static_cast<size_t>(rows) * width);
  ASSERT_TRUE(
      GatherRowsCpu(table.data(), table_rows, ids.data(), rows, width, want.data(), nullptr).ok());
  // Rows with ids out of range stay untouched on the GPU (the twin refuses them).
  ids[5] = -1;
  ids[200] = static_cast<int32_t>(table_rows);
  const std::vector<float> sentinel(want.size(), 42.0f);
  for (int64_t r : {5, 200}) std::fill_n(want.begin() + r * width, width, 42.0f);
  auto dt = Upload(table), di = Upload(ids), dout = Upload(sentinel);
  ASSERT_TRUE(GatherRows(F(dt), table_rows, I(di), rows, width, F(dout), nullptr).ok());
  EXPECT_EQ(Download<float>(dout, want.size()), want);
}

// ---------------------------------------------------------------------------
// Argument checking: each bad argument is kInvalidArgument, nothing written.

TEST(LayerOpsArgumentsTest, BadArgumentsAreRefusedWithoutWriting) {
  std::vector<float> x(16, 1.0f), w(8, 1.0f), out(16, 3.0f), cos(8, 1.0f), sin(8, 0.0f);
  const auto out0 = out, x0 = x;
  auto invalid = [](const Status& s) { return s.code() == StatusCode::kInvalidArgument; };
  EXPECT_TRUE(invalid(RmsNormRowsCpu(x.data(), w.data(), -1, 8, 1e-5f, out.data(), nullptr)));
  EXPECT_TRUE(invalid(RmsNormRowsCpu(x.data(), w.data(), 2, 0, 1e-5f, out.data(), nullptr)));
  EXPECT_TRUE(invalid(RmsNormRowsCpu(x.data(), w.data(), 2, 8, -1.0f, out.data(), nullptr)));
  EXPECT_TRUE(invalid(RmsNormRowsCpu(x.data(), nullptr, 2, 8, 1e-5f, out.data(), nullptr)));
  EXPECT_TRUE(invalid(RmsNormRowsCpu(x.data(), w.data(), 2, 8, NAN, out.data(), nullptr)));
  std::vector<int32_t> pos = {0, 4};  // max_pos is 4
  EXPECT_TRUE(
      invalid(RopeRowsCpu(x.data(), 2, 8, 4, pos.data(), cos.data(), sin.data(), 4, nullptr)));
  pos = {-1, 0};
  EXPECT_TRUE(
      invalid(RopeRowsCpu(x.data(), 2, 8, 4, pos.data(), cos.data(), sin.data(), 4, nullptr)));
  pos = {0, 1};
  EXPECT_TRUE(
      invalid(RopeRowsCpu(x.data(), 2, 8, 3, pos.data(), cos.data(), sin.data(), 4, nullptr)));
  EXPECT_TRUE(
      invalid(RopeRowsCpu(x.data(), 2, 6, 4, pos.data(), cos.data(), sin.data(), 4, nullptr)));
  EXPECT_TRUE(invalid(RopeRowsCpu(x.data(), 2, 8, 4, pos.data(), nullptr, sin.data(), 4, nullptr)));
  EXPECT_TRUE(
      invalid(RopeRowsCpu(x.data(), 2, 8, 4, pos.data(), cos.data(), sin.data(), 0, nullptr)));
  EXPECT_TRUE(invalid(SwiGluCpu(x.data(), nullptr, 16, out.data(), nullptr)));
  EXPECT_TRUE(invalid(SwiGluCpu(x.data(), x.data(), -1, out.data(), nullptr)));
  EXPECT_TRUE(invalid(AddInPlaceCpu(out.data(), nullptr, 16, nullptr)));
  EXPECT_TRUE(invalid(AddInPlaceCpu(out.data(), x.data(), -1, nullptr)));
  std::vector<int32_t> ids = {0, 2};  // table of 2 rows
  EXPECT_TRUE(invalid(GatherRowsCpu(x.data(), 2, ids.data(), 2, 8, out.data(), nullptr)));
  ids = {-1, 0};
  EXPECT_TRUE(invalid(GatherRowsCpu(x.data(), 2, ids.data(), 2, 8, out.data(), nullptr)));
  ids = {0, 1};
  EXPECT_TRUE(invalid(GatherRowsCpu(x.data(), 2, ids.data(), 2, 0, out.data(), nullptr)));
  EXPECT_TRUE(invalid(GatherRowsCpu(x.data(), 2, ids.data(), -1, 8, out.data(), nullptr)));
  EXPECT_EQ(out, out0);
  EXPECT_EQ(x, x0);
  // Zero rows or elements are fine and touch nothing.
  EXPECT_TRUE(RmsNormRowsCpu(nullptr, nullptr, 0, 8, 1e-5f, nullptr, nullptr).ok());
  EXPECT_TRUE(SwiGluCpu(nullptr, nullptr, 0, nullptr, nullptr).ok());
  EXPECT_TRUE(GatherRowsCpu(nullptr, 0, nullptr, 0, 8, nullptr, nullptr).ok());
#if KVTIER_HAVE_CUDA
  // The launchers' host-side checks, with or without a device.
  EXPECT_TRUE(invalid(RmsNormRows(x.data(), w.data(), 2, 0, 1e-5f, out.data(), nullptr)));
  EXPECT_TRUE(invalid(RopeRows(x.data(), 2, 8, 3, pos.data(), cos.data(), sin.data(), 4, nullptr)));
  EXPECT_TRUE(invalid(SwiGlu(x.data(), nullptr, 16, out.data(), nullptr)));
  EXPECT_TRUE(invalid(AddInPlace(out.data(), x.data(), -1, nullptr)));
  EXPECT_TRUE(invalid(GatherRows(x.data(), 2, ids.data(), 2, 0, out.data(), nullptr)));
  EXPECT_EQ(out, out0);
#endif
}

}  // namespace
}  // namespace kvtier
