// DESIGN §2's block keys, chained: key_i = XXH3_128(key_{i-1} || tokens of
// block i), bit for bit XXH3_128bits of that concatenation (tested against
// libxxhash), computed without waiting for each whole hash in turn: the part
// of every block's hash that does not read the previous key is worked out
// ahead, and the chain itself walks only the steps that do
// (chained_hash_impl.h says which). Kernels for SSE2, AVX2 and AVX-512,
// chosen at run time with the checksums' choice (common/checksum.h).
#pragma once

#include <cstddef>

#include "common/block_key.h"
#include "common/checksum.h"
#include "common/token.h"

namespace kvtier {

// Writes out[i] = key_i for i in [0, blocks), chaining from key_{-1} = prev,
// over blocks * block_tokens tokens. block_tokens is a power of two in
// [16, 1024] (what a namespace allows; anything else aborts).
void ChainBlockKeys(const BlockKey& prev, int block_tokens, const TokenId* tokens, size_t blocks,
                    BlockKey* out);

// The same on one instruction set (which the CPU must support): for tests
// and benchmarks.
void ChainBlockKeys(const BlockKey& prev, int block_tokens, const TokenId* tokens, size_t blocks,
                    BlockKey* out, ChecksumIsa isa);

// XXH3_128bits of data[0, bytes) built for `isa` (which the CPU must
// support), as {hi = high64, lo = low64}: the per-hash limit the chain is
// measured against, in the bench.
BlockKey Xxh3_128(const void* data, size_t bytes, ChecksumIsa isa);

}  // namespace kvtier
