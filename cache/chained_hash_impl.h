// The body of one key-chaining kernel set, included once by each
// cache/chained_hash_<isa>.cc after it defines XXH_VECTOR and
// KVTIER_CHAIN_KERNELS. xxHash is inlined into that file (XXH_INLINE_ALL, its
// functions static), so each file's copy is built with its own instruction
// set. Like common/checksum_kernels_impl.h, the file uses nothing that would
// be emitted as an inline function or template of external linkage (no
// standard containers or algorithms): the linker could keep one file's copy
// for every caller, and an AVX-512 copy must never run on another CPU.
//
// Why the chain is split. key_i = XXH3_128(key_{i-1} || tokens_i), so a naive
// chain waits for each whole hash before starting the next: per block, XXH3's
// full latency, where unchained hashes of the same bytes overlap in the
// out-of-order core. But XXH3 reads the key (the input's first 16 bytes) in
// few places, and everything else it computes from the tokens alone:
//  - Past 240 bytes (hashLong), the accumulators are sums over the stripes,
//    lane by lane, until the first scramble (after 1024 bytes). The key's
//    two lanes add mult32(w ^ secret) and the neighbour word to acc[0] and
//    acc[1]; the 128-bit merge folds those two with each other and the other
//    six with their own pairs. So the tokens' stripes, the merge of
//    acc[2..8) and the zero-key lanes are worked out first for a run of
//    blocks (independent of one another, so they overlap), and the chain
//    adds the key's two lanes and folds one pair per half. Blocks longer than
//    1024 bytes add the key before the first scramble and walk the rest in
//    the chain.
//  - Up to 128 bytes (XXH3_len_17to128_128b), the key is input_1 of the last
//    32-byte mix only: the chain does that mix's key half and the finish.
//  - 129..240 bytes (XXH3_len_129to240_128b) reads the key in its first mix
//    and avalanches midway: the whole hash stays in the chain.
// Every path equals XXH3_128bits of prev || tokens bit for bit (tested
// against libxxhash at every block size, on every instruction set).
#pragma once

#define XXH_INLINE_ALL
#include <string.h>  // memcpy, a libc call
#include <xxhash.h>

#include "cache/chained_hash_kernels.h"

namespace kvtier::chained_hash_internal {
namespace {

constexpr size_t kSecretSize = sizeof(XXH3_kSecret);
constexpr size_t kStripesPerScramble = (kSecretSize - XXH_STRIPE_LEN) / XXH_SECRET_CONSUME_RATE;
constexpr size_t kScrambleLen = XXH_STRIPE_LEN * kStripesPerScramble;
// Blocks whose key-free part is computed ahead of the chain: enough to keep
// the core busy while the chain's short dependent steps run.
constexpr size_t kAhead = 8;

inline xxh_u64 Mult32(xxh_u64 w) { return XXH_mult32to64(w & 0xFFFFFFFF, w >> 32); }

// The key as XXH3 reads it: two little-endian words of its big-endian bytes.
struct KeyWords {
  xxh_u64 w0, w1;
};
inline KeyWords Words(uint64_t hi, uint64_t lo) { return {XXH_swap64(hi), XXH_swap64(lo)}; }

// What the key's two lanes (input words w0, w1 at stripe offset 0, secret
// offset 0) add to acc[0] and acc[1]: XXH3_scalarRound's two steps for each.
inline void AddKeyLanes(xxh_u64* a0, xxh_u64* a1, xxh_u64 w0, xxh_u64 w1) {
  *a0 += Mult32(w0 ^ XXH_readLE64(XXH3_kSecret)) + w1;
  *a1 += Mult32(w1 ^ XXH_readLE64(XXH3_kSecret + 8)) + w0;
}

// XXH3_mul128_fold64, written on unsigned __int128 directly: GCC 12 at -O2
// passes xxHash's version's product through the stack (+5 cycles a fold,
// which the chain would pay).
inline xxh_u64 Fold64(xxh_u64 a, xxh_u64 b) {
  const auto high = static_cast<xxh_u64>((static_cast<unsigned __int128>(a) * b) >> 64);
  return (a * b) ^ high;
}

inline xxh_u64 Mix2(xxh_u64 a, xxh_u64 b, const xxh_u8* secret) {
  return Fold64(a ^ XXH_readLE64(secret), b ^ XXH_readLE64(secret + 8));
}

// ---- up to 128 bytes: XXH3_len_17to128_128b ------------------------------

struct ShortState {
  xxh_u64 low, high, last_words;  // before the key's mix; the last 16 bytes' word sum
};

// The input is prev || tokens; byte o >= 16 is tokens byte o - 16.
template <size_t kLen>
XXH_FORCE_INLINE ShortState ShortAhead(const xxh_u8* tok) {
  static_assert(48 <= kLen && kLen <= 128);  // in() never points before the tokens
  auto in = [tok](size_t o) { return tok + (o - 16); };
  XXH128_hash_t acc{kLen * XXH_PRIME64_1, 0};
  if constexpr (kLen > 96) acc = XXH128_mix32B(acc, in(48), in(kLen - 64), XXH3_kSecret + 96, 0);
  if constexpr (kLen > 64) acc = XXH128_mix32B(acc, in(32), in(kLen - 48), XXH3_kSecret + 64, 0);
  if constexpr (kLen > 32) acc = XXH128_mix32B(acc, in(16), in(kLen - 32), XXH3_kSecret + 32, 0);
  const xxh_u8* last = in(kLen - 16);
  return {acc.low64, acc.high64 + XXH3_mix16B(last, XXH3_kSecret + 16, 0),
          XXH_readLE64(last) + XXH_readLE64(last + 8)};
}

// The last mix's key half (XXH128_mix32B with input_1 = the key) and the finish.
template <size_t kLen>
XXH_FORCE_INLINE XXH128_hash_t ShortFinish(const ShortState& s, KeyWords k) {
  const xxh_u64 low = (s.low + Mix2(k.w0, k.w1, XXH3_kSecret)) ^ s.last_words;
  const xxh_u64 high = s.high ^ (k.w0 + k.w1);
  XXH128_hash_t h;
  h.low64 = XXH3_avalanche(low + high);
  h.high64 = static_cast<xxh_u64>(0) -
             XXH3_avalanche(low * XXH_PRIME64_1 + high * XXH_PRIME64_4 + kLen * XXH_PRIME64_2);
  return h;
}

// ---- past 240 bytes: XXH3_hashLong_128b with the default secret ----------

constexpr const xxh_u8* kMergeLow = XXH3_kSecret + XXH_SECRET_MERGEACCS_START;
constexpr const xxh_u8* kMergeHigh =
    XXH3_kSecret + kSecretSize - 8 * sizeof(xxh_u64) - XXH_SECRET_MERGEACCS_START;

// A block's key-free part. Stripe 0's first two lanes were read from memory
// that is not the key (`first`); what they added is taken out.
template <bool kScrambles>
struct LongState;

// Up to 1024 bytes, no scramble: acc[0] and acc[1] less stripe 0's first two
// lanes, and each half's merge of acc[2..8).
template <>
struct LongState<false> {
  xxh_u64 acc0, acc1, merged_low, merged_high;
};

// Longer: the accumulators before the first scramble, and what stripe 0's
// first two lanes added to acc[0] and acc[1] (taken out in the chain, before
// the scramble).
template <>
struct LongState<true> {
  XXH_ALIGN(64) xxh_u64 acc[XXH_ACC_NB];
  xxh_u64 taken0, taken1;
};

template <size_t kLen>
using LongStateFor = LongState<(kLen > kScrambleLen)>;

// Stripe s of prev || tokens: bytes [64 s, 64 s + 64). Stripe 0 is read from
// `first`.
inline const xxh_u8* Stripe(const xxh_u8* tok, const xxh_u8* first, size_t s) {
  return s == 0 ? first : tok + XXH_STRIPE_LEN * s - 16;
}

// Inlined into the chain's loop: a call per block would cost its frame and,
// on AVX, a vzeroupper.
template <size_t kLen>
XXH_FORCE_INLINE void LongAhead(const xxh_u8* tok, const xxh_u8* first, LongStateFor<kLen>* st) {
  static_assert(kLen > XXH3_MIDSIZE_MAX);
  constexpr bool kScrambles = kLen > kScrambleLen;
  XXH_ALIGN(64) xxh_u64 acc[XXH_ACC_NB] = XXH3_INIT_ACC;
  constexpr size_t kStripes = kScrambles ? kStripesPerScramble : (kLen - 1) / XXH_STRIPE_LEN;
  for (size_t s = 0; s < kStripes; ++s) {
    XXH3_accumulate_512(acc, Stripe(tok, first, s), XXH3_kSecret + s * XXH_SECRET_CONSUME_RATE);
  }
  xxh_u64 taken0 = 0, taken1 = 0;
  AddKeyLanes(&taken0, &taken1, XXH_readLE64(first), XXH_readLE64(first + 8));
  if constexpr (kScrambles) {
    memcpy(st->acc, acc, sizeof acc);
    st->taken0 = taken0;
    st->taken1 = taken1;
  } else {
    // The last stripe: the input's final 64 bytes, all tokens.
    XXH3_accumulate_512(acc, tok + (kLen - 16) - XXH_STRIPE_LEN,
                        XXH3_kSecret + kSecretSize - XXH_STRIPE_LEN - XXH_SECRET_LASTACC_START);
    // Scalars from here on: the vector acc is never written back (a store
    // into it would stall its next wide load).
    st->acc0 = acc[0] - taken0;
    st->acc1 = acc[1] - taken1;
    xxh_u64 low = kLen * XXH_PRIME64_1, high = ~(kLen * XXH_PRIME64_2);
    for (size_t i = 1; i < 4; ++i) {
      low += Mix2(acc[2 * i], acc[2 * i + 1], kMergeLow + 16 * i);
      high += Mix2(acc[2 * i], acc[2 * i + 1], kMergeHigh + 16 * i);
    }
    st->merged_low = low;
    st->merged_high = high;
  }
}

template <size_t kLen>
XXH_FORCE_INLINE XXH128_hash_t LongFinish(LongStateFor<kLen>* st, const xxh_u8* tok, KeyWords k) {
  XXH128_hash_t h;
  if constexpr (kLen <= kScrambleLen) {
    xxh_u64 a0 = st->acc0, a1 = st->acc1;
    AddKeyLanes(&a0, &a1, k.w0, k.w1);
    h.low64 = XXH3_avalanche(st->merged_low + Mix2(a0, a1, kMergeLow));
    h.high64 = XXH3_avalanche(st->merged_high + Mix2(a0, a1, kMergeHigh));
  } else {
    xxh_u64* acc = st->acc;
    acc[0] -= st->taken0;
    acc[1] -= st->taken1;
    AddKeyLanes(&acc[0], &acc[1], k.w0, k.w1);
    XXH3_scrambleAcc(acc, XXH3_kSecret + kSecretSize - XXH_STRIPE_LEN);
    constexpr size_t kScrambles = (kLen - 1) / kScrambleLen;
    size_t s = kStripesPerScramble;  // stripes from here on lie in the tokens
    for (size_t n = 1; n < kScrambles; ++n) {
      for (size_t j = 0; j < kStripesPerScramble; ++j, ++s) {
        XXH3_accumulate_512(acc, tok + XXH_STRIPE_LEN * s - 16,
                            XXH3_kSecret + j * XXH_SECRET_CONSUME_RATE);
      }
      XXH3_scrambleAcc(acc, XXH3_kSecret + kSecretSize - XXH_STRIPE_LEN);
    }
    constexpr size_t kTailStripes = ((kLen - 1) - kScrambleLen * kScrambles) / XXH_STRIPE_LEN;
    for (size_t j = 0; j < kTailStripes; ++j, ++s) {
      XXH3_accumulate_512(acc, tok + XXH_STRIPE_LEN * s - 16,
                          XXH3_kSecret + j * XXH_SECRET_CONSUME_RATE);
    }
    XXH3_accumulate_512(acc, tok + (kLen - 16) - XXH_STRIPE_LEN,
                        XXH3_kSecret + kSecretSize - XXH_STRIPE_LEN - XXH_SECRET_LASTACC_START);
    h.low64 = XXH3_mergeAccs(acc, kMergeLow, kLen * XXH_PRIME64_1);
    h.high64 = XXH3_mergeAccs(acc, kMergeHigh, ~(kLen * XXH_PRIME64_2));
  }
  return h;
}

// ---- the chain -----------------------------------------------------------

// Key i goes to out's bytes [16 i, 16 i + 16): hi = high64, then lo = low64,
// native words (BlockKey's layout; written as bytes, so `out` may be any
// trivially copyable object of that layout).
inline void Put(XXH128_hash_t h, KeyWords* k, unsigned char* out) {
  memcpy(out, &h.high64, 8);
  memcpy(out + 8, &h.low64, 8);
  *k = Words(h.high64, h.low64);
}

template <size_t kTokens>
void Chain(uint64_t prev_hi, uint64_t prev_lo, const int32_t* tokens, size_t blocks,
           void* out_keys) {
  if (blocks == 0) return;  // and read no token: block 0's first stripe is copied below
  constexpr size_t kBytes = kTokens * sizeof(int32_t);
  constexpr size_t kLen = 16 + kBytes;
  const auto* tok = reinterpret_cast<const xxh_u8*>(tokens);
  KeyWords key = Words(prev_hi, prev_lo);
  auto* out = static_cast<unsigned char*>(out_keys);
  if constexpr (kLen > 128 && kLen <= XXH3_MIDSIZE_MAX) {  // no split: see the top
    XXH_ALIGN(64) xxh_u8 buf[kLen];
    for (size_t i = 0; i < blocks; ++i) {
      memcpy(buf, &key, 16);
      memcpy(buf + 16, tok + i * kBytes, kBytes);
      Put(XXH3_128bits(buf, kLen), &key, out + 16 * i);
    }
  } else if constexpr (kLen <= 128) {
    ShortState ring[kAhead];
    for (size_t i = 0; i < blocks && i < kAhead; ++i) ring[i] = ShortAhead<kLen>(tok + i * kBytes);
    for (size_t i = 0; i < blocks; ++i) {
      const ShortState s = ring[i % kAhead];
      if (i + kAhead < blocks) ring[i % kAhead] = ShortAhead<kLen>(tok + (i + kAhead) * kBytes);
      Put(ShortFinish<kLen>(s, key), &key, out + 16 * i);
    }
  } else {
    // Stripe 0 of block 0 is read from a copy (its key lanes zero); every
    // later block's stripe 0 starts 16 bytes before its tokens, in the
    // previous block's.
    XXH_ALIGN(64) xxh_u8 first0[XXH_STRIPE_LEN] = {};
    memcpy(first0 + 16, tok, XXH_STRIPE_LEN - 16);
    LongStateFor<kLen> ring[kAhead];
    for (size_t i = 0; i < blocks && i < kAhead; ++i) {
      LongAhead<kLen>(tok + i * kBytes, i == 0 ? first0 : tok + i * kBytes - 16, &ring[i]);
    }
    for (size_t i = 0; i < blocks; ++i) {
      LongStateFor<kLen> st = ring[i % kAhead];
      if (i + kAhead < blocks) {  // never block 0: stripe 0 starts in the block before
        const xxh_u8* t = tok + (i + kAhead) * kBytes;
        LongAhead<kLen>(t, t - 16, &ring[i % kAhead]);
      }
      Put(LongFinish<kLen>(&st, tok + i * kBytes, key), &key, out + 16 * i);
    }
  }
}

void Hash128(const void* data, size_t bytes, void* out) {
  KeyWords unused;
  Put(XXH3_128bits(data, bytes), &unused, static_cast<unsigned char*>(out));
}

}  // namespace

const ChainKernels KVTIER_CHAIN_KERNELS{
    {&Chain<16>, &Chain<32>, &Chain<64>, &Chain<128>, &Chain<256>, &Chain<512>, &Chain<1024>},
    &Hash128};

}  // namespace kvtier::chained_hash_internal
