// CPU twin of convert.cuh.
#include "kernels/convert.cuh"
#include "kernels/dtype_convert.h"

namespace kvtier {

Status ConvertF32ToBf16Cpu(const float* in, int64_t n, uint16_t* out, GpuStream) {
  if (n < 0) return Status::InvalidArgument("negative element count");
  if (n == 0) return Status::Ok();
  if (in == nullptr || out == nullptr) return Status::InvalidArgument("null buffer");
  for (int64_t i = 0; i < n; ++i) out[i] = FloatToBf16Bits(in[i]);
  return Status::Ok();
}

}  // namespace kvtier
