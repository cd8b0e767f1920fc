// CPU twin of convert.cuh.
#include <cstring>

#include "kernels/convert.cuh"

namespace kvtier {

Status ConvertF32ToBf16Cpu(const float* in, int64_t n, uint16_t* out, GpuStream) {
  if (n < 0) return Status::InvalidArgument("negative element count");
  if (n == 0) return Status::Ok();
  if (in == nullptr || out == nullptr) return Status::InvalidArgument("null buffer");
  for (int64_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, &in[i], sizeof(bits));
    if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0) {
      out[i] = static_cast<uint16_t>((bits >> 16) | 0x0040u);  // quiet NaN, sign kept
      continue;
    }
    const uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);  // to nearest, ties to even
    out[i] = static_cast<uint16_t>((bits + rounding) >> 16);
  }
  return Status::Ok();
}

}  // namespace kvtier
