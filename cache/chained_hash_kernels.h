// Kernels that chain DESIGN §2's block keys, one set per instruction set, each
// compiled in its own file with that set's flags
// (cache/chained_hash_{sse2,avx2,avx512}.cc); cache/chained_hash.cc picks one
// at run time with the checksum kernels' choice (common/checksum.h). Internal
// to chained_hash.cc and its tests.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kvtier::chained_hash_internal {

// key_i = XXH3_128(key_{i-1} || tokens[i B, (i + 1) B)) for i in [0, blocks),
// from key_{-1} = (prev_hi, prev_lo), with B = 16 << size_index tokens (the
// block sizes a namespace allows: 16..1024). A key's 16 input bytes are its
// hi then lo word, big-endian (BlockKey::ToBytes). Key i is written as bytes
// [16 i, 16 i + 16) of `out`: hi (XXH3's high64) then lo (its low64), native
// words, BlockKey's layout. `tokens` holds blocks * B little-endian 32-bit
// tokens; none is read when blocks is 0.
using ChainFn = void (*)(uint64_t prev_hi, uint64_t prev_lo, const int32_t* tokens, size_t blocks,
                         void* out);

inline constexpr int kBlockSizes = 7;  // 16, 32, ..., 1024 tokens

struct ChainKernels {
  ChainFn chain[kBlockSizes];
  // XXH3_128bits(data, bytes) on this instruction set, written as a key
  // (high64 then low64): the bench's per-hash limit.
  void (*hash128)(const void* data, size_t bytes, void* out);
};

extern const ChainKernels kSse2ChainKernels;
extern const ChainKernels kAvx2ChainKernels;
extern const ChainKernels kAvx512ChainKernels;

}  // namespace kvtier::chained_hash_internal
