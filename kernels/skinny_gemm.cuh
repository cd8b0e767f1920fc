// The product of a few activation rows with a bf16 weight matrix, for decode
// steps (DESIGN §8): with one to eight rows a GEMM is a matrix-vector product
// bound by reading the weights, and a library GEMM tiled for large products
// spreads too few blocks over the GPU to read them at full bandwidth.
//   y[r][o] = sum_k x[r][k] * w[o][k]   for r < rows, o < outs
//   x [rows][k] f32, w [outs][k] bf16 (bit patterns), y [rows][outs] f32
// Requirements: 1 <= rows <= kSkinnyMaxRows, k a positive multiple of 8, w
// 16-byte aligned; x and y 4-byte aligned. Sums are f32 (each lane's partial
// sums in k order, then a fixed warp tree), so the GPU and the twin agree to
// rounding, not bit for bit.
#pragma once

#include <cstdint>

#include "common/status.h"
#include "kernels/device.h"

namespace kvtier {

inline constexpr int kSkinnyMaxRows = 8;

Status SkinnyGemmBf16(const float* x, int rows, const uint16_t* w, int64_t outs, int64_t k,
                      float* y, GpuStream stream);
Status SkinnyGemmBf16Cpu(const float* x, int rows, const uint16_t* w, int64_t outs, int64_t k,
                         float* y, GpuStream stream);

}  // namespace kvtier
