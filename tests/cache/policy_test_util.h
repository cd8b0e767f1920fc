// Drives an EvictionPolicy the way a cache of fixed capacity does, for tests
// that check a policy's exact victims on a hand-made request sequence.
#pragma once

#include <cstdint>
#include <vector>

#include "cache/eviction_policy.h"

namespace kvtier::policy_test {

inline BlockKey K(uint64_t i) { return BlockKey{0, i}; }

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

}  // namespace kvtier::policy_test
