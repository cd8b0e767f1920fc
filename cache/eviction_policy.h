// EvictionPolicy: orders the blocks of one tier for eviction (DESIGN §5).
//
// A policy only orders keys; it never touches storage. The CacheManager keeps
// one per tier, feeds it every insert, hit and removal, and asks it for
// victims when the tier is full. Not thread-safe: the owner serialises calls.
// Every operation is O(1) amortised, except that Victims also steps over the
// blocks `eligible` refuses (pinned blocks, inner blocks).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string_view>
#include <vector>

#include "common/block_key.h"

namespace kvtier {

class EvictionPolicy {
 public:
  virtual ~EvictionPolicy() = default;

  virtual std::string_view Name() const = 0;
  // A block entered the tier. Inserting a present key counts as a Touch.
  virtual void Insert(const BlockKey& key, uint64_t bytes) = 0;
  // A present block was used (a lookup hit or a read). Absent keys are ignored.
  virtual void Touch(const BlockKey& key) = 0;
  // A block left the tier for another reason. Absent keys are ignored.
  virtual void Erase(const BlockKey& key) = 0;
  // Chooses up to `n` victims among the blocks that `eligible` accepts, best
  // victim first, appends them to `out` and forgets them. Returns how many.
  virtual size_t Victims(size_t n, const std::function<bool(const BlockKey&)>& eligible,
                         std::vector<BlockKey>* out) = 0;
  virtual size_t size() const = 0;
};

// Least recently used first.
std::unique_ptr<EvictionPolicy> NewLruPolicy();

// A policy by name ("lru"); nullptr for an unknown name.
std::unique_ptr<EvictionPolicy> NewEvictionPolicy(std::string_view name);

}  // namespace kvtier
