// The small per-token operations of the Llama forward pass (DESIGN §8), in
// f32: RMSNorm, RoPE, SwiGLU, the residual add and the embedding gather.
// GPU launchers take device pointers and run on `stream`; the *Cpu twins take
// host pointers and finish before returning. Arguments that can be checked
// without reading device memory are; a bad one is kInvalidArgument with
// nothing written.
#pragma once

#include <cstdint>

#include "common/status.h"
#include "kernels/device.h"

namespace kvtier {

// out[r][i] = weight[i] * x[r][i] / sqrt(mean_i(x[r][i]^2) + eps)
//   x, out [rows][n] (out may alias x); weight [n]
Status RmsNormRows(const float* x, const float* weight, int64_t rows, int n, float eps, float* out,
                   GpuStream stream);
Status RmsNormRowsCpu(const float* x, const float* weight, int64_t rows, int n, float eps,
                      float* out, GpuStream stream);

// Rotates each adjacent pair (x[2j], x[2j+1]) of every head of row r by the
// angle of position positions[r] (llama2.c's convention), in place:
//   x' = x0*cos - x1*sin, x1' = x0*sin + x1*cos, with j = (i % head_dim) / 2.
//   x [rows][width] (width a multiple of head_dim, head_dim even)
//   positions [rows] int32 in [0, max_pos)
//   cos_table, sin_table [max_pos][head_dim / 2]  (the caller computes them once)
Status RopeRows(float* x, int64_t rows, int width, int head_dim, const int32_t* positions,
                const float* cos_table, const float* sin_table, int max_pos, GpuStream stream);
Status RopeRowsCpu(float* x, int64_t rows, int width, int head_dim, const int32_t* positions,
                   const float* cos_table, const float* sin_table, int max_pos, GpuStream stream);

// out[i] = gate[i] * sigmoid(gate[i]) * up[i]   (out may alias gate or up)
Status SwiGlu(const float* gate, const float* up, int64_t n, float* out, GpuStream stream);
Status SwiGluCpu(const float* gate, const float* up, int64_t n, float* out, GpuStream stream);

// y[i] += x[i]
Status AddInPlace(float* y, const float* x, int64_t n, GpuStream stream);
Status AddInPlaceCpu(float* y, const float* x, int64_t n, GpuStream stream);

// out[r] = table[ids[r]]: rows of `width` floats. ids in [0, table_rows).
Status GatherRows(const float* table, int64_t table_rows, const int32_t* ids, int64_t rows,
                  int width, float* out, GpuStream stream);
Status GatherRowsCpu(const float* table, int64_t table_rows, const int32_t* ids, int64_t rows,
                     int width, float* out, GpuStream stream);

}  // namespace kvtier
