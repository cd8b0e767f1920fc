// CPU math of the forward pass: the matrix product, dot products and the
// small per-token operations, vectorised with AVX2+FMA where the CPU has it
// (chosen once at start-up) and portable C++ otherwise.
//
// Determinism: every output element is computed by one fixed sequence of
// floating-point operations that depends only on the length of the reduction,
// never on how many rows are in the batch, how the work is tiled or which
// thread runs it. So a token's activations are bit-identical whatever else
// is in its batch (DESIGN §8's invariant). The reduction order: eight lanes
// accumulate k = 8i + lane with fused multiply-adds, the lanes are summed in
// one fixed tree, then the k % 8 tail is added in order.
#pragma once

#include <cstdint>

namespace kvtier {

class ThreadPool;

// y[t][o] = sum_k x[t][k] * w[o][k]  for t < rows, o < outs.
// x: [rows][k], w: [outs][k], y: [rows][outs], all row-major and dense.
// Parallel over blocks of outputs when a pool is given.
void MatMulTransposed(const float* x, int64_t rows, const float* w, int64_t outs, int64_t k,
                      float* y, ThreadPool* pool);

// sum_i a[i] * b[i], in the order described above.
float Dot(const float* a, const float* b, int64_t n);
// y[i] += alpha * x[i]
void Axpy(float alpha, const float* x, float* y, int64_t n);
// out[i] = weight[i] * x[i] / sqrt(mean(x^2) + eps)   (out may alias x)
void RmsNorm(const float* x, const float* weight, int64_t n, float eps, float* out);

// Attention of one query over n keys held in pages of page_tokens rows: key
// (and value) t is at pages[t / page_tokens] + (t % page_tokens) * head_dim.
//   out = sum_t softmax_t(scale * q . k_t) v_t
// The scores are Dot's, the softmax is run.c's (max, exp, sum in order) and
// out accumulates p_t * v_t in position order with FMA, as Axpy does.
// `scores` is scratch of n floats.
void AttendOneQuery(const float* q, const float* const* k_pages, const float* const* v_pages,
                    int64_t n, int page_tokens, int head_dim, float scale, float* scores,
                    float* out);

// The instruction sets the kernels are written for. The best one the CPU
// has is chosen at start-up; KVTIER_CPU_ISA=portable|avx2|avx512 caps it (a
// name the CPU lacks, or an unknown one, is refused at start-up on stderr and
// the best set is kept).
enum class CpuIsa { kPortable = 0, kAvx2 = 1, kAvx512 = 2 };
const char* CpuIsaName(CpuIsa isa);
// The set in use, and the best this CPU has.
CpuIsa CpuMathIsa();
CpuIsa CpuMathBestIsa();
// For tests and benchmarks: use `isa` (capped at the best this CPU has) from
// now on; returns the set used so far. Not while a forward pass runs.
CpuIsa SetCpuMathIsa(CpuIsa isa);

// True when the AVX2+FMA (or wider) kernels are in use.
bool CpuMathUsesAvx2();

}  // namespace kvtier
