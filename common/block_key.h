// BlockKey: the 128-bit name of a KV block (DESIGN §2).
//
// A key names a whole token prefix: it is the chained XXH3-128 of the
// namespace seed and every token up to the end of its block (see
// cache/prefix_hasher.h for how keys are made). Here it is only a value type:
// comparable, hashable, printable as 32 hex digits. It lives in common/
// because tiers/ store blocks by key and may not depend on cache/.
#pragma once

#include <bit>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace kvtier {

struct BlockKey {
  uint64_t hi = 0;
  uint64_t lo = 0;

  friend constexpr auto operator<=>(const BlockKey&, const BlockKey&) = default;

  // 32 lowercase hex digits, high word first.
  std::string ToHex() const;
  // Parses exactly 32 hex digits (either case); nullopt otherwise.
  static std::optional<BlockKey> FromHex(std::string_view hex);

  // 16 bytes, big-endian (hi then lo): the wire form in proto/, and the
  // bytes XXH128_canonicalFromHash gives. Inline: key chaining calls it per block.
  void ToBytes(std::span<std::byte, 16> out) const {
    const uint64_t be_hi = std::endian::native == std::endian::little ? __builtin_bswap64(hi) : hi;
    const uint64_t be_lo = std::endian::native == std::endian::little ? __builtin_bswap64(lo) : lo;
    std::memcpy(out.data(), &be_hi, 8);
    std::memcpy(out.data() + 8, &be_lo, 8);
  }
  std::string ToByteString() const;
  // Requires exactly 16 bytes; nullopt otherwise.
  static std::optional<BlockKey> FromBytes(std::string_view bytes);
};

// A keyed hash of a key, for hash tables and sharding. Keys can come straight
// from clients (a Put by key), so their bits are not trusted to be uniform: the
// hash is XXH3-64 seeded at random once per process, so no client can aim many
// keys at one bucket or shard (hash flooding).
uint64_t BlockKeyHashValue(const BlockKey& k);

struct BlockKeyHash {
  size_t operator()(const BlockKey& k) const noexcept {
    return static_cast<size_t>(BlockKeyHashValue(k));
  }
};

}  // namespace kvtier
