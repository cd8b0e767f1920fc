// Sampling: ArgmaxRows and SampleTopP. The twins against expectations built
// here in double: for each row the test picks how many tokens top_p keeps and
// which kept token the uniform lands on, then sets top_p halfway between the
// two kept masses around that count and the uniform in the middle of the
// token's interval, so the expected token is known by construction and every
// boundary is at least 1e-4 (relative) away. The GPU launchers must then
// choose exactly the twin's token (skipped without a device).
#include "kernels/sampling.cuh"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

namespace kvtier {
namespace {

// Rows with a clear structure: up to 24 likely tokens at scattered indexes,
// logits 4, 3.7, 3.4, ..., and a tail of unlikely ones in [-12, -8).
std::vector<float> StructuredLogits(int64_t rows, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> tail(-12.0f, -8.0f);
  std::vector<float> x(static_cast<size_t>(rows) * vocab);
  for (auto& v : x) v = tail(rng);
  const int top = std::min(24, vocab);
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<int> ids(static_cast<size_t>(vocab));
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    for (int k = 0; k < top; ++k) x[static_cast<size_t>(r * vocab + ids[k])] = 4.0f - 0.3f * k;
  }
  return x;
}

// softmax(logits / temperature) in double, and the tokens most likely first.
struct RowDist {
  std::vector<double> p;
  std::vector<int> by_prob;
};

RowDist Distribution(const float* x, int vocab, float temperature) {
  RowDist d;
  const double mx = *std::max_element(x, x + vocab);
  double z = 0;
  for (int i = 0; i < vocab; ++i) {
    d.p.push_back(std::exp((x[i] - mx) / temperature));
    z += d.p.back();
  }
  for (double& v : d.p) v /= z;
  d.by_prob.resize(static_cast<size_t>(vocab));
  std::iota(d.by_prob.begin(), d.by_prob.end(), 0);
  std::stable_sort(d.by_prob.begin(), d.by_prob.end(),
                   [&](int a, int b) { return d.p[a] > d.p[b]; });
  return d;
}

// A row's sampling parameters with the token they must select.
struct Pick {
  float top_p, uniform;
  int token;
  double margin;  // the nearest boundary, relative to the kept mass
};

// Keeps the `kept` most likely tokens and lands on the `rank`-th most likely
// (a likely token, whatever its index).
Pick PickFor(const RowDist& d, int kept, int rank) {
  const int vocab = static_cast<int>(d.p.size());
  double mass_before = 0;  // the kept-1 most likely
  for (int k = 0; k + 1 < kept; ++k) mass_before += d.p[d.by_prob[k]];
  const double mass = mass_before + d.p[d.by_prob[kept - 1]];
  Pick pick{};
  pick.top_p = kept == vocab ? 1.0f : static_cast<float>((mass_before + mass) / 2);
  pick.token = d.by_prob[rank];
  double before = 0;  // kept tokens before it in index order
  for (int k = 0; k < kept; ++k) {
    if (d.by_prob[k] < pick.token) before += d.p[d.by_prob[k]];
  }
  pick.uniform = static_cast<float>((before + d.p[pick.token] / 2) / mass);
  pick.margin = d.p[pick.token] / 2 / mass;
  if (kept < vocab) pick.margin = std::min(pick.margin, d.p[d.by_prob[kept - 1]] / 2 / mass);
  return pick;
}

TEST(ArgmaxRowsTest, CpuTwinTakesTheFirstMaximumAndSkipsNan) {
  const float inf = INFINITY;
  const std::vector<float> x = {
      1,    3,    3,     2,     // ties: the first
      NAN,  5,    NAN,   5,     // NaN never wins
      -inf, -inf, -inf,  -inf,  // all -inf: the first
      NAN,  NAN,  NAN,   NAN,   // all NaN: 0
      -1,   -2,   -0.5f, inf,   // +inf wins
  };
  std::vector<int32_t> out(5, -7);
  ASSERT_TRUE(ArgmaxRowsCpu(x.data(), 5, 4, out.data(), nullptr).ok());
  EXPECT_EQ(out, (std::vector<int32_t>{1, 1, 0, 0, 3}));
}

TEST(ArgmaxRowsTest, GpuMatchesTheCpuTwin) {
  if (!DeviceAvailable()) GTEST_SKIP() << DeviceDescription();
  for (int vocab : {1, 7, 513, 32000, 128256}) {
    const int64_t rows = 9;
    auto x = StructuredLogits(rows, vocab, 1);
    // Row 1: a tie at two places; row 2: NaN all over; row 3: all NaN.
    const int64_t v = vocab;
    x[1 * v + v - 1] = 4.0f;
    for (int64_t i = 0; i < v; i += 3) x[2 * v + i] = NAN;
    for (int64_t i = 0; i < v; ++i) x[3 * v + i] = NAN;
    std::vector<int32_t> want(rows);
    ASSERT_TRUE(ArgmaxRowsCpu(x.data(), rows, vocab, want.data(), nullptr).ok());
    auto dx = DeviceBuffer::Allocate(x.size() * 4), dout = DeviceBuffer::Allocate(rows * 4);
    ASSERT_TRUE(dx.ok() && dout.ok());
    ASSERT_TRUE(CopyToDevice(dx->data(), x.data(), x.size() * 4).ok());
    ASSERT_TRUE(ArgmaxRows(static_cast<const float*>(dx->data()), rows, vocab,
                           static_cast<int32_t*>(dout->data()), nullptr)
                    .ok());
    ASSERT_TRUE(SynchronizeStream(nullptr).ok());
    std::vector<int32_t> got(rows);
    ASSERT_TRUE(CopyToHost(got.data(), dout->data(), rows * 4).ok());
    EXPECT_EQ(got, want) << "vocab " << vocab;
  }
}

// Per row: temperature, how many tokens to keep (0 = all), and the rank (by
// probability) of the kept token to land on.
struct RowPlan {
  float temperature;
  int kept;
  int rank;
};

struct SampleSet {
  int vocab = 0;
  std::vector<float> logits, temperature, top_p, uniform;
  std::vector<int32_t> expect;
  double min_margin = 1;
};

SampleSet MakeSet(int vocab, const std::vector<RowPlan>& plans, uint32_t seed) {
  SampleSet s;
  s.vocab = vocab;
  const auto rows = static_cast<int64_t>(plans.size());
  s.logits = StructuredLogits(rows, vocab, seed);
  std::vector<int32_t> argmax(static_cast<size_t>(rows));
  EXPECT_TRUE(ArgmaxRowsCpu(s.logits.data(), rows, vocab, argmax.data(), nullptr).ok());
  for (int64_t r = 0; r < rows; ++r) {
    const RowPlan& plan = plans[static_cast<size_t>(r)];
    s.temperature.push_back(plan.temperature);
    if (plan.temperature == 0.0f) {  // greedy whatever top_p and uniform say
      s.top_p.push_back(0.5f);
      s.uniform.push_back(0.99f);
      s.expect.push_back(argmax[static_cast<size_t>(r)]);
      continue;
    }
    const RowDist d =
        Distribution(&s.logits[static_cast<size_t>(r * vocab)], vocab, plan.temperature);
    const int kept = plan.kept == 0 ? vocab : std::min(plan.kept, vocab);
    const Pick pick = PickFor(d, kept, std::min(plan.rank, kept - 1));
    s.top_p.push_back(pick.top_p);
    s.uniform.push_back(pick.uniform);
    s.expect.push_back(pick.token);
    s.min_margin = std::min(s.min_margin, pick.margin);
  }
  return s;
}

std::vector<RowPlan> Plans() {
  return {{1.0f, 1, 0}, {1.0f, 2, 1}, {1.0f, 5, 2},   {1.0f, 12, 7},  {1.0f, 0, 3},
          {0.6f, 3, 0}, {0.6f, 8, 5}, {1.7f, 4, 3},   {1.7f, 20, 10}, {1.7f, 0, 0},
          {0.0f, 0, 0}, {0.3f, 2, 0}, {1.0f, 24, 23}, {1.0f, 0, 12}};
}

TEST(SampleTopPTest, CpuTwinChoosesTheConstructedTokens) {
  for (int vocab : {30, 1000, 32000}) {
    const SampleSet s = MakeSet(vocab, Plans(), 2);
    ASSERT_GE(s.min_margin, 1e-4) << "the test's boundaries are too close";
    std::vector<int32_t> out(s.expect.size(), -1);
    ASSERT_TRUE(SampleTopPCpu(s.logits.data(), static_cast<int64_t>(out.size()), vocab,
                              s.temperature.data(), s.top_p.data(), s.uniform.data(), out.data(),
                              nullptr)
                    .ok());
    EXPECT_EQ(out, s.expect) << "vocab " << vocab;
  }
}

TEST(SampleTopPTest, TiesAtTheThresholdAreAllKept) {
  // Tokens 1 and 2 tie as most likely (p = 0.3995 each): top_p 0.3 keeps both,
  // so a uniform of 0.6 walks past token 1 (mass 0.5 of the kept) to token 2.
  const std::vector<float> x = {1, 2, 2, 0};
  const float t = 1, top_p = 0.3f;
  for (auto [u, want] : {std::pair{0.6f, 2}, std::pair{0.4f, 1}}) {
    int32_t out = -1;
    ASSERT_TRUE(SampleTopPCpu(x.data(), 1, 4, &t, &top_p, &u, &out, nullptr).ok());
    EXPECT_EQ(out, want) << "uniform " << u;
  }
}

TEST(SampleTopPTest, TemperatureZeroIsArgmax) {
  const int vocab = 5000;
  const int64_t rows = 20;
  const auto x = StructuredLogits(rows, vocab, 3);
  std::vector<float> t(rows, 0.0f), top_p(rows), u(rows);
  std::mt19937 rng(4);
  for (int64_t r = 0; r < rows; ++r) {
    top_p[r] = 0.05f + 0.95f * static_cast<float>(r) / rows;
    u[r] = std::uniform_real_distribution<float>(0.0f, 0.999f)(rng);
  }
  std::vector<int32_t> sampled(rows), argmax(rows);
  ASSERT_TRUE(SampleTopPCpu(x.data(), rows, vocab, t.data(), top_p.data(), u.data(), sampled.data(),
                            nullptr)
                  .ok());
  ASSERT_TRUE(ArgmaxRowsCpu(x.data(), rows, vocab, argmax.data(), nullptr).ok());
  EXPECT_EQ(sampled, argmax);
}

TEST(SampleTopPTest, ChosenTokensAreInTheKeptSet) {
  // Random uniforms and top_p: the chosen token is at least as likely as the
  // least likely token of the kept set (the smallest set, most likely first,
  // whose mass reaches top_p).
  const int vocab = 2000;
  const int64_t rows = 200;
  const auto x = StructuredLogits(rows, vocab, 5);
  std::vector<float> t(rows), top_p(rows), u(rows);
  std::mt19937 rng(6);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  for (int64_t r = 0; r < rows; ++r) {
    t[r] = 0.5f + unit(rng);
    top_p[r] = 0.02f + 0.97f * unit(rng);
    u[r] = std::min(unit(rng), 0.9999f);
  }
  std::vector<int32_t> out(rows);
  ASSERT_TRUE(
      SampleTopPCpu(x.data(), rows, vocab, t.data(), top_p.data(), u.data(), out.data(), nullptr)
          .ok());
  for (int64_t r = 0; r < rows; ++r) {
    const RowDist d = Distribution(&x[r * vocab], vocab, t[r]);
    double mass = 0;
    double threshold = 0;
    for (int i : d.by_prob) {
      mass += d.p[i];
      threshold = d.p[i];
      if (mass >= top_p[r]) break;
    }
    EXPECT_GE(d.p[out[r]], threshold * (1 - 1e-6)) << "row " << r;
  }
}

TEST(SampleTopPTest, StratifiedUniformsFollowTheKeptDistribution) {
  // 16 tokens with logits 0, -0.25, ..., top_p keeping the 10 most likely:
  // N evenly spaced uniforms pick each kept token N * p / kept_mass times (+-1)
  // and never a dropped one.
  const int vocab = 16;
  const int n = 1000;
  std::vector<float> row(vocab);
  for (int i = 0; i < vocab; ++i) row[i] = -0.25f * static_cast<float>((i * 7) % vocab);
  const RowDist d = Distribution(row.data(), vocab, 1.0f);
  const Pick pick = PickFor(d, 10, 0);
  std::vector<float> x, t(n, 1.0f), top_p(n, pick.top_p), u(n);
  for (int r = 0; r < n; ++r) {
    x.insert(x.end(), row.begin(), row.end());
    u[r] = (static_cast<float>(r) + 0.5f) / n;
  }
  std::vector<int32_t> out(n);
  ASSERT_TRUE(
      SampleTopPCpu(x.data(), n, vocab, t.data(), top_p.data(), u.data(), out.data(), nullptr)
          .ok());
  std::vector<int> count(vocab);
  for (int32_t o : out) ++count[o];
  double kept_mass = 0;
  for (int k = 0; k < 10; ++k) kept_mass += d.p[d.by_prob[k]];
  for (int k = 0; k < vocab; ++k) {
    const int i = d.by_prob[k];
    const double want = k < 10 ? n * d.p[i] / kept_mass : 0.0;
    EXPECT_NEAR(count[i], want, 1.0) << "token " << i;
  }
}

TEST(SampleTopPTest, GpuChoosesTheTwinsTokens) {
  if (!DeviceAvailable()) GTEST_SKIP() << DeviceDescription();
  for (int vocab : {50, 5000, 32000, 128256}) {
    const SampleSet s = MakeSet(vocab, Plans(), 7);
    ASSERT_GE(s.min_margin, 1e-4);
    const auto rows = static_cast<int64_t>(s.expect.size());
    std::vector<int32_t> want(rows);
    ASSERT_TRUE(SampleTopPCpu(s.logits.data(), rows, vocab, s.temperature.data(), s.top_p.data(),
                              s.uniform.data(), want.data(), nullptr)
                    .ok());
    ASSERT_EQ(want, s.expect);
    auto up = [](const auto& v) {
      auto b = DeviceBuffer::Allocate(v.size() * sizeof(v[0]));
      EXPECT_TRUE(b.ok());
      EXPECT_TRUE(CopyToDevice(b->data(), v.data(), v.size() * sizeof(v[0])).ok());
      return std::move(*b);
    };
    auto dx = up(s.logits), dt = up(s.temperature), dp = up(s.top_p), du = up(s.uniform);
    auto dout = up(std::vector<int32_t>(rows, -1));
    ASSERT_TRUE(SampleTopP(static_cast<const float*>(dx.data()), rows, vocab,
                           static_cast<const float*>(dt.data()),
                           static_cast<const float*>(dp.data()),
                           static_cast<const float*>(du.data()), static_cast<int32_t*>(dout.data()),
                           nullptr)
                    .ok());
    ASSERT_TRUE(SynchronizeStream(nullptr).ok());
    std::vector<int32_t> got(rows);
    ASSERT_TRUE(CopyToHost(got.data(), dout.data(), rows * 4).ok());
    EXPECT_EQ(got, want) << "vocab " << vocab;
  }
  // The tie rule on the GPU too.
  const std::vector<float> x = {1, 2, 2, 0};
  auto dx = DeviceBuffer::Allocate(16), dparams = DeviceBuffer::Allocate(12),
       dout = DeviceBuffer::Allocate(4);
  ASSERT_TRUE(dx.ok() && dparams.ok() && dout.ok());
  const float params[3] = {1.0f, 0.3f, 0.6f};  // temperature, top_p, uniform
  ASSERT_TRUE(CopyToDevice(dx->data(), x.data(), 16).ok());
  ASSERT_TRUE(CopyToDevice(dparams->data(), params, 12).ok());
  const auto* p = static_cast<const float*>(dparams->data());
  ASSERT_TRUE(SampleTopP(static_cast<const float*>(dx->data()), 1, 4, p, p + 1, p + 2,
                         static_cast<int32_t*>(dout->data()), nullptr)
                  .ok());
  ASSERT_TRUE(SynchronizeStream(nullptr).ok());
  int32_t got = -1;
  ASSERT_TRUE(CopyToHost(&got, dout->data(), 4).ok());
  EXPECT_EQ(got, 2);
}

TEST(SamplingArgumentsTest, BadArgumentsAreRefusedWithoutWriting) {
  const std::vector<float> x(8, 0.0f);
  std::vector<int32_t> out(2, -5);
  auto invalid = [](const Status& s) { return s.code() == StatusCode::kInvalidArgument; };
  EXPECT_TRUE(invalid(ArgmaxRowsCpu(x.data(), -1, 4, out.data(), nullptr)));
  EXPECT_TRUE(invalid(ArgmaxRowsCpu(x.data(), 2, 0, out.data(), nullptr)));
  EXPECT_TRUE(invalid(ArgmaxRowsCpu(nullptr, 2, 4, out.data(), nullptr)));
  EXPECT_TRUE(invalid(ArgmaxRowsCpu(x.data(), 2, 4, nullptr, nullptr)));
  auto sample = [&](std::vector<float> t, std::vector<float> p, std::vector<float> u) {
    return SampleTopPCpu(x.data(), 2, 4, t.data(), p.data(), u.data(), out.data(), nullptr);
  };
  EXPECT_TRUE(sample({1, 1}, {1, 1}, {0, 0.5f}).ok());
  out.assign(2, -5);
  EXPECT_TRUE(invalid(sample({1, -1}, {1, 1}, {0, 0})));   // negative temperature
  EXPECT_TRUE(invalid(sample({1, NAN}, {1, 1}, {0, 0})));  // NaN temperature
  EXPECT_TRUE(invalid(sample({INFINITY, 1}, {1, 1}, {0, 0})));
  EXPECT_TRUE(invalid(sample({1, 1}, {0, 1}, {0, 0})));      // top_p 0
  EXPECT_TRUE(invalid(sample({1, 1}, {1, 1.01f}, {0, 0})));  // top_p above 1
  EXPECT_TRUE(invalid(sample({1, 1}, {1, 1}, {0, 1})));      // uniform 1
  EXPECT_TRUE(invalid(sample({1, 1}, {1, 1}, {-0.1f, 0})));
  EXPECT_TRUE(
      invalid(SampleTopPCpu(x.data(), 2, 4, nullptr, x.data(), x.data(), out.data(), nullptr)));
  EXPECT_EQ(out, (std::vector<int32_t>{-5, -5}));
#if KVTIER_HAVE_CUDA
  EXPECT_TRUE(invalid(ArgmaxRows(x.data(), 2, 0, out.data(), nullptr)));
  EXPECT_TRUE(
      invalid(SampleTopP(x.data(), 2, 4, nullptr, x.data(), x.data(), out.data(), nullptr)));
  EXPECT_EQ(out, (std::vector<int32_t>{-5, -5}));
#endif
}

}  // namespace
}  // namespace kvtier
