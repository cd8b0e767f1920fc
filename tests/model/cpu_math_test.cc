#include "model/cpu_math.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

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

INSTANTIATE_TEST_SUITE_P(Shapes, MatMulTest,
                         ::testing::Values(std::make_tuple(1, 1, 1), std::make_tuple(1, 37, 64),
                                           std::make_tuple(7, 50, 172), std::make_tuple(5, 96, 13),
                                           std::make_tuple(67, 200, 64),
                                           std::make_tuple(130, 27, 256)));

TEST(CpuMathTest, AttendOneQueryIsDotSoftmaxAxpyOverPagedKeys) {
  for (int hd : {8, 12, 64, 136}) {
    const int page_tokens = 16, n = 37;  // three pages, the last one partial
    std::vector<std::vector<float>> kp, vp;
    std::vector<const float*> kptr, vptr;
    for (int p = 0; p < 3; ++p) {
      kp.push_back(RandomFloats(size_t(page_tokens) * hd, 10 + p));
      vp.push_back(RandomFloats(size_t(page_tokens) * hd, 20 + p));
      kptr.push_back(kp.back().data());
      vptr.push_back(vp.back().data());
    }
    const std::vector<float> q = RandomFloats(hd, 30);
    const float scale = 0.3f;
    std::vector<float> scores(n), out(hd);
    AttendOneQuery(q.data(), kptr.data(), vptr.data(), n, page_tokens, hd, scale, scores.data(),
                   out.data());
    // The same steps spelled out with Dot and Axpy: the same bits.
    std::vector<float> s(n), want(hd, 0.0f);
    for (int t = 0; t < n; ++t) s[t] = Dot(q.data(), &kp[t / 16][(t % 16) * hd], hd) * scale;
    float max = s[0], sum = 0;
    for (float x : s) max = std::max(max, x);
    for (float& x : s) sum += (x = std::exp(x - max));
    for (int t = 0; t < n; ++t) Axpy(s[t] / sum, &vp[t / 16][(t % 16) * hd], want.data(), hd);
    ASSERT_EQ(std::memcmp(out.data(), want.data(), hd * sizeof(float)), 0) << hd;
    // And close to a double-precision reference.
    std::vector<double> ds(n), ref(hd, 0.0);
    double dmax = -1e300, dsum = 0;
    for (int t = 0; t < n; ++t) {
      for (int j = 0; j < hd; ++j) ds[t] += double(q[j]) * kp[t / 16][(t % 16) * hd + j];
      ds[t] *= scale;
      dmax = std::max(dmax, ds[t]);
    }
    for (double& x : ds) dsum += (x = std::exp(x - dmax));
    for (int t = 0; t < n; ++t) {
      for (int j = 0; j < hd; ++j) ref[j] += ds[t] / dsum * vp[t / 16][(t % 16) * hd + j];
    }
    for (int j = 0; j < hd; ++j) ASSERT_NEAR(out[j], ref[j], 1e-5) << hd << " " << j;
  }
}

TEST(CpuMathTest, RmsNormAndAxpy) {
  const std::vector<float> x = {1, -2, 3, -4};
  const std::vector<float> g = {1, 1, 2, 0.5f};
  std::vector<float> out(4);
  RmsNorm(x.data(), g.data(), 4, 0.0f, out.data());
  const float inv = 1.0f / std::sqrt((1 + 4 + 9 + 16) / 4.0f);
  EXPECT_FLOAT_EQ(out[0], inv);
  EXPECT_FLOAT_EQ(out[2], 2 * 3 * inv);
  EXPECT_FLOAT_EQ(out[3], 0.5f * -4 * inv);
  std::vector<float> y(11, 1.0f), a(11, 2.0f);
  Axpy(0.5f, a.data(), y.data(), 11);
  for (float v : y) EXPECT_EQ(v, 2.0f);
}

}  // namespace
}  // namespace kvtier
