// FrequencySketch: TinyLFU's approximate, aging frequency of recently
// referenced keys (Einziger, Friedman & Manes, "TinyLFU: A Highly Efficient
// Cache Admission Policy", ACM ToS 2017; the layout follows the description
// of Caffeine's FrequencySketch).
//
// A count-min sketch of 4-bit counters, four per key, kept within one 64-byte
// block of the table so that a key costs one cache line. In front of it a
// doorkeeper Bloom filter takes a key's first reference: only later ones
// reach the counters, so the many keys seen once in a sample cost a bit
// each, not four counters. Estimate = min of the key's four counters, plus
// one if the doorkeeper holds it.
//
// Aging: after W = 10 x capacity references (the sample), every counter is
// halved and the doorkeeper emptied; the sample count is halved too, so the
// next reset comes when the sketch again holds W references' worth (about
// W/2 later). A key's count decays by half per sample and the sketch
// reflects roughly the last W references. 10 x is the paper's and
// Caffeine's choice: counters saturate at 15, and a key needs about as many
// references per sample as fit in the cache to look frequent.
//
// Not thread-safe.
#pragma once

#include <cstdint>
#include <vector>

#include "common/block_key.h"
#include "common/prefetch.h"

namespace kvtier {

// 64 bits of a key under `seed`: a fixed mix (splitmix64's finaliser), so
// that replays are deterministic; the seed varies it per process where keys
// come from untrusted clients.
inline uint64_t AdmissionHash(const BlockKey& k, uint64_t seed) {
  uint64_t h = k.lo ^ (k.hi * 0x9e3779b97f4a7c15ull) ^ seed;
  h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
  h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
  return h ^ (h >> 31);
}

// A Bloom filter over 64-bit hashes with k = 3 probes: the doorkeeper, and
// the ghost filter's generations.
class BloomBits {
 public:
  // Room for `keys` keys at 8 bits each (about 3% false positives when full).
  explicit BloomBits(uint64_t keys);
  void Add(uint64_t hash);
  bool Contains(uint64_t hash) const;
  // Adds; returns whether it was (seemingly) there before.
  bool TestAndAdd(uint64_t hash);
  // Starts loading the words the hash's probes read (a hint; no effect).
  void Prefetch(uint64_t hash) const {
    const uint64_t h1 = hash, h2 = (hash >> 32) | 1;
    for (uint64_t i = 0; i < 3; ++i) PrefetchLine(&words_[((h1 + i * h2) & mask_) >> 6]);
  }
  void Clear();

 private:
  std::vector<uint64_t> words_;
  uint64_t mask_;  // bits - 1 (bits is a power of two)
};

class FrequencySketch {
 public:
  static constexpr uint32_t kMaxCount = 15;  // 4-bit counters

  // `capacity_blocks` > 0: the cache the sketch serves. The table has one
  // 64-bit word (16 counters) per cached block, rounded up to a power of two
  // and at least one 64-byte block: few collisions among the keys worth
  // counting. `doorkeeper`: put the Bloom filter in front.
  FrequencySketch(uint64_t capacity_blocks, bool doorkeeper);

  // One reference of the key hashed to `hash`; returns the estimate
  // Frequency gave just before it (one pass over the counters).
  uint32_t Add(uint64_t hash);
  void Increment(uint64_t hash) { Add(hash); }
  // Its estimated references within the recent sample: 0 .. kMaxCount (+1
  // with the doorkeeper).
  uint32_t Frequency(uint64_t hash) const;
  // Starts loading what Add and Frequency read for the hash: its doorkeeper
  // words and its counters' block (a hint; no effect).
  void Prefetch(uint64_t hash) const {
    if (has_doorkeeper_) doorkeeper_.Prefetch(hash);
    // The block's first and last words: the vector's storage need not start
    // on a cache line, so the block may span two.
    const uint64_t block = (hash & block_mask_) * 8;
    PrefetchLine(&table_[block]);
    PrefetchLine(&table_[block + 7]);
  }

  uint64_t sample_size() const { return sample_size_; }  // W
  uint64_t resets() const { return resets_; }            // samples completed

 private:
  // The word and nibble of the key's counter in row i (0..3).
  struct Counter {
    size_t word;
    uint32_t shift;
  };
  Counter At(uint64_t hash, int row) const;
  // Ages the sketch: halves every counter, empties the doorkeeper.
  void Reset();

  std::vector<uint64_t> table_;  // 16 counters of 4 bits per word
  uint64_t block_mask_;          // 64-byte blocks (8 words) - 1
  bool has_doorkeeper_;
  BloomBits doorkeeper_;
  uint64_t sample_size_;  // W: references between resets
  uint64_t samples_ = 0;  // references since the last reset (less the halving's share)
  uint64_t resets_ = 0;
};

}  // namespace kvtier
