// The GPU launcher of skinny_gemm.cuh in a build without CUDA.
#include "kernels/skinny_gemm.cuh"

namespace kvtier {

Status SkinnyGemmBf16(const float*, int, const uint16_t*, int64_t, int64_t, float*, GpuStream) {
  return Status::Unavailable("kvtier was built without CUDA");
}

}  // namespace kvtier
