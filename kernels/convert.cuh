// Element type conversion on the device: f32 to bf16 (round to nearest even,
// NaN kept quiet), for GEMM inputs on the tensor cores.
//   in [n] f32, out [n] bf16 (as uint16_t bit patterns)
#pragma once

#include <cstdint>

#include "common/status.h"
#include "kernels/device.h"

namespace kvtier {

Status ConvertF32ToBf16(const float* in, int64_t n, uint16_t* out, GpuStream stream);
Status ConvertF32ToBf16Cpu(const float* in, int64_t n, uint16_t* out, GpuStream stream);

}  // namespace kvtier
