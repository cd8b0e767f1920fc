// The bf16 product on AMX tiles (TDPBF16PS), for CPUs that have them.
//
// The packed weights' panels are AMX's B layout already: a panel is
// [k / 2][16] pairs of bf16, so 16 of its rows (32 of k) are one B tile of
// 16 rows x 64 bytes. x is packed as A tiles, each 16 rows x 16 pairs
// stored whole (1 KiB, read in order: rows a power of two apart would share
// L1 sets), rows padded to a multiple of 16 with zeros. A 2 x 2 block of C
// tiles (32 rows x 32 outputs) takes two A and two B tiles per 32 of k.
//
// Each output element is one chain over k in order (the C tile carries it
// from one 32-k step to the next), so a row's result does not depend on the
// other rows in its batch, on the tiling or on the thread. How TDPBF16PS
// rounds inside a step is its own (inputs that vdpbf16ps rounds between a
// pair's two products come out exact here, and no simple model of one
// rounding per pair or per group of pairs matched it on random inputs), so
// its bits are not vdpbf16ps's: tests/model/cpu_math_test.cc holds it to
// the same bound as every other path.
#include "model/cpu_matmul_amx.h"

#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace kvtier {
namespace {

constexpr long kArchReqXcompPerm = 0x1023;  // arch_prctl: ask for an XSTATE feature
constexpr long kXfeatureXtiledata = 18;     // AMX tile data

// Panels per group: a k-block of a group's panels (16 x 16 KiB) stays in L2
// while every 32-row block of x meets it.
constexpr int64_t kPanelsPerGroup = 16;

// Every tile 16 rows of 64 bytes (the product's use: C 0..3, C[rb][pb] =
// 2 rb + pb; A 4..5; B 6..7).
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {64, 64, 64, 64, 64, 64, 64, 64};
  uint8_t rows[16] = {16, 16, 16, 16, 16, 16, 16, 16};
};

// In read-only memory, whole: GCC 12's _tile_loadconfig tells the compiler
// it reads 8 bytes, so the stores of a configuration built on the stack can
// be dropped as dead (they were, once this was called from a second kernel:
// LDTILECFG then read garbage and faulted).
constexpr TileConfig kTileConfig{};

// RB x PB C tiles (16 rows x 16 outputs each) at c (floats, c_stride
// between rows) over pairs [j0, j1) of k: they start from zero at j0 == 0
// and otherwise go on from the partial sums in c (an f32 stored and loaded
// again is the same f32, so blocking k changes no bit). x: the first of RB
// 16-row blocks of the packed rows; w: the first of PB panels.
template <int RB, int PB>
__attribute__((target("amx-tile,amx-bf16"))) void Block(const uint32_t* x, const uint32_t* w,
                                                        int64_t pairs, int64_t j0, int64_t j1,
                                                        float* c, int64_t c_stride) {
  const int64_t stride = c_stride * 4;  // bytes between rows of c
  float* const c1 = c + 16;
  float* const c2 = c + 16 * c_stride;
  float* const c3 = c2 + 16;
  if (j0 == 0) {
    _tile_zero(0);
    if constexpr (PB > 1) _tile_zero(1);
    if constexpr (RB > 1) _tile_zero(2);
    if constexpr (RB > 1 && PB > 1) _tile_zero(3);
  } else {
    _tile_loadd(0, c, stride);
    if constexpr (PB > 1) _tile_loadd(1, c1, stride);
    if constexpr (RB > 1) _tile_loadd(2, c2, stride);
    if constexpr (RB > 1 && PB > 1) _tile_loadd(3, c3, stride);
  }
  const int64_t panel = pairs * 16;  // uint32 per panel, and per 16 rows of x
  for (int64_t j = j0; j < j1; j += 16) {
    _tile_loadd(4, x + j * 16, 64);
    if constexpr (RB > 1) _tile_loadd(5, x + panel + j * 16, 64);
    _tile_loadd(6, w + j * 16, 64);
    if constexpr (PB > 1) _tile_loadd(7, w + panel + j * 16, 64);
    _tile_dpbf16ps(0, 4, 6);
    if constexpr (PB > 1) _tile_dpbf16ps(1, 4, 7);
    if constexpr (RB > 1) _tile_dpbf16ps(2, 5, 6);
    if constexpr (RB > 1 && PB > 1) _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, c, stride);
  if constexpr (PB > 1) _tile_stored(1, c1, stride);
  if constexpr (RB > 1) _tile_stored(2, c2, stride);
  if constexpr (RB > 1 && PB > 1) _tile_stored(3, c3, stride);
}

}  // namespace

bool AmxUsable() {
  static const bool usable = [] {
    // CPUID leaf 7: EDX bit 22 AMX-BF16, bit 24 AMX-TILE (read directly:
    // clang 14's __builtin_cpu_supports does not know them).
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) == 0) return false;
    if ((edx & (1u << 22)) == 0 || (edx & (1u << 24)) == 0) return false;
    // Linux hands out the tile state only to a process that asks for it.
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return usable;
}

__attribute__((target("amx-tile"))) void ConfigureAmxTiles() { _tile_loadconfig(&kTileConfig); }

__attribute__((target("avx512f,avx512bf16"))) void PackRowsAmx(const float* x, int64_t rows,
                                                               int64_t k, uint32_t* xp) {
  const int64_t pairs = k / 2, tiles = k / 32;
  const int64_t padded = (rows + 15) / 16 * 16;
  for (int64_t t = 0; t < rows; ++t) {
    const float* row = x + t * k;
    // Row t % 16 of the A tiles of row block t / 16.
    uint32_t* out = xp + (t / 16) * 16 * pairs + (t % 16) * 16;
    for (int64_t kt = 0; kt < tiles; ++kt) {
      // 32 of k as 16 pairs, k = 2j in the low half (the element order of
      // bf16 in memory). vcvtne2ps2bf16 rounds to nearest even as
      // FloatToBf16Bits does; it makes denormals zero, which the product's
      // TDPBF16PS does to its inputs anyway.
      const __m512bh v =
          _mm512_cvtne2ps_pbh(_mm512_loadu_ps(row + 32 * kt + 16), _mm512_loadu_ps(row + 32 * kt));
      _mm512_storeu_si512(out + kt * 256, reinterpret_cast<__m512i>(v));
    }
  }
  // The padding rows of the last block: zero.
  for (int64_t t = rows; t < padded; ++t) {
    uint32_t* out = xp + (t / 16) * 16 * pairs + (t % 16) * 16;
    for (int64_t kt = 0; kt < tiles; ++kt) std::memset(out + kt * 256, 0, 64);
  }
}

__attribute__((target("amx-tile,amx-bf16"))) void MatMulAmxBf16(const uint32_t* xp, int64_t rows,
                                                                const uint32_t* packed,
                                                                int64_t pairs, int64_t outs,
                                                                int64_t p_begin, int64_t p_end,
                                                                float* y) {
  const int64_t rows16 = (rows + 15) / 16 * 16, width = (p_end - p_begin) * 16;
  // Whole tiles go straight into y; otherwise into a padded scratch, copied
  // out at the end.
  const bool direct = rows16 == rows && p_end * 16 <= outs;
  thread_local std::vector<float> scratch;
  float* c = y + p_begin * 16;
  int64_t c_stride = outs;
  if (!direct) {
    scratch.resize(static_cast<size_t>(rows16 * width));
    c = scratch.data();
    c_stride = width;
  }
  ConfigureAmxTiles();
  const int64_t panel = pairs * 16;
  for (int64_t j0 = 0; j0 < pairs; j0 += kAmxPairsPerBlock) {
    const int64_t j1 = std::min(pairs, j0 + kAmxPairsPerBlock);
    for (int64_t g = p_begin; g < p_end; g += kPanelsPerGroup) {
      const int64_t g_end = std::min(p_end, g + kPanelsPerGroup);
      for (int64_t t = 0; t < rows16; t += 32) {
        const uint32_t* xt = xp + t * pairs;
        const bool two_rows = t + 16 < rows16;
        for (int64_t p = g; p < g_end; p += 2) {
          const uint32_t* w = packed + p * panel;
          float* ct = c + t * c_stride + (p - p_begin) * 16;
          const bool two_panels = p + 1 < g_end;
          if (two_rows && two_panels) {
            Block<2, 2>(xt, w, pairs, j0, j1, ct, c_stride);
          } else if (two_rows) {
            Block<2, 1>(xt, w, pairs, j0, j1, ct, c_stride);
          } else if (two_panels) {
            Block<1, 2>(xt, w, pairs, j0, j1, ct, c_stride);
          } else {
            Block<1, 1>(xt, w, pairs, j0, j1, ct, c_stride);
          }
        }
      }
    }
  }
  _tile_release();
  if (!direct) {
    const int64_t n = std::min(width, outs - p_begin * 16);
    for (int64_t t = 0; t < rows; ++t) {
      std::memcpy(y + t * outs + p_begin * 16, c + t * c_stride,
                  sizeof(float) * static_cast<size_t>(n));
    }
  }
}

}  // namespace kvtier
