#include "cache/prefix_hasher.h"

#include <xxhash.h>

#include <bit>
#include <cstdlib>
#include <cstring>

#include "cache/chained_hash.h"

namespace kvtier {

static_assert(std::endian::native == std::endian::little,
              "keys hash tokens as little-endian int32; add a byte swap for this host");

namespace {

// Hashes `blocks` blocks of kTokens tokens, chaining from `key`. Blocks of
// more than XXH3's short sizes hash prev || tokens where the tokens lie
// (chained_hash.h); shorter ones copy them behind prev into one buffer (a
// fixed run of vector moves: the block size is a compile-time constant) and
// take libxxhash's short path, which reads its input whole.
template <size_t kTokens>
void ChainKeys(BlockKey key, const TokenId* tokens, size_t blocks, BlockKey* out) {
  constexpr size_t kBytes = 16 + kTokens * sizeof(TokenId);
  alignas(64) std::byte buf[kBytes];
  for (size_t i = 0; i < blocks; ++i) {
    key.ToBytes(std::span<std::byte, 16>(buf, 16));
    if constexpr (kBytes <= 240) {
      std::memcpy(buf + 16, tokens + i * kTokens, kTokens * sizeof(TokenId));
      const XXH128_hash_t h = XXH3_128bits(buf, kBytes);
      out[i] = key = BlockKey{h.high64, h.low64};
    } else {
      const Hash128 h = HashKeyAndTokens(buf, tokens + i * kTokens, kTokens);
      out[i] = key = BlockKey{h.high64, h.low64};
    }
  }
}

void ChainKeys(int block_tokens, const BlockKey& prev, const TokenId* tokens, size_t blocks,
               BlockKey* out) {
  switch (block_tokens) {  // every size ValidBlockTokens allows
    case 16:
      return ChainKeys<16>(prev, tokens, blocks, out);
    case 32:
      return ChainKeys<32>(prev, tokens, blocks, out);
    case 64:
      return ChainKeys<64>(prev, tokens, blocks, out);
    case 128:
      return ChainKeys<128>(prev, tokens, blocks, out);
    case 256:
      return ChainKeys<256>(prev, tokens, blocks, out);
    case 512:
      return ChainKeys<512>(prev, tokens, blocks, out);
    case 1024:
      return ChainKeys<1024>(prev, tokens, blocks, out);
  }
  std::abort();  // unreachable: the namespace was validated
}

}  // namespace

PrefixHasher::PrefixHasher(const Namespace& ns)
    : seed_(ns.Seed()), block_tokens_(ns.block_tokens) {}

BlockKey PrefixHasher::Next(const BlockKey& prev, std::span<const TokenId> block) const {
  if (block.size() != static_cast<size_t>(block_tokens_)) std::abort();  // a caller's bug
  BlockKey key;
  ChainKeys(block_tokens_, prev, block.data(), 1, &key);
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
  ChainKeys(block_tokens_, start, tokens.data(), blocks, out->data() + first);
}

std::vector<BlockKey> PrefixHasher::Keys(std::span<const TokenId> tokens) const {
  std::vector<BlockKey> keys;
  AppendKeys(seed_, tokens, &keys);
  return keys;
}

}  // namespace kvtier
