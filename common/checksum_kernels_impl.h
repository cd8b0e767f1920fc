// The body of one XXH3 kernel set, included once by each
// checksum_kernels_<isa>.cc after it defines XXH_VECTOR and
// KVTIER_XXH3_KERNELS. xxHash is inlined into that file (XXH_INLINE_ALL, its
// functions static), so each file's copy is built with its own instruction
// set and none of them can stand in for another at link time. The file must
// include nothing else that defines inline functions (no templates, no
// standard containers): the linker could otherwise keep an AVX-512 copy of a
// shared inline function and run it on a CPU without AVX-512.
#pragma once

#define XXH_INLINE_ALL
#include <string.h>  // memcpy, a libc call
#include <xxhash.h>

#include "common/checksum_kernels.h"

namespace kvtier::checksum_internal {
namespace {

// Copy this much, then hash it from L1 (48 KiB data cache on current cores).
constexpr size_t kChunkBytes = 16 * 1024;

uint64_t Hash(const void* data, size_t bytes) { return XXH3_64bits(data, bytes); }

uint64_t CopyAndHash(const void* src, void* dst, size_t bytes) {
  if (bytes == 0) return XXH3_64bits(dst, 0);  // memcpy's pointers may not be null
  auto* out = static_cast<unsigned char*>(dst);
  const auto* in = static_cast<const unsigned char*>(src);
  if (bytes <= kChunkBytes) {
    memcpy(out, in, bytes);
    return XXH3_64bits(out, bytes);
  }
  XXH3_state_t state;  // 64-byte aligned by its type
  XXH3_64bits_reset(&state);
  for (size_t off = 0; off < bytes; off += kChunkBytes) {
    const size_t n = bytes - off < kChunkBytes ? bytes - off : kChunkBytes;
    memcpy(out + off, in + off, n);
    XXH3_64bits_update(&state, out + off, n);
  }
  return XXH3_64bits_digest(&state);
}

}  // namespace

const Xxh3Kernels KVTIER_XXH3_KERNELS{&Hash, &CopyAndHash};

}  // namespace kvtier::checksum_internal
