// CPU twins of the per-token layer operations (layer_ops.cu): the reference,
// straightforward loops in f32 with reductions summed in index order.
#include <cmath>
#include <cstring>
#include <string>

#include "kernels/layer_ops.cuh"
#include "kernels/layer_ops_internal.h"

namespace kvtier {

Status RmsNormRowsCpu(const float* x, const float* weight, int64_t rows, int n, float eps,
                      float* out, GpuStream) {
  KVTIER_RETURN_IF_ERROR(CheckRmsNormArguments(x, weight, rows, n, eps, out));
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    float* outr = out + r * n;
    float ss = 0.0f;
    for (int i = 0; i < n; ++i) ss += xr[i] * xr[i];
    const float inv = 1.0f / std::sqrt(ss / static_cast<float>(n) + eps);
    for (int i = 0; i < n; ++i) outr[i] = weight[i] * (xr[i] * inv);
  }
  return Status::Ok();
}

Status RopeRowsCpu(float* x, int64_t rows, int width, int head_dim, const int32_t* positions,
                   const float* cos_table, const float* sin_table, int max_pos, GpuStream) {
  KVTIER_RETURN_IF_ERROR(
      CheckRopeArguments(x, rows, width, head_dim, positions, cos_table, sin_table, max_pos));
  for (int64_t r = 0; r < rows; ++r) {
    if (positions[r] < 0 || positions[r] >= max_pos) {
      return Status::InvalidArgument("RopeRows: positions[" + std::to_string(r) +
                                     "] = " + std::to_string(positions[r]) + " is outside [0, " +
                                     std::to_string(max_pos) + ")");
    }
  }
  const int half = head_dim / 2;
  for (int64_t r = 0; r < rows; ++r) {
    const float* cr = cos_table + static_cast<int64_t>(positions[r]) * half;
    const float* sr = sin_table + static_cast<int64_t>(positions[r]) * half;
    float* xr = x + r * width;
    for (int i = 0; i < width; i += 2) {
      const int j = (i % head_dim) / 2;
      const float x0 = xr[i], x1 = xr[i + 1];
      xr[i] = x0 * cr[j] - x1 * sr[j];
      xr[i + 1] = x0 * sr[j] + x1 * cr[j];
    }
  }
  return Status::Ok();
}

Status SwiGluCpu(const float* gate, const float* up, int64_t n, float* out, GpuStream) {
  KVTIER_RETURN_IF_ERROR(CheckElementwiseArguments("SwiGlu", gate, up, n, out));
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g * (1.0f / (1.0f + std::exp(-g))) * up[i];
  }
  return Status::Ok();
}

Status AddInPlaceCpu(float* y, const float* x, int64_t n, GpuStream) {
  KVTIER_RETURN_IF_ERROR(CheckElementwiseArguments("AddInPlace", y, x, n, y));
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
  return Status::Ok();
}

Status GatherRowsCpu(const float* table, int64_t table_rows, const int32_t* ids, int64_t rows,
                     int width, float* out, GpuStream) {
  KVTIER_RETURN_IF_ERROR(CheckGatherArguments(table, table_rows, ids, rows, width, out));
  for (int64_t r = 0; r < rows; ++r) {
    if (ids[r] < 0 || ids[r] >= table_rows) {
      return Status::InvalidArgument("GatherRows: ids[" + std::to_string(r) +
                                     "] = " + std::to_string(ids[r]) + " is outside [0, " +
                                     std::to_string(table_rows) + ")");
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(out + r * width, table + static_cast<int64_t>(ids[r]) * width,
                sizeof(float) * static_cast<size_t>(width));
  }
  return Status::Ok();
}

}  // namespace kvtier
