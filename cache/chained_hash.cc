#include "cache/chained_hash.h"

#include <bit>
#include <cstddef>
#include <cstdlib>
#include <type_traits>

#include "cache/chained_hash_kernels.h"

namespace kvtier {
namespace {

using chained_hash_internal::ChainKernels;

// The kernels write key i as words 2 i (hi) and 2 i + 1 (lo).
static_assert(sizeof(BlockKey) == 16 && offsetof(BlockKey, hi) == 0 && offsetof(BlockKey, lo) == 8);
static_assert(std::endian::native == std::endian::little,
              "keys hash tokens as little-endian int32; add a byte swap for this host");

const ChainKernels& KernelsFor(ChecksumIsa isa) {
  switch (isa) {
    case ChecksumIsa::kAvx512:
      return chained_hash_internal::kAvx512ChainKernels;
    case ChecksumIsa::kAvx2:
      return chained_hash_internal::kAvx2ChainKernels;
    case ChecksumIsa::kSse2:
      break;
  }
  return chained_hash_internal::kSse2ChainKernels;
}

int SizeIndex(int block_tokens) {
  if (block_tokens < 16 || block_tokens > 1024 || (block_tokens & (block_tokens - 1)) != 0) {
    std::abort();  // a caller's bug: namespaces are validated
  }
  return std::countr_zero(unsigned(block_tokens)) - 4;
}

}  // namespace

void ChainBlockKeys(const BlockKey& prev, int block_tokens, const TokenId* tokens, size_t blocks,
                    BlockKey* out, ChecksumIsa isa) {
  KernelsFor(isa).chain[SizeIndex(block_tokens)](prev.hi, prev.lo, tokens, blocks, out);
}

void ChainBlockKeys(const BlockKey& prev, int block_tokens, const TokenId* tokens, size_t blocks,
                    BlockKey* out) {
  static const ChainKernels& active = KernelsFor(ActiveChecksumIsa());
  active.chain[SizeIndex(block_tokens)](prev.hi, prev.lo, tokens, blocks, out);
}

BlockKey Xxh3_128(const void* data, size_t bytes, ChecksumIsa isa) {
  BlockKey k;
  KernelsFor(isa).hash128(data, bytes, &k);
  return k;
}

}  // namespace kvtier
