// StripedBlockMap: the index of the blocks an in-memory tier holds (DRAM,
// HBM), BlockKey -> Entry, split over kStripes shared mutexes so operations on
// different keys rarely contend. Entry has `uint64_t bytes` and
// `int64_t expiry_ms`. Callers lock a stripe themselves for their own
// operations; the two whole-map operations every such tier needs are here.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <shared_mutex>
#include <span>
#include <unordered_map>

#include "common/block_key.h"
#include "tiers/tier.h"

namespace kvtier {

template <typename Entry>
class StripedBlockMap {
 public:
  static constexpr size_t kStripes = 64;

  struct Stripe {
    mutable std::shared_mutex mu;
    std::unordered_map<BlockKey, Entry, BlockKeyHash> map;  // guarded by mu
  };

  Stripe& Of(const BlockKey& key) { return stripes_[(BlockKeyHashValue(key) >> 58) % kStripes]; }
  std::array<Stripe, kStripes>& stripes() { return stripes_; }

  // Sets the expiry of the keys present; absent keys are skipped.
  void SetExpiry(std::span<const BlockKey> keys, int64_t expiry_ms) {
    for (const BlockKey& key : keys) {
      Stripe& stripe = Of(key);
      std::unique_lock lock(stripe.mu);
      auto it = stripe.map.find(key);
      if (it != stripe.map.end()) it->second.expiry_ms = expiry_ms;
    }
  }

  // Announces every block held (Tier::Recover of a non-persistent tier).
  void Announce(IndexSink& sink) const {
    for (const Stripe& stripe : stripes_) {
      std::shared_lock lock(stripe.mu);
      for (const auto& [key, e] : stripe.map) sink.Announce(key, e.bytes, e.expiry_ms);
    }
  }

 private:
  std::array<Stripe, kStripes> stripes_;
};

}  // namespace kvtier
