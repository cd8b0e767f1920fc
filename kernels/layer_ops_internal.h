// Private to kernels/: the argument checks of layer_ops.cuh, shared by the GPU
// launchers and the CPU twins (which also check ids and positions).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "common/status.h"

namespace kvtier {

inline Status CheckRmsNormArguments(const float* x, const float* weight, int64_t rows, int n,
                                    float eps, const float* out) {
  if (rows < 0) return Status::InvalidArgument("RmsNormRows: negative rows");
  if (n <= 0) return Status::InvalidArgument("RmsNormRows: n must be positive");
  if (!(eps >= 0.0f) || !std::isfinite(eps)) {
    return Status::InvalidArgument("RmsNormRows: eps must be finite and non-negative");
  }
  if (rows > 0 && (x == nullptr || weight == nullptr || out == nullptr)) {
    return Status::InvalidArgument("RmsNormRows: null buffer");
  }
  return Status::Ok();
}

inline Status CheckRopeArguments(const float* x, int64_t rows, int width, int head_dim,
                                 const int32_t* positions, const float* cos_table,
                                 const float* sin_table, int max_pos) {
  if (rows < 0) return Status::InvalidArgument("RopeRows: negative rows");
  if (head_dim <= 0 || head_dim % 2 != 0) {
    return Status::InvalidArgument("RopeRows: head_dim " + std::to_string(head_dim) +
                                   " must be positive and even");
  }
  if (width <= 0 || width % head_dim != 0) {
    return Status::InvalidArgument("RopeRows: width " + std::to_string(width) +
                                   " is not a positive multiple of head_dim " +
                                   std::to_string(head_dim));
  }
  if (max_pos <= 0) return Status::InvalidArgument("RopeRows: max_pos must be positive");
  if (rows > 0 &&
      (x == nullptr || positions == nullptr || cos_table == nullptr || sin_table == nullptr)) {
    return Status::InvalidArgument("RopeRows: null buffer");
  }
  return Status::Ok();
}

inline Status CheckElementwiseArguments(const char* op, const float* a, const float* b, int64_t n,
                                        const float* out) {
  if (n < 0) return Status::InvalidArgument(std::string(op) + ": negative element count");
  if (n > 0 && (a == nullptr || b == nullptr || out == nullptr)) {
    return Status::InvalidArgument(std::string(op) + ": null buffer");
  }
  return Status::Ok();
}

inline Status CheckGatherArguments(const float* table, int64_t table_rows, const int32_t* ids,
                                   int64_t rows, int width, const float* out) {
  if (rows < 0 || table_rows < 0) return Status::InvalidArgument("GatherRows: negative rows");
  if (width <= 0) return Status::InvalidArgument("GatherRows: width must be positive");
  if (rows > 0 && (table == nullptr || ids == nullptr || out == nullptr)) {
    return Status::InvalidArgument("GatherRows: null buffer");
  }
  return Status::Ok();
}

}  // namespace kvtier
