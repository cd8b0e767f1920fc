#include "common/block_key.h"

#include <xxhash.h>

#include <random>

namespace kvtier {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::optional<uint64_t> ParseHexWord(std::string_view hex) {
  uint64_t v = 0;
  for (char c : hex) {
    int d = HexValue(c);
    if (d < 0) return std::nullopt;
    v = (v << 4) | static_cast<uint64_t>(d);
  }
  return v;
}

const uint64_t kProcessHashSeed = [] {
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}();

}  // namespace

uint64_t BlockKeyHashValue(const BlockKey& k) {
  const uint64_t words[2] = {k.hi, k.lo};
  return XXH3_64bits_withSeed(words, sizeof words, kProcessHashSeed);
}

std::string BlockKey::ToHex() const {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s(32, '0');
  for (int i = 0; i < 16; ++i) {
    s[15 - i] = kDigits[(hi >> (4 * i)) & 0xf];
    s[31 - i] = kDigits[(lo >> (4 * i)) & 0xf];
  }
  return s;
}

std::optional<BlockKey> BlockKey::FromHex(std::string_view hex) {
  if (hex.size() != 32) return std::nullopt;
  auto hi = ParseHexWord(hex.substr(0, 16));
  auto lo = ParseHexWord(hex.substr(16));
  if (!hi || !lo) return std::nullopt;
  return BlockKey{*hi, *lo};
}

std::string BlockKey::ToByteString() const {
  std::string s(16, '\0');
  ToBytes(std::span<std::byte, 16>(reinterpret_cast<std::byte*>(s.data()), 16));
  return s;
}

std::optional<BlockKey> BlockKey::FromBytes(std::string_view bytes) {
  if (bytes.size() != 16) return std::nullopt;
  BlockKey k;
  for (int i = 0; i < 8; ++i) {
    k.hi = (k.hi << 8) | static_cast<uint8_t>(bytes[i]);
    k.lo = (k.lo << 8) | static_cast<uint8_t>(bytes[8 + i]);
  }
  return k;
}

}  // namespace kvtier
