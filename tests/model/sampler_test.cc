#include "model/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "tests/model/random_floats.h"

namespace kvtier {
namespace {

TEST(SamplerTest, GreedyTakesTheFirstMaximum) {
  Sampler s(SamplingParams{});
  const std::vector<float> logits = {0.1f, 3.0f, -1.0f, 3.0f};
  EXPECT_EQ(s.Sample(logits), 1);
}

TEST(SamplerTest, TopKOneAndATinyTopPAreGreedy) {
  const std::vector<float> logits = RandomFloats(500, 3);
  const TokenId greedy = Sampler(SamplingParams{}).Sample(logits);
  SamplingParams k1{1.0f, 1.0f, 1, 42};
  SamplingParams p0{1.0f, 1e-6f, 0, 42};
  Sampler a(k1), b(p0);
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(a.Sample(logits), greedy);
    EXPECT_EQ(b.Sample(logits), greedy);
  }
}

TEST(SamplerTest, ASeedReproducesItsStreamAndAnotherSeedDiffers) {
  const std::vector<float> logits = RandomFloats(100, 4);
  SamplingParams p{1.0f, 1.0f, 0, 7};
  Sampler a(p), b(p);
  p.seed = 8;
  Sampler c(p);
  int differ = 0;
  for (int i = 0; i < 50; ++i) {
    const TokenId ta = a.Sample(logits);
    EXPECT_EQ(ta, b.Sample(logits));
    differ += ta != c.Sample(logits);
  }
  EXPECT_GT(differ, 0);
}

TEST(SamplerTest, FrequenciesFollowTheTemperedSoftmax) {
  // logits ln(1), ln(2), ln(3), ln(4) at temperature 1: p = 0.1 .. 0.4; top_k
  // 3 drops the first; at temperature 2 the weights become sqrt(1..4).
  const std::vector<float> logits = {0.0f, std::log(2.0f), std::log(3.0f), std::log(4.0f)};
  const int n = 40000;
  auto freq = [&](SamplingParams p) {
    Sampler s(p);
    std::vector<double> f(4);
    for (int i = 0; i < n; ++i) f[s.Sample(logits)] += 1.0 / n;
    return f;
  };
  auto f1 = freq({1.0f, 1.0f, 0, 1});
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(f1[i], (i + 1) / 10.0, 0.01) << i;
  auto fk = freq({1.0f, 1.0f, 3, 2});
  EXPECT_EQ(fk[0], 0.0);
  for (int i = 1; i < 4; ++i) EXPECT_NEAR(fk[i], (i + 1) / 9.0, 0.01) << i;
  // top_p 0.65: {0.4, 0.3} reach 0.7 >= 0.65; renormalised 4/7, 3/7.
  auto fp = freq({1.0f, 0.65f, 0, 3});
  EXPECT_EQ(fp[0] + fp[1], 0.0);
  EXPECT_NEAR(fp[3], 4.0 / 7, 0.01);
  auto f2 = freq({2.0f, 1.0f, 0, 4});
  const double z = 1 + std::sqrt(2.0) + std::sqrt(3.0) + 2;
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(f2[i], std::sqrt(i + 1.0) / z, 0.01) << i;
}

TEST(SamplerTest, ValidateRefusesBadParameters) {
  EXPECT_TRUE(SamplingParams{}.Validate().ok());
  EXPECT_FALSE((SamplingParams{-0.5f, 1.0f, 0, 0}).Validate().ok());
  EXPECT_FALSE((SamplingParams{NAN, 1.0f, 0, 0}).Validate().ok());
  EXPECT_FALSE((SamplingParams{1.0f, 0.0f, 0, 0}).Validate().ok());
  EXPECT_FALSE((SamplingParams{1.0f, 1.5f, 0, 0}).Validate().ok());
  EXPECT_FALSE((SamplingParams{1.0f, 1.0f, -1, 0}).Validate().ok());
}

}  // namespace
}  // namespace kvtier
