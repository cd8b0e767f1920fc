// PrefixHasher: token ids -> the chained keys of their full blocks (DESIGN §2).
//
//   key_0 = XXH3_128(seed      || tokens[0, B))
//   key_i = XXH3_128(key_{i-1} || tokens[iB, (i+1)B))
// where seed is the namespace's seed, a key is hashed as its 16-byte wire form
// (BlockKey::ToBytes) and tokens as little-endian int32. A key therefore names
// its whole prefix: changing token j changes the key of block j/B and of every
// later block, and no earlier one. Only full blocks get keys.
//
// Immutable after construction; thread-safe.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "cache/namespace.h"
#include "common/block_key.h"
#include "common/token.h"

namespace kvtier {

class PrefixHasher {
 public:
  // Requires ns.Validate().ok().
  explicit PrefixHasher(const Namespace& ns);

  int block_tokens() const { return block_tokens_; }
  const BlockKey& seed() const { return seed_; }

  // The keys of every full block of `tokens`, tokens.size() / B of them.
  std::vector<BlockKey> Keys(std::span<const TokenId> tokens) const;
  // Appends the keys of the full blocks of `tokens` to `out`, continuing the
  // chain after `prev` (the seed for a prefix that starts at token 0).
  void AppendKeys(const BlockKey& prev, std::span<const TokenId> tokens,
                  std::vector<BlockKey>* out) const;
  // The key of one block: requires `block` to hold exactly block_tokens() tokens.
  BlockKey Next(const BlockKey& prev, std::span<const TokenId> block) const;
  // The key of a tail record (DESIGN §6): the partial block `tail` (1 to
  // block_tokens() - 1 tokens) after the block keyed `prev` (the seed for a
  // tail at the start). XXH3-128 of prev || tail under a seed of its own, so
  // a tail never shares a key with a full block.
  BlockKey TailKey(const BlockKey& prev, std::span<const TokenId> tail) const;

 private:
  BlockKey seed_;
  int block_tokens_;
};

}  // namespace kvtier
