// Drives an EvictionPolicy the way a cache of fixed capacity does, for tests
// that check a policy's exact victims on a hand-made request sequence.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <map>
#include <vector>

#include "cache/eviction_policy.h"

namespace kvtier::policy_test {

inline BlockKey K(uint64_t i) { return BlockKey{0, i}; }

// A victim query for `n` blocks, of those `eligible` allows (all when null).
inline VictimQuery Take(size_t n, std::function<bool(const BlockKey&)> eligible = nullptr) {
  VictimQuery q;
  q.n = n;
  q.eligible = std::move(eligible);
  return q;
}

// What one replay produced.
struct Replay {
  std::vector<bool> hits;         // one per request
  std::vector<uint64_t> victims;  // evicted keys (by number), in eviction order
};

// Replays `requests` (key numbers) through `policy` as a cache holding
// `capacity` blocks of one byte each: a present key is a hit (Touch); a
// missing one makes room one victim at a time (with the key as the incoming
// block) and is then inserted.
inline Replay ReplayBlocks(EvictionPolicy& policy, uint64_t capacity,
                           const std::vector<uint64_t>& requests) {
  Replay r;
  std::vector<bool> present;
  auto is_present = [&](uint64_t k) { return k < present.size() && present[k]; };
  uint64_t held = 0;
  for (uint64_t k : requests) {
    if (k >= present.size()) present.resize(k + 1, false);
    if (is_present(k)) {
      r.hits.push_back(true);
      policy.Touch(K(k));
      continue;
    }
    r.hits.push_back(false);
    const BlockKey incoming = K(k);
    while (held >= capacity) {
      std::vector<BlockKey> out;
      VictimQuery q;
      q.incoming = &incoming;
      if (policy.Victims(q, &out) != 1) return r;  // a policy bug: the test sees it
      present[out[0].lo] = false;
      r.victims.push_back(out[0].lo);
      --held;
    }
    policy.Insert(incoming, PolicyBlock{});
    present[k] = true;
    ++held;
  }
  return r;
}

// One Victims call (at `now_ms`, for `incoming`, among the blocks `eligible`
// accepts); the victims by key number.
inline std::vector<uint64_t> Evict(EvictionPolicy& p, size_t n, const BlockKey* incoming = nullptr,
                                   std::function<bool(const BlockKey&)> eligible = nullptr,
                                   int64_t now_ms = 0) {
  VictimQuery q;
  q.n = n;
  q.incoming = incoming;
  q.now_ms = now_ms;
  q.eligible = std::move(eligible);
  std::vector<BlockKey> out;
  const size_t taken = p.Victims(q, &out);
  EXPECT_EQ(taken, out.size());
  std::vector<uint64_t> keys;
  for (const BlockKey& k : out) keys.push_back(k.lo);
  return keys;
}

// The same without an incoming block.
inline std::vector<uint64_t> Take(EvictionPolicy& p, size_t n,
                                  std::function<bool(const BlockKey&)> eligible = nullptr) {
  return Evict(p, n, nullptr, std::move(eligible));
}

// A hits vector of `requests` entries, true at `positions`.
inline std::vector<bool> HitsAt(size_t requests, const std::vector<size_t>& positions) {
  std::vector<bool> hits(requests, false);
  for (size_t i : positions) hits[i] = true;
  return hits;
}

// Drives `p` as a tier of `capacity` bytes (0: unbounded, then it only
// sheds when over `soft_limit`) with blocks of 8, 24 and 40 bytes drawn from
// `seed`, checking
// that every victim is resident and the tier never overflows.
inline void ReplayMixedSizes(EvictionPolicy& p, uint64_t capacity, uint64_t soft_limit,
                             uint64_t seed) {
  std::map<uint64_t, uint64_t> resident;  // key -> bytes
  uint64_t held = 0;
  uint64_t rng = seed;
  const uint64_t limit = capacity > 0 ? capacity : soft_limit;
  for (int i = 0; i < 20000; ++i) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    const uint64_t k = (rng >> 33) % 97;
    const uint64_t bytes = 8 + 16 * (k % 3);
    if (i % 13 == 0 && resident.count(k)) {
      p.Erase(K(k));
      held -= resident[k];
      resident.erase(k);
      continue;
    }
    if (resident.count(k)) {
      p.Touch(K(k));
      continue;
    }
    const BlockKey incoming = K(k);
    while (held + bytes > limit) {
      auto v = Evict(p, 1, &incoming);
      ASSERT_EQ(v.size(), 1u);
      auto it = resident.find(v[0]);
      ASSERT_NE(it, resident.end());
      held -= it->second;
      resident.erase(it);
    }
    p.Insert(incoming, PolicyBlock{bytes});
    resident[k] = bytes;
    held += bytes;
    ASSERT_LE(held, limit);
    ASSERT_EQ(p.size(), resident.size());
  }
  // Everything left can still be evicted, each key once.
  auto rest = Evict(p, resident.size() + 5);
  EXPECT_EQ(rest.size(), resident.size());
  EXPECT_EQ(p.size(), 0u);
}

// Replays `requests` like ReplayBlocks, with every block `bytes` bytes in a
// tier of `blocks * bytes` bytes.
inline std::vector<uint64_t> ReplayScaled(EvictionPolicy& p, uint64_t blocks, uint64_t bytes,
                                          const std::vector<uint64_t>& requests) {
  std::map<uint64_t, bool> present;
  std::vector<uint64_t> victims;
  uint64_t held = 0;
  for (uint64_t k : requests) {
    if (present[k]) {
      p.Touch(K(k));
      continue;
    }
    const BlockKey incoming = K(k);
    while (held >= blocks) {
      auto v = Evict(p, 1, &incoming);
      if (v.size() != 1) return victims;
      present[v[0]] = false;
      victims.push_back(v[0]);
      --held;
    }
    p.Insert(incoming, PolicyBlock{bytes});
    present[k] = true;
    ++held;
  }
  return victims;
}

}  // namespace kvtier::policy_test
