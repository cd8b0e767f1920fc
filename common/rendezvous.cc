#include "common/rendezvous.h"

#include <xxhash.h>

namespace kvtier {

Rendezvous::Rendezvous(std::vector<std::string> nodes) : nodes_(std::move(nodes)) {
  for (const std::string& n : nodes_) seeds_.push_back(XXH3_64bits(n.data(), n.size()));
}

size_t Rendezvous::Owner(const BlockKey& key) const {
  // The key's 16 bytes in a fixed order, so every process scores the same.
  uint8_t bytes[16];
  for (int i = 0; i < 8; ++i) {
    bytes[i] = static_cast<uint8_t>(key.hi >> (56 - 8 * i));
    bytes[8 + i] = static_cast<uint8_t>(key.lo >> (56 - 8 * i));
  }
  size_t best = 0;
  uint64_t best_score = 0;
  for (size_t i = 0; i < seeds_.size(); ++i) {
    const uint64_t score = XXH3_64bits_withSeed(bytes, sizeof bytes, seeds_[i]);
    // Ties (never in practice) go to the smaller name, so every process agrees.
    if (i == 0 || score > best_score || (score == best_score && nodes_[i] < nodes_[best])) {
      best = i;
      best_score = score;
    }
  }
  return best;
}

}  // namespace kvtier
