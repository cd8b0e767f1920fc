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

uint64_t Hash(const void* data, size_t bytes) { return XXH3_64bits(data, bytes); }

// One stripe (64 bytes) moved through registers, and xxHash's own
// accumulate and scramble steps for this instruction set.
#if XXH_VECTOR == XXH_AVX512
inline void CopyStripe(const unsigned char* in, unsigned char* out) {
  _mm512_storeu_si512(out, _mm512_loadu_si512(in));
}
#define KVTIER_XXH3_ACCUMULATE XXH3_accumulate_512_avx512
#define KVTIER_XXH3_SCRAMBLE XXH3_scrambleAcc_avx512
#elif XXH_VECTOR == XXH_AVX2
inline void CopyStripe(const unsigned char* in, unsigned char* out) {
  const auto* src = reinterpret_cast<const __m256i*>(in);
  auto* dst = reinterpret_cast<__m256i*>(out);
  _mm256_storeu_si256(dst, _mm256_loadu_si256(src));
  _mm256_storeu_si256(dst + 1, _mm256_loadu_si256(src + 1));
}
#define KVTIER_XXH3_ACCUMULATE XXH3_accumulate_512_avx2
#define KVTIER_XXH3_SCRAMBLE XXH3_scrambleAcc_avx2
#else
inline void CopyStripe(const unsigned char* in, unsigned char* out) {
  const auto* src = reinterpret_cast<const __m128i*>(in);
  auto* dst = reinterpret_cast<__m128i*>(out);
  for (int i = 0; i < 4; ++i) _mm_storeu_si128(dst + i, _mm_loadu_si128(src + i));
}
#define KVTIER_XXH3_ACCUMULATE XXH3_accumulate_512_sse2
#define KVTIER_XXH3_SCRAMBLE XXH3_scrambleAcc_sse2
#endif

// XXH3-64 of more than 240 bytes (xxHash's hashLong with the default secret:
// blocks of 16 stripes, each block followed by a scramble, then the last
// stripe and the merge), one pass: each stripe of src is accumulated, then
// copied to dst from L1. The hash is of the source, never read back from
// dst: a destination another thread writes meanwhile (a client's shared
// memory) cannot make a good block fail its check. (Accumulating from src
// after the store to dst ran ~10% slower between page-aligned buffers: the
// load waited on the store to the same offset of another page, 4K
// aliasing.) The same steps as XXH3_hashLong_internal_loop.
uint64_t CopyAndHashLong(const unsigned char* in, unsigned char* out, size_t len) {
  XXH_ALIGN(64) xxh_u64 acc[XXH_ACC_NB] = XXH3_INIT_ACC;
  const xxh_u8* secret = XXH3_kSecret;
  constexpr size_t kSecretSize = sizeof(XXH3_kSecret);
  constexpr size_t kStripesPerBlock = (kSecretSize - XXH_STRIPE_LEN) / XXH_SECRET_CONSUME_RATE;
  constexpr size_t kBlockLen = XXH_STRIPE_LEN * kStripesPerBlock;
  const size_t blocks = (len - 1) / kBlockLen;
  size_t off = 0;
  for (size_t n = 0; n < blocks; ++n) {
    for (size_t s = 0; s < kStripesPerBlock; ++s, off += XXH_STRIPE_LEN) {
      KVTIER_XXH3_ACCUMULATE(acc, in + off, secret + s * XXH_SECRET_CONSUME_RATE);
      CopyStripe(in + off, out + off);
    }
    KVTIER_XXH3_SCRAMBLE(acc, secret + kSecretSize - XXH_STRIPE_LEN);
  }
  const size_t stripes = ((len - 1) - kBlockLen * blocks) / XXH_STRIPE_LEN;
  for (size_t s = 0; s < stripes; ++s, off += XXH_STRIPE_LEN) {
    KVTIER_XXH3_ACCUMULATE(acc, in + off, secret + s * XXH_SECRET_CONSUME_RATE);
    CopyStripe(in + off, out + off);
  }
  memcpy(out + off, in + off, len - off);  // the tail, at most one stripe
  KVTIER_XXH3_ACCUMULATE(acc, in + len - XXH_STRIPE_LEN,
                         secret + kSecretSize - XXH_STRIPE_LEN - XXH_SECRET_LASTACC_START);
  return XXH3_mergeAccs(acc, secret + XXH_SECRET_MERGEACCS_START,
                        static_cast<xxh_u64>(len) * XXH_PRIME64_1);
}

uint64_t CopyAndHash(const void* src, void* dst, size_t bytes) {
  if (bytes == 0) return XXH3_64bits(dst, 0);  // memcpy's pointers may not be null
  auto* out = static_cast<unsigned char*>(dst);
  const auto* in = static_cast<const unsigned char*>(src);
  if (bytes <= XXH3_MIDSIZE_MAX) {  // xxHash's short paths: copy, then hash from L1
    memcpy(out, in, bytes);
    return XXH3_64bits(in, bytes);
  }
  return CopyAndHashLong(in, out, bytes);
}

}  // namespace

const Xxh3Kernels KVTIER_XXH3_KERNELS{&Hash, &CopyAndHash};

}  // namespace kvtier::checksum_internal
