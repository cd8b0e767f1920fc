#include "cache/admission/frequency_sketch.h"

#include <algorithm>
#include <bit>

namespace kvtier {

BloomBits::BloomBits(uint64_t keys) {
  const uint64_t bits = std::bit_ceil(std::max<uint64_t>(keys * 8, 512));
  words_.assign(bits / 64, 0);
  mask_ = bits - 1;
}

// Three probes from one hash by double hashing (Kirsch & Mitzenmacher): the
// low and high halves, the second forced odd so the probes differ.
void BloomBits::Add(uint64_t hash) {
  const uint64_t h1 = hash, h2 = (hash >> 32) | 1;
  for (uint64_t i = 0; i < 3; ++i) {
    const uint64_t bit = (h1 + i * h2) & mask_;
    words_[bit >> 6] |= uint64_t{1} << (bit & 63);
  }
}

bool BloomBits::Contains(uint64_t hash) const {
  const uint64_t h1 = hash, h2 = (hash >> 32) | 1;
  for (uint64_t i = 0; i < 3; ++i) {
    const uint64_t bit = (h1 + i * h2) & mask_;
    if ((words_[bit >> 6] & (uint64_t{1} << (bit & 63))) == 0) return false;
  }
  return true;
}

bool BloomBits::TestAndAdd(uint64_t hash) {
  const uint64_t h1 = hash, h2 = (hash >> 32) | 1;
  bool present = true;
  for (uint64_t i = 0; i < 3; ++i) {
    const uint64_t bit = (h1 + i * h2) & mask_;
    const uint64_t m = uint64_t{1} << (bit & 63);
    present &= (words_[bit >> 6] & m) != 0;
    words_[bit >> 6] |= m;
  }
  return present;
}

void BloomBits::Clear() { std::fill(words_.begin(), words_.end(), 0); }

FrequencySketch::FrequencySketch(uint64_t capacity_blocks, bool doorkeeper)
    : has_doorkeeper_(doorkeeper),
      // Distinct keys per sample are at most W; the doorkeeper holds them.
      doorkeeper_(doorkeeper ? 10 * std::max<uint64_t>(capacity_blocks, 1) : 1),
      sample_size_(10 * std::max<uint64_t>(capacity_blocks, 1)) {
  const uint64_t words = std::bit_ceil(std::max<uint64_t>(capacity_blocks, 8));
  table_.assign(words, 0);
  block_mask_ = words / 8 - 1;
}

// The key's block of 8 words comes from the hash's low bits; within it, row i
// uses word 2i or 2i+1 and one of its 16 nibbles, chosen by 5 bits of a
// second mix of the hash, so the four counters are spread over the block.
FrequencySketch::Counter FrequencySketch::At(uint64_t hash, int row) const {
  const uint64_t block = (hash & block_mask_) * 8;
  const uint64_t mixed = (hash >> 17 | hash << 47) * 0x31848bab9e3779b9ull;
  const uint64_t bits = mixed >> (row * 8);
  return Counter{static_cast<size_t>(block + 2 * row + (bits & 1)),
                 static_cast<uint32_t>(((bits >> 1) & 15) * 4)};
}

uint32_t FrequencySketch::Add(uint64_t hash) {
  // The doorkeeper takes a key's first reference in the sample; later ones
  // reach the counters.
  const bool counted = !has_doorkeeper_ || doorkeeper_.TestAndAdd(hash);
  uint32_t least = kMaxCount;
  for (int row = 0; row < 4; ++row) {
    const Counter c = At(hash, row);
    const uint32_t v = (table_[c.word] >> c.shift) & 15;
    least = std::min(least, v);
    if (counted && v < kMaxCount) table_[c.word] += uint64_t{1} << c.shift;
  }
  // The sample ends with this reference (Caffeine resets after counting).
  if (++samples_ >= sample_size_) Reset();
  return has_doorkeeper_ && counted ? least + 1 : least;
}

uint32_t FrequencySketch::Frequency(uint64_t hash) const {
  uint32_t least = kMaxCount;
  for (int row = 0; row < 4; ++row) {
    const Counter c = At(hash, row);
    least = std::min<uint32_t>(least, (table_[c.word] >> c.shift) & 15);
  }
  if (has_doorkeeper_ && doorkeeper_.Contains(hash)) ++least;
  return least;
}

void FrequencySketch::Reset() {
  // Halving keeps each counter's top three bits: shift the word right by one
  // and drop what crossed into the next nibble. The sample count halves too,
  // less the halves the odd counters lost to truncation (four rows per key):
  // it tracks the mass the sketch holds, so the next reset comes when that is
  // W again (about W/2 references later), as in the paper and Caffeine. The
  // doorkeeper's keys lose their one reference (the paper's reset).
  uint64_t odd = 0;
  for (uint64_t& w : table_) {
    odd += std::popcount(w & 0x1111111111111111ull);
    w = (w >> 1) & 0x7777777777777777ull;
  }
  if (has_doorkeeper_) doorkeeper_.Clear();
  samples_ = (samples_ - std::min(samples_, odd / 4)) / 2;
  ++resets_;
}

}  // namespace kvtier
