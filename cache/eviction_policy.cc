#include "cache/eviction_policy.h"

namespace kvtier {

const std::vector<std::string>& EvictionPolicyNames() {
  static const std::vector<std::string> kNames = {
      "lru",      "fifo", "lfu",        "arc",          "s3fifo",   "sieve", "gdsf",
      "ttl-cost", "lirs", "prefix-lru", "prefix-reuse", "wtinylfu", "lhd"};
  return kNames;
}

std::unique_ptr<EvictionPolicy> NewEvictionPolicy(std::string_view name,
                                                  const PolicyOptions& options) {
  if (name == "lru") return NewLruPolicy();
  if (name == "fifo") return NewFifoPolicy();
  if (name == "lfu") return NewLfuPolicy();
  if (name == "arc") return NewArcPolicy(options);
  if (name == "s3fifo") return NewS3FifoPolicy(options);
  if (name == "sieve") return NewSievePolicy();
  if (name == "gdsf") return NewGdsfPolicy();
  if (name == "ttl-cost") return NewTtlCostPolicy();
  if (name == "lirs") return NewLirsPolicy(options);
  if (name == "prefix-lru") return NewPrefixLruPolicy();
  if (name == "prefix-reuse") return NewPrefixReusePolicy(options);
  if (name == "wtinylfu") return NewWTinyLfuPolicy(options);
  if (name == "lhd") return NewLhdPolicy();
  return nullptr;
}

// The query's `eligible` notes the policy's first choice and refuses it, and
// a refused block keeps its place and state (EvictionPolicy::Victims).
std::optional<BlockKey> PeekVictim(EvictionPolicy& policy, const BlockKey& incoming) {
  std::optional<BlockKey> first;
  VictimQuery q;
  q.incoming = &incoming;
  q.max_refused = 1;
  q.eligible = [&](const BlockKey& k) {
    if (!first) first = k;
    return false;
  };
  std::vector<BlockKey> none;
  policy.Victims(q, &none);
  return first;
}

}  // namespace kvtier
