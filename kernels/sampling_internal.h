// Private to kernels/: the argument checks of sampling.cuh, shared by the GPU
// launchers and the CPU twins (which also check the per-row parameters).
#pragma once

#include <cstdint>

#include "common/status.h"

namespace kvtier {

inline Status CheckArgmaxArguments(const float* logits, int64_t rows, int vocab,
                                   const int32_t* out) {
  if (rows < 0) return Status::InvalidArgument("ArgmaxRows: negative rows");
  if (vocab <= 0) return Status::InvalidArgument("ArgmaxRows: vocab must be positive");
  if (rows > 0 && (logits == nullptr || out == nullptr)) {
    return Status::InvalidArgument("ArgmaxRows: null buffer");
  }
  return Status::Ok();
}

inline Status CheckSampleArguments(const float* logits, int64_t rows, int vocab,
                                   const float* temperature, const float* top_p,
                                   const float* uniform, const int32_t* out) {
  if (rows < 0) return Status::InvalidArgument("SampleTopP: negative rows");
  if (vocab <= 0) return Status::InvalidArgument("SampleTopP: vocab must be positive");
  if (rows > 0 && (logits == nullptr || temperature == nullptr || top_p == nullptr ||
                   uniform == nullptr || out == nullptr)) {
    return Status::InvalidArgument("SampleTopP: null buffer");
  }
  return Status::Ok();
}

}  // namespace kvtier
