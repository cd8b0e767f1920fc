// Rendezvous (highest random weight) hashing: which of a set of nodes owns a
// block key (DESIGN §10). Each node scores every key with a hash seeded by
// the node's name; the highest score owns it. Every node and client that
// knows the same names picks the same owner, with no table to share, and
// adding or removing one of N nodes moves only the keys it wins or held
// (about 1/N of them).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/block_key.h"

namespace kvtier {

class Rendezvous {
 public:
  // `nodes`: the names of all nodes (e.g. "host:port"), this one included.
  explicit Rendezvous(std::vector<std::string> nodes);

  // The index in nodes() of `key`'s owner; 0 when there are no nodes.
  size_t Owner(const BlockKey& key) const;
  const std::vector<std::string>& nodes() const { return nodes_; }

 private:
  std::vector<std::string> nodes_;
  std::vector<uint64_t> seeds_;  // one per node: XXH3-64 of its name
};

}  // namespace kvtier
