// CPU twin of skinny_gemm.cuh: f32 sums in k order.
#include "kernels/dtype_convert.h"
#include "kernels/skinny_gemm.cuh"
#include "kernels/skinny_gemm_internal.h"

namespace kvtier {

Status SkinnyGemmBf16Cpu(const float* x, int rows, const uint16_t* w, int64_t outs, int64_t k,
                         float* y, GpuStream) {
  KVTIER_RETURN_IF_ERROR(CheckSkinnyGemmArguments(x, rows, w, outs, k, y));
  for (int r = 0; r < rows; ++r) {
    for (int64_t o = 0; o < outs; ++o) {
      float sum = 0;
      for (int64_t i = 0; i < k; ++i) sum += x[r * k + i] * Bf16BitsToFloat(w[o * k + i]);
      y[r * outs + o] = sum;
    }
  }
  return Status::Ok();
}

}  // namespace kvtier
