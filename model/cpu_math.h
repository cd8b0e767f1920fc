// CPU math of the forward pass: the matrix product and the small per-token
// operations, vectorised for AVX-512 or AVX2+FMA where the CPU has them
// (chosen at run time, CpuMathIsa) and portable C++ otherwise.
//
// Determinism: every output element is computed by one fixed sequence of
// floating-point operations that depends only on the length of the reduction,
// never on how many rows are in the batch, how the work is tiled, which thread
// runs it or which instruction set: a chain of fused multiply-adds over k in
// order, from zero. So a token's activations are bit-identical whatever else
// is in its batch (DESIGN §8's invariant), and the same on every x86 CPU.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

namespace kvtier {

class ThreadPool;

// A vector whose data starts on a 64-byte line: AMX reads 64-byte rows, and
// a row across two lines costs two.
template <class T>
struct Align64 {
  using value_type = T;
  Align64() = default;
  template <class U>
  explicit Align64(const Align64<U>&) {}
  T* allocate(size_t n) {
    return static_cast<T*>(::operator new (n * sizeof(T), std::align_val_t{64}));
  }
  void deallocate(T* p, size_t) { ::operator delete (p, std::align_val_t{64}); }
  bool operator==(const Align64&) const { return true; }
};
template <class T>
using AlignedVector = std::vector<T, Align64<T>>;

// How a packed weight matrix holds its elements: f32, or bf16 (rounded to
// nearest even when packed; exact for a bf16 checkpoint), whose product
// rounds the activations to bf16 too and accumulates in f32.
enum class WeightType { kF32, kBf16 };

// A weight matrix w [outs][k] (row-major) repacked for the product: panels
// of 16 outputs, each [k][16] (f32) or [k / 2][16] pairs of bf16 (k = 2j in
// a pair's low half), outputs past the last zero. Packed once when a model
// is loaded; the product streams it in order.
class PackedMatrix {
 public:
  PackedMatrix() = default;
  PackedMatrix(const float* w, int64_t outs, int64_t k, WeightType type = WeightType::kF32);

  int64_t outs() const { return outs_; }
  int64_t k() const { return k_; }
  int64_t panels() const { return (outs_ + 15) / 16; }
  WeightType type() const { return type_; }
  const float* f32() const { return f32_.data(); }
  const uint32_t* bf16() const { return bf16_.data(); }

 private:
  int64_t outs_ = 0, k_ = 0;
  WeightType type_ = WeightType::kF32;
  AlignedVector<float> f32_;
  AlignedVector<uint32_t> bf16_;
};

// y[t][o] = sum_k x[t][k] * w[o][k]  for t < rows, o < w.outs().
// x: [rows][k], y: [rows][outs], row-major and dense. Parallel over blocks
// of outputs when a pool is given. With bf16 weights each pair of k is one
// step, y = fma(x[2j+1], w[2j+1], y) then fma(x[2j], w[2j], y), x rounded
// to bf16: AVX-512 BF16's vdpbf16ps, which the other sets compute the same
// way (the same bits, subnormals aside: vdpbf16ps flushes them to zero);
// on AMX (CpuIsa::kAmx) within a stated bound of them instead.
void MatMul(const float* x, int64_t rows, const PackedMatrix& w, float* y, ThreadPool* pool);
// The same with w [outs][k] as it is (packs it first: for tests and one-offs).
void MatMulTransposed(const float* x, int64_t rows, const float* w, int64_t outs, int64_t k,
                      float* y, ThreadPool* pool);

// sum_i a[i] * b[i] in the product's order: the reference for one element.
float Dot(const float* a, const float* b, int64_t n);
// out[i] = weight[i] * x[i] / sqrt(mean(x^2) + eps)   (out may alias x)
void RmsNorm(const float* x, const float* weight, int64_t n, float eps, float* out);
// SwiGLU's out[i] = silu(gate[i]) * up[i] = (gate[i] / (1 + exp(-gate[i]))) *
// up[i], with exp the attention kernel's (cpu_vec_exp.inc, within 2 ulp;
// its argument capped at 88): the same bits on every set.
void SwiGlu(const float* gate, const float* up, int64_t n, float* out);
// The index std::max_element(x, x + n) gives (the first of the largest; a
// NaN is never the largest unless it is x[0]), on vectors.
int64_t ArgMax(const float* x, int64_t n);

// The instruction sets the kernels are written for. The best one the CPU
// has is chosen at start-up; KVTIER_CPU_ISA=portable|avx2|avx512|avx512bf16|amx caps
// it (a name the CPU lacks, or an unknown one, is refused at start-up on
// stderr and the best set is kept). amx is avx512bf16 with the bf16 product
// on AMX tiles (model/cpu_matmul_amx.h) where k is a multiple of 32, and the
// bf16 engine's attention on them too (model/cpu_attention.h); AMX
// rounds inside its steps its own way, so those bf16 results differ from the
// other sets' in the last bits, while staying batch-invariant (f32 weights:
// the same bits as every set).
enum class CpuIsa { kPortable = 0, kAvx2 = 1, kAvx512 = 2, kAvx512Bf16 = 3, kAmx = 4 };
const char* CpuIsaName(CpuIsa isa);
// The set in use, and the best this CPU has.
CpuIsa CpuMathIsa();
CpuIsa CpuMathBestIsa();
// For tests and benchmarks: use `isa` (capped at the best this CPU has) from
// now on; returns the set used so far. Not while a forward pass runs.
CpuIsa SetCpuMathIsa(CpuIsa isa);

}  // namespace kvtier
