// The bf16 product on AMX tiles (model/cpu_matmul_amx.cc): cpu_math.cc's
// MatMul runs it for bf16 weights when the CPU has AMX-BF16 and the kernel
// lets this process use the tiles, and k is a multiple of 32.
#pragma once

#include <cstdint>

namespace kvtier {

// Pairs of k per block of the product: a 32-row block of x (32 KiB) stays
// in L1 while the panels stream past it, and the block of each panel (16
// KiB) in L2, whatever k is.
constexpr int64_t kAmxPairsPerBlock = 256;

// True when the CPU has AMX-BF16 and Linux granted this process the tile
// state (asked for once, on the first call).
bool AmxUsable();

// Configures this thread's eight tile registers as 16 rows of 64 bytes each,
// the one shape every AMX kernel here uses; the kernel calls _tile_release()
// when done. Only when AmxUsable().
void ConfigureAmxTiles();

// x [rows][k] rounded to bf16 (to nearest even) as AMX's A tiles: per 16
// rows (the last padded with zero rows) and 32 of k, a tile of 16 rows x 16
// pairs (k = 2j in the low half) stored whole; (rows rounded up to 16) x
// k / 2 uint32 in all. k a multiple of 32; only when AmxUsable().
void PackRowsAmx(const float* x, int64_t rows, int64_t k, uint32_t* xp);

// y[t][o] for t < rows and the outputs of panels [p_begin, p_end) of bf16
// weights packed as PackedMatrix holds them (`pairs` = k / 2, a multiple of
// 16), from x packed by PackRowsAmx. Only when AmxUsable().
void MatMulAmxBf16(const uint32_t* xp, int64_t rows, const uint32_t* packed, int64_t pairs,
                   int64_t outs, int64_t p_begin, int64_t p_end, float* y);

}  // namespace kvtier
