// CPU twins of the sampling kernels (sampling.cu): the reference. SampleTopP
// follows sampling.cuh's definition with a sort: the threshold is the
// probability at which the cumulative mass, most likely first, reaches top_p
// (every token at least that likely is kept, ties included), masses are summed
// in double, and the chosen token is found by walking the kept set in index
// order.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "kernels/sampling.cuh"
#include "kernels/sampling_internal.h"

namespace kvtier {
namespace {

// The first of equal maxima, NaN skipped; 0 when the row is all NaN.
int32_t ArgmaxRow(const float* x, int vocab) {
  int32_t best = -1;
  for (int i = 0; i < vocab; ++i) {
    if (std::isnan(x[i])) continue;
    if (best < 0 || x[i] > x[best]) best = i;
  }
  return best < 0 ? 0 : best;
}

int32_t SampleRow(const float* x, int vocab, float temperature, float top_p, float uniform,
                  std::vector<float>& e, std::vector<int32_t>& order) {
  const int32_t arg = ArgmaxRow(x, vocab);
  // Greedy at temperature 0, and when the maximum is not finite (a row of
  // NaN, -inf or with +inf) there is no distribution to sample.
  if (temperature == 0.0f || !std::isfinite(x[arg])) return arg;
  // Unnormalised probabilities, the kernel's expression: the maximum is 1.
  const float mx = x[arg];
  e.resize(static_cast<size_t>(vocab));
  order.clear();
  for (int i = 0; i < vocab; ++i) {
    e[static_cast<size_t>(i)] = std::exp((x[i] - mx) / temperature);
    if (e[static_cast<size_t>(i)] > 0.0f) order.push_back(i);  // NaN and 0 are never kept
  }
  if (order.empty()) return arg;  // not reached: the maximum has e = exp(0) = 1
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return e[static_cast<size_t>(a)] > e[static_cast<size_t>(b)];
  });
  double z = 0.0;
  for (int32_t i : order) z += e[static_cast<size_t>(i)];
  const double target = static_cast<double>(top_p) * z;
  float t = e[static_cast<size_t>(order.back())];
  double cum = 0.0;
  for (int32_t i : order) {
    cum += e[static_cast<size_t>(i)];
    if (cum >= target) {
      t = e[static_cast<size_t>(i)];
      break;
    }
  }
  double kept = 0.0;
  for (int i = 0; i < vocab; ++i) {
    if (e[static_cast<size_t>(i)] >= t) kept += e[static_cast<size_t>(i)];
  }
  const double thresh = static_cast<double>(uniform) * kept;
  double run = 0.0;
  int32_t last = arg;
  for (int i = 0; i < vocab; ++i) {
    if (!(e[static_cast<size_t>(i)] >= t)) continue;
    run += e[static_cast<size_t>(i)];
    if (run > thresh) return i;
    last = i;
  }
  return last;  // only when rounding kept the running mass at or below the threshold
}

}  // namespace

Status ArgmaxRowsCpu(const float* logits, int64_t rows, int vocab, int32_t* out, GpuStream) {
  KVTIER_RETURN_IF_ERROR(CheckArgmaxArguments(logits, rows, vocab, out));
  for (int64_t r = 0; r < rows; ++r) out[r] = ArgmaxRow(logits + r * vocab, vocab);
  return Status::Ok();
}

Status SampleTopPCpu(const float* logits, int64_t rows, int vocab, const float* temperature,
                     const float* top_p, const float* uniform, int32_t* out, GpuStream) {
  KVTIER_RETURN_IF_ERROR(
      CheckSampleArguments(logits, rows, vocab, temperature, top_p, uniform, out));
  for (int64_t r = 0; r < rows; ++r) {
    const std::string row = "SampleTopP: row " + std::to_string(r) + ": ";
    if (!(temperature[r] >= 0.0f) || !std::isfinite(temperature[r])) {
      return Status::InvalidArgument(row + "temperature must be finite and non-negative");
    }
    if (!(top_p[r] > 0.0f && top_p[r] <= 1.0f)) {
      return Status::InvalidArgument(row + "top_p must be in (0, 1]");
    }
    if (!(uniform[r] >= 0.0f && uniform[r] < 1.0f)) {
      return Status::InvalidArgument(row + "uniform must be in [0, 1)");
    }
  }
  std::vector<float> e;
  std::vector<int32_t> order;
  for (int64_t r = 0; r < rows; ++r) {
    out[r] = SampleRow(logits + r * vocab, vocab, temperature[r], top_p[r], uniform[r], e, order);
  }
  return Status::Ok();
}

}  // namespace kvtier
