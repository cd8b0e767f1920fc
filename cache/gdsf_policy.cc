// GDSF and ttl-cost: the two priority-ordered policies, one implementation.
//
// GDSF (Cherkasova, "Improving WWW Proxies Performance with Greedy-Dual-Size-
// Frequency Caching Policy", HP Labs 1998): each block has the priority
//   H = L + freq * miss_cost / bytes
// and the block of lowest H goes first (equal H: the one inserted earlier).
// L, the inflation value, starts at 0 and becomes the H of each block evicted
// through Victims, so a block not used for long is eventually outranked by
// newly inserted ones. A new block starts at freq 1. A hit (Touch, or Insert of
// a present key, which also takes the new miss_cost, bytes and expiry) adds 1
// to freq and recomputes H with the current L. A block keeps its insertion
// sequence number across hits. Erase does not move L.
//
// When `eligible` makes Victims step over blocks of lower H, the block taken
// may have an H below L (one skipped earlier and taken now); L never
// decreases: it becomes max(L, H). Without `eligible` this is the plain rule,
// since the block taken always has the lowest H and no H is below L.
//
// ttl-cost: blocks whose expiry_ms <= now_ms are taken first, earliest expiry
// first (equal expiry: inserted earlier first); a second ordered set keeps
// blocks by expiry. kNoExpiry never counts as expired. Then the unexpired
// ones in GDSF order, with the miss cost the cache computes from its drain-
// time cost model (cache/placement.h). Taking an expired block does not move
// L: it left for being stale, not for being the cheapest to lose, and
// inflating by its H would age the live blocks for nothing.
//
// Insert, Touch and Erase are O(log n); Victims is O(log n) per block taken
// or stepped over.
#include <algorithm>
#include <cstdint>
#include <set>
#include <tuple>
#include <unordered_map>

#include "cache/eviction_policy.h"

namespace kvtier {
namespace {

class PriorityPolicy final : public EvictionPolicy {
 public:
  PriorityPolicy(std::string_view name, bool expired_first)
      : name_(name), expired_first_(expired_first) {}

  std::string_view Name() const override { return name_; }

  void Insert(const BlockKey& key, const PolicyBlock& block) override {
    auto it = blocks_.find(key);
    if (it == blocks_.end()) {
      Entry e;
      e.seq = next_seq_++;
      e.freq = 1;
      SetAttributes(e, block);
      e.h = Priority(e);
      Link(key, e);
      blocks_.emplace(key, e);
      return;
    }
    Entry& e = it->second;
    Unlink(key, e);
    SetAttributes(e, block);
    ++e.freq;
    e.h = Priority(e);
    Link(key, e);
  }

  void Touch(const BlockKey& key) override {
    auto it = blocks_.find(key);
    if (it == blocks_.end()) return;
    Entry& e = it->second;
    by_priority_.erase({e.h, e.seq, key});
    ++e.freq;
    e.h = Priority(e);
    by_priority_.emplace(e.h, e.seq, key);
  }

  void Erase(const BlockKey& key) override {
    auto it = blocks_.find(key);
    if (it == blocks_.end()) return;
    Unlink(key, it->second);
    blocks_.erase(it);
  }

  size_t Victims(const VictimQuery& q, std::vector<BlockKey>* out) override {
    size_t taken = 0;
    if (expired_first_) {
      for (auto it = by_expiry_.begin(); taken < q.n && it != by_expiry_.end();) {
        const auto& [expiry, seq, key] = *it;
        if (expiry > q.now_ms) break;
        if (q.eligible && !q.eligible(key)) {
          ++it;
          continue;
        }
        out->push_back(key);
        auto b = blocks_.find(key);
        by_priority_.erase({b->second.h, seq, key});
        blocks_.erase(b);
        it = by_expiry_.erase(it);
        ++taken;
      }
    }
    // Expired blocks still here were refused by `eligible`, so every block
    // taken below is unexpired.
    for (auto it = by_priority_.begin(); taken < q.n && it != by_priority_.end();) {
      const auto& [h, seq, key] = *it;
      if (q.eligible && !q.eligible(key)) {
        ++it;
        continue;
      }
      out->push_back(key);
      inflation_ = std::max(inflation_, h);
      auto b = blocks_.find(key);
      if (HasExpiry(b->second)) by_expiry_.erase({b->second.expiry_ms, seq, key});
      blocks_.erase(b);
      it = by_priority_.erase(it);
      ++taken;
    }
    return taken;
  }

  size_t size() const override { return blocks_.size(); }

 private:
  struct Entry {
    double h = 0;       // priority: L + freq * miss_cost / bytes
    uint64_t seq = 0;   // insertion order; breaks ties in h and expiry
    uint64_t freq = 0;  // uses since insertion, counting the insertion
    double miss_cost = 1;
    uint64_t bytes = 1;
    int64_t expiry_ms = kNoExpiry;
  };

  static void SetAttributes(Entry& e, const PolicyBlock& block) {
    e.miss_cost = block.miss_cost;
    e.bytes = std::max<uint64_t>(block.bytes, 1);  // contract says > 0; never divide by 0
    e.expiry_ms = block.expiry_ms;
  }

  double Priority(const Entry& e) const {
    return inflation_ + static_cast<double>(e.freq) * e.miss_cost / static_cast<double>(e.bytes);
  }

  bool HasExpiry(const Entry& e) const { return expired_first_ && e.expiry_ms != kNoExpiry; }

  void Link(const BlockKey& key, const Entry& e) {
    by_priority_.emplace(e.h, e.seq, key);
    if (HasExpiry(e)) by_expiry_.emplace(e.expiry_ms, e.seq, key);
  }

  void Unlink(const BlockKey& key, const Entry& e) {
    by_priority_.erase({e.h, e.seq, key});
    if (HasExpiry(e)) by_expiry_.erase({e.expiry_ms, e.seq, key});
  }

  const std::string_view name_;
  const bool expired_first_;  // ttl-cost: expired blocks go before the GDSF order
  double inflation_ = 0;      // L
  uint64_t next_seq_ = 0;
  std::unordered_map<BlockKey, Entry, BlockKeyHash> blocks_;
  std::set<std::tuple<double, uint64_t, BlockKey>> by_priority_;  // lowest h first
  // ttl-cost only: blocks with an expiry, earliest first.
  std::set<std::tuple<int64_t, uint64_t, BlockKey>> by_expiry_;
};

}  // namespace

std::unique_ptr<EvictionPolicy> NewGdsfPolicy() {
  return std::make_unique<PriorityPolicy>("gdsf", false);
}

std::unique_ptr<EvictionPolicy> NewTtlCostPolicy() {
  return std::make_unique<PriorityPolicy>("ttl-cost", true);
}

}  // namespace kvtier
