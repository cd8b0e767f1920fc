// Token sampling from rows of logits on the device (DESIGN §8).
//   logits [rows][vocab] f32, out [rows] int32
//
// ArgmaxRows: the index of each row's maximum, the first of equal maxima
// (NaN never wins). SampleTopP: per row, probabilities
// softmax(logits / temperature[r]); the kept set is every token whose
// probability is at least the threshold t, where t is the largest value such
// that the kept mass reaches top_p[r] (ties at t are all kept, so the set is
// independent of any sort order); the token chosen is the first one, walking
// the kept set in index order, at which the running kept mass exceeds
// uniform[r] * (kept mass). temperature[r] == 0 means argmax. The caller
// supplies the uniforms in [0, 1), so the GPU launcher and its CPU twin choose
// the same token except when a uniform falls within rounding of a boundary.
#pragma once

#include <cstdint>

#include "common/status.h"
#include "kernels/device.h"

namespace kvtier {

Status ArgmaxRows(const float* logits, int64_t rows, int vocab, int32_t* out, GpuStream stream);
Status ArgmaxRowsCpu(const float* logits, int64_t rows, int vocab, int32_t* out, GpuStream stream);

//   temperature, top_p, uniform [rows] f32 (top_p in (0, 1], temperature >= 0)
Status SampleTopP(const float* logits, int64_t rows, int vocab, const float* temperature,
                  const float* top_p, const float* uniform, int32_t* out, GpuStream stream);
Status SampleTopPCpu(const float* logits, int64_t rows, int vocab, const float* temperature,
                     const float* top_p, const float* uniform, int32_t* out, GpuStream stream);

}  // namespace kvtier
