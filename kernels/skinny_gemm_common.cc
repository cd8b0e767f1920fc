// Argument checks of skinny_gemm.cuh shared by the launcher and its twin.
#include <string>

#include "kernels/skinny_gemm.cuh"
#include "kernels/skinny_gemm_internal.h"

namespace kvtier {

Status CheckSkinnyGemmArguments(const float* x, int rows, const uint16_t* w, int64_t outs,
                                int64_t k, const float* y) {
  if (rows < 1 || rows > kSkinnyMaxRows) {
    return Status::InvalidArgument("skinny GEMM takes 1 to " + std::to_string(kSkinnyMaxRows) +
                                   " rows, got " + std::to_string(rows));
  }
  if (outs < 1 || k < 8 || k % 8 != 0) {
    return Status::InvalidArgument("skinny GEMM needs outs >= 1 and k a positive multiple of 8");
  }
  if (x == nullptr || w == nullptr || y == nullptr) {
    return Status::InvalidArgument("null buffer passed to the skinny GEMM");
  }
  if (reinterpret_cast<uintptr_t>(w) % 16 != 0) {
    return Status::InvalidArgument("skinny GEMM weights must be 16-byte aligned");
  }
  return Status::Ok();
}

}  // namespace kvtier
