#include "cache/prefix_hasher.h"

#include <xxhash.h>

#include <bit>
#include <cstring>

namespace kvtier {

static_assert(std::endian::native == std::endian::little,
              "keys hash tokens as little-endian int32; add a byte swap for this host");

PrefixHasher::PrefixHasher(const Namespace& ns)
    : seed_(ns.Seed()), block_tokens_(ns.block_tokens) {}

BlockKey PrefixHasher::Next(const BlockKey& prev, std::span<const TokenId> block) const {
  // One contiguous buffer, prev || tokens, hashed in a single call: cheaper
  // than XXH3's streaming state for inputs of a few hundred bytes.
  alignas(64) std::byte buf[16 + 1024 * sizeof(TokenId)];
  prev.ToBytes(std::span<std::byte, 16>(buf, 16));
  const size_t n = block.size() * sizeof(TokenId);
  std::memcpy(buf + 16, block.data(), n);
  XXH128_hash_t h = XXH3_128bits(buf, 16 + n);
  return BlockKey{h.high64, h.low64};
}

void PrefixHasher::AppendKeys(const BlockKey& prev, std::span<const TokenId> tokens,
                              std::vector<BlockKey>* out) const {
  const size_t b = static_cast<size_t>(block_tokens_);
  const size_t blocks = tokens.size() / b;
  out->reserve(out->size() + blocks);
  BlockKey key = prev;
  for (size_t i = 0; i < blocks; ++i) {
    key = Next(key, tokens.subspan(i * b, b));
    out->push_back(key);
  }
}

std::vector<BlockKey> PrefixHasher::Keys(std::span<const TokenId> tokens) const {
  std::vector<BlockKey> keys;
  AppendKeys(seed_, tokens, &keys);
  return keys;
}

}  // namespace kvtier
