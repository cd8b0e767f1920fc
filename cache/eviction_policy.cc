#include "cache/eviction_policy.h"

namespace kvtier {

const std::vector<std::string>& EvictionPolicyNames() {
  static const std::vector<std::string> kNames = {
      "lru",  "fifo",     "lfu",  "arc",        "s3fifo",       "sieve",
      "gdsf", "ttl-cost", "lirs", "prefix-lru", "prefix-reuse", "wtinylfu"};
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
  return nullptr;
}

}  // namespace kvtier
