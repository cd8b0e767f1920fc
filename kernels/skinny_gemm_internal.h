// Private to kernels/: the argument checks of skinny_gemm.cuh.
#pragma once

#include <cstdint>

#include "common/status.h"

namespace kvtier {

Status CheckSkinnyGemmArguments(const float* x, int rows, const uint16_t* w, int64_t outs,
                                int64_t k, const float* y);

}  // namespace kvtier
