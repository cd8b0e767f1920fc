// xxHash is inlined here (XXH_INLINE_ALL: its functions static to this file),
// built with the same flags as the libxxhash it must agree with, to reach its
// stripe steps; everything else calls libxxhash.
#define XXH_INLINE_ALL
#include "cache/chained_hash.h"

#include <xxhash.h>

#include <cstring>

namespace kvtier {

Hash128 HashKeyAndTokens(const std::byte* key16, const TokenId* tokens, size_t count) {
  const auto* tok = reinterpret_cast<const xxh_u8*>(tokens);
  const size_t len = 16 + count * sizeof(TokenId);
  if (len <= XXH3_MIDSIZE_MAX) {  // XXH3's short paths read the input as a whole
    xxh_u8 buf[XXH3_MIDSIZE_MAX];
    std::memcpy(buf, key16, 16);
    std::memcpy(buf + 16, tok, count * sizeof(TokenId));
    const XXH128_hash_t h = XXH3_128bits(buf, len);
    return {h.low64, h.high64};
  }
  // XXH3_hashLong_128b with the default secret, stripe by stripe: stripe i
  // of the concatenation is bytes [64 i, 64 i + 64), which for i >= 1 lie
  // in the tokens from byte 64 i - 16 on.
  XXH_ALIGN(64) xxh_u8 first[XXH_STRIPE_LEN];
  std::memcpy(first, key16, 16);
  std::memcpy(first + 16, tok, XXH_STRIPE_LEN - 16);
  auto stripe = [&](size_t i) { return i == 0 ? first : tok + XXH_STRIPE_LEN * i - 16; };
  XXH_ALIGN(64) xxh_u64 acc[XXH_ACC_NB] = XXH3_INIT_ACC;
  const xxh_u8* secret = XXH3_kSecret;
  constexpr size_t kSecretSize = sizeof(XXH3_kSecret);
  constexpr size_t kStripesPerBlock = (kSecretSize - XXH_STRIPE_LEN) / XXH_SECRET_CONSUME_RATE;
  constexpr size_t kBlockLen = XXH_STRIPE_LEN * kStripesPerBlock;
  const size_t blocks = (len - 1) / kBlockLen;
  size_t s = 0;
  for (size_t n = 0; n < blocks; ++n) {
    for (size_t j = 0; j < kStripesPerBlock; ++j, ++s) {
      XXH3_accumulate_512(acc, stripe(s), secret + j * XXH_SECRET_CONSUME_RATE);
    }
    XXH3_scrambleAcc(acc, secret + kSecretSize - XXH_STRIPE_LEN);
  }
  const size_t stripes = ((len - 1) - kBlockLen * blocks) / XXH_STRIPE_LEN;
  for (size_t j = 0; j < stripes; ++j, ++s) {
    XXH3_accumulate_512(acc, stripe(s), secret + j * XXH_SECRET_CONSUME_RATE);
  }
  // The last stripe, the input's final 64 bytes: all tokens (len > 240).
  XXH3_accumulate_512(acc, tok + (len - 16) - XXH_STRIPE_LEN,
                      secret + kSecretSize - XXH_STRIPE_LEN - XXH_SECRET_LASTACC_START);
  Hash128 h;
  h.low64 = XXH3_mergeAccs(acc, secret + XXH_SECRET_MERGEACCS_START,
                           static_cast<xxh_u64>(len) * XXH_PRIME64_1);
  h.high64 = XXH3_mergeAccs(acc, secret + kSecretSize - sizeof(acc) - XXH_SECRET_MERGEACCS_START,
                            ~(static_cast<xxh_u64>(len) * XXH_PRIME64_2));
  return h;
}

}  // namespace kvtier
