// XXH3-128 of a 16-byte key followed by a run of tokens (DESIGN §2's block
// key: XXH3_128(prev || tokens)), without first copying them into one buffer.
// Past XXH3's short-input sizes (240 bytes) the input is consumed in 64-byte
// stripes read where they lie: only the first stripe, which straddles the key
// and the tokens, is assembled. The result is XXH3_128bits of the
// concatenation, bit for bit (tested against libxxhash).
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/token.h"

namespace kvtier {

struct Hash128 {
  uint64_t low64 = 0, high64 = 0;
};

Hash128 HashKeyAndTokens(const std::byte* key16, const TokenId* tokens, size_t count);

}  // namespace kvtier
