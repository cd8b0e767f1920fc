// EvictionPolicy: orders the blocks of one tier for eviction (DESIGN §5).
//
// A policy only orders keys; it never touches storage. The CacheManager keeps
// one per tier, feeds it every insert, hit and removal, and asks it for
// victims when the tier is full; the trace benchmarks drive the very same
// objects. Not thread-safe: the owner serialises calls.
//
// Cost: Insert, Touch and Erase are O(1) amortised for every policy but the
// two priority-ordered ones (gdsf, ttl-cost), which keep indexed heaps and
// pay O(log n) for Insert and Erase (a GDSF Touch is O(1)). Victims is O(1)
// amortised per victim (O(log n) for the heaps), plus the blocks `eligible`
// refuses, which are stepped over and keep their place and state, at most
// VictimQuery::max_refused of them per call. Every policy keeps its state in
// flat arrays indexed by slot (cache/policies/key_slots.h).
//
// Sizes are in bytes. A policy that sizes queues (ARC's target, S3-FIFO's
// small queue) measures them in bytes against PolicyOptions::capacity_bytes,
// so with blocks of one byte each the published algorithms are reproduced
// exactly, which is how the tests check them.
//
// Ghosts: ARC and S3-FIFO remember keys they evicted recently. A key evicted
// through Victims enters the ghost history; a key removed through Erase (the
// block was demoted, dropped, expired or deleted elsewhere) does not.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/block_key.h"
#include "common/clock.h"

namespace kvtier {

// What a policy may know of a block besides its key.
struct PolicyBlock {
  uint64_t bytes = 1;             // payload size, > 0
  double miss_cost = 1.0;         // cost of losing the block from this tier (gdsf, ttl-cost), > 0
  int64_t expiry_ms = kNoExpiry;  // after this the block is worth nothing (ttl-cost)
  // Where the block sits in its prefix chain, for prefix-aware policies and
  // admission: its parent's key (none for a chain's first block) and its
  // depth (0 = first block). Hints: a policy must stay correct without them.
  std::optional<BlockKey> parent = std::nullopt;
  uint32_t depth = 0;
};

struct VictimQuery {
  size_t n = 1;        // victims wanted
  int64_t now_ms = 0;  // the time (ttl-cost takes expired blocks first)
  // The block the room is made for, when known: ARC's replacement rule looks
  // at whether it is in its second ghost list.
  const BlockKey* incoming = nullptr;
  // Which blocks may be taken (unpinned, leaves ...); null takes any.
  std::function<bool(const BlockKey&)> eligible;
  // Refused blocks one call may step over before it gives up and returns
  // what it has (0: only the policy's first choice, if it is eligible). A
  // caller with a preference that few blocks meet (leaves of one size)
  // bounds its work with it, then asks again without it.
  size_t max_refused = SIZE_MAX;
};

// One Victims call's use of `eligible`: asks it and counts the refusals
// against max_refused.
class EligibilityScan {
 public:
  explicit EligibilityScan(const VictimQuery& q) : q_(q) {}
  // True to take `key`; false to step over it (a refusal).
  bool Accepts(const BlockKey& key) {
    if (!q_.eligible || q_.eligible(key)) return true;
    ++refused_;
    return false;
  }
  // The call has stepped over as many refused blocks as it may.
  bool Exhausted() const { return refused_ > 0 && refused_ >= q_.max_refused; }

 private:
  const VictimQuery& q_;
  size_t refused_ = 0;
};

struct PolicyOptions {
  uint64_t capacity_bytes = 0;  // the tier's capacity (queue targets); 0 = unbounded
};

class EvictionPolicy {
 public:
  virtual ~EvictionPolicy() = default;

  virtual std::string_view Name() const = 0;
  // A block entered the tier. Inserting a present key is a Touch that also
  // takes the new attributes (a refreshed expiry, a new cost).
  virtual void Insert(const BlockKey& key, const PolicyBlock& block) = 0;
  // A present block was used (a lookup hit or a read). Absent keys are ignored.
  virtual void Touch(const BlockKey& key) = 0;
  // A block left the tier for another reason. Absent keys are ignored.
  virtual void Erase(const BlockKey& key) = 0;
  // Chooses up to `query.n` victims among the blocks `query.eligible`
  // accepts, best victim first, appends them to `out` and forgets them
  // (remembering them as ghosts where the policy keeps ghosts). Returns how
  // many it chose; fewer than asked only when no other block is eligible or
  // after stepping over `query.max_refused` refused blocks.
  virtual size_t Victims(const VictimQuery& query, std::vector<BlockKey>* out) = 0;
  // Blocks the policy holds (ghosts not counted).
  virtual size_t size() const = 0;
  // A hint: `key` will be looked up soon (a replay knows its next
  // references). Starts loading the memory the look-up reads first, so that
  // the load overlaps the work in between; changes no state and no answer.
  virtual void Prefetch(const BlockKey& key) const { (void)key; }
};

// The policies, each after its published description:
//  lru       least recently used first.
//  fifo      first inserted first; hits change nothing.
//  lfu       least frequently used first, ties least recently used first.
//  arc       Megiddo & Modha, FAST'03: T1/T2 with ghosts B1/B2, adaptive p.
//  s3fifo    Yang et al., SOSP'23: small FIFO (10%), main FIFO, ghost FIFO.
//  sieve     Zhang et al., NSDI'24: one FIFO with visited bits and a hand.
//  gdsf      Cherkasova '98: priority L + frequency * cost / size, L inflating.
//  ttl-cost  expired blocks first (earliest expiry first), then gdsf order by
//            the placement cost model's miss cost (cache/placement.h).
//  lirs      Jiang & Zhang, SIGMETRICS'02: LIR/HIR sets (HIR 1%), stack S with
//            pruning and ghosts (S bounded to 2x capacity), queue Q of resident HIR.
//  prefix-lru  SGLang (Zheng et al., NeurIPS'24) radix-tree eviction: leaves
//            only (no cached child), least recently used first.
//  prefix-reuse  leaf-first; reused chains (hit, back from a ghost, or continuing a
//            reused chain) outlive new ones by a credit learned from ghosts (after
//            Marconi, MLSys'25, with ARC's adaptation).
//  wtinylfu  Einziger et al., Middleware'18 (Caffeine): 1% window LRU, TinyLFU sketch
//            duel into an SLRU main (20% probation, 80% protected), hill-climbed window.
//  lhd       Beckmann et al., NSDI'18: least hit density (hits per byte-reference
//            expected, learned by class and age) among 16 sampled leaves; classes
//            by last reuse interval, continued down a reused chain.
std::unique_ptr<EvictionPolicy> NewLruPolicy();
std::unique_ptr<EvictionPolicy> NewFifoPolicy();
std::unique_ptr<EvictionPolicy> NewLfuPolicy();
std::unique_ptr<EvictionPolicy> NewArcPolicy(const PolicyOptions& options);
std::unique_ptr<EvictionPolicy> NewS3FifoPolicy(const PolicyOptions& options);
std::unique_ptr<EvictionPolicy> NewSievePolicy();
std::unique_ptr<EvictionPolicy> NewGdsfPolicy();
std::unique_ptr<EvictionPolicy> NewTtlCostPolicy();
std::unique_ptr<EvictionPolicy> NewLirsPolicy(const PolicyOptions& options);
std::unique_ptr<EvictionPolicy> NewPrefixLruPolicy();
std::unique_ptr<EvictionPolicy> NewPrefixReusePolicy(const PolicyOptions& options);
std::unique_ptr<EvictionPolicy> NewWTinyLfuPolicy(const PolicyOptions& options);
std::unique_ptr<EvictionPolicy> NewLhdPolicy();

// The block `policy` would evict first for `incoming`, left in place (for an
// admission filter to weigh against `incoming`); nullopt when it holds none.
// What the policy did on its way there (S3-FIFO's promotions, SIEVE's hand)
// it would have done for the eviction too.
std::optional<BlockKey> PeekVictim(EvictionPolicy& policy, const BlockKey& incoming);

// A policy by name (the names above); nullptr for an unknown name.
std::unique_ptr<EvictionPolicy> NewEvictionPolicy(std::string_view name,
                                                  const PolicyOptions& options = {});
// Every name NewEvictionPolicy knows, in the order above.
const std::vector<std::string>& EvictionPolicyNames();

}  // namespace kvtier
