#include "cache/prefix_hasher.h"

#include <xxhash.h>

#include <cstdlib>
#include <cstring>

#include "cache/chained_hash.h"

namespace kvtier {

PrefixHasher::PrefixHasher(const Namespace& ns)
    : seed_(ns.Seed()), block_tokens_(ns.block_tokens) {}

BlockKey PrefixHasher::Next(const BlockKey& prev, std::span<const TokenId> block) const {
  if (block.size() != static_cast<size_t>(block_tokens_)) std::abort();  // a caller's bug
  BlockKey key;
  ChainBlockKeys(prev, block_tokens_, block.data(), 1, &key);
  return key;
}

BlockKey PrefixHasher::TailKey(const BlockKey& prev, std::span<const TokenId> tail) const {
  if (tail.empty() || tail.size() >= static_cast<size_t>(block_tokens_)) std::abort();
  std::byte buf[16 + 1024 * sizeof(TokenId)];
  prev.ToBytes(std::span<std::byte, 16>(buf, 16));
  std::memcpy(buf + 16, tail.data(), tail.size() * sizeof(TokenId));
  constexpr uint64_t kTailSeed = 0x7461696c2d6b6579;  // "tail-key"
  const XXH128_hash_t h = XXH3_128bits_withSeed(buf, 16 + tail.size() * sizeof(TokenId), kTailSeed);
  return BlockKey{h.high64, h.low64};
}

void PrefixHasher::AppendKeys(const BlockKey& prev, std::span<const TokenId> tokens,
                              std::vector<BlockKey>* out) const {
  // `prev` may be an element of *out (a chain continued from its last key),
  // which the resize may free: the chain starts from a copy.
  const BlockKey start = prev;
  const size_t blocks = tokens.size() / static_cast<size_t>(block_tokens_);
  const size_t first = out->size();
  out->resize(first + blocks);
  ChainBlockKeys(start, block_tokens_, tokens.data(), blocks, out->data() + first);
}

std::vector<BlockKey> PrefixHasher::Keys(std::span<const TokenId> tokens) const {
  std::vector<BlockKey> keys;
  AppendKeys(seed_, tokens, &keys);
  return keys;
}

}  // namespace kvtier
