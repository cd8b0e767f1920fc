// LIRS: Jiang & Zhang, "LIRS: An Efficient Low Inter-reference Recency Set
// Replacement Policy to Improve Buffer Cache Performance", SIGMETRICS'02.
//
// Blocks are LIR (low inter-reference recency: reused within a short
// distance; they hold most of the cache and are never evicted directly) or
// HIR (all others). Resident HIR blocks sit in the queue Q, whose front is
// the victim. The stack S orders recently seen blocks by recency: LIR
// blocks, resident HIR blocks and non-resident HIR blocks (ghosts: evicted,
// remembered). S is pruned so that its bottom is always an LIR block; an HIR
// block found in S on its next use has a reuse distance shorter than the
// least recent LIR block's and takes that block's LIR status.
//
// The paper's steps, with L_hirs = 1% of the cache (its value) and L_lirs the
// rest:
//  - Use of an LIR block (hit): to the top of S; prune.
//  - Use of a resident HIR block (hit): to the top of S. Was it in S: it
//    becomes LIR and leaves Q, and the bottom LIR block of S becomes HIR and
//    goes to the end of Q; prune. Else it stays HIR and moves to the end of Q.
//  - Miss: the front of Q is evicted (Victims); if it is in S it stays there
//    as a ghost. The missing block then goes to the top of S (Insert). Was it
//    a ghost in S: it becomes LIR and the bottom LIR block goes to Q as
//    above. Else it becomes a resident HIR block at the end of Q, unless the
//    LIR set is not yet full (start-up), when it becomes LIR.
//  - Pruning: HIR blocks at the bottom of S leave S (a resident one stays in
//    Q; a ghost is forgotten) until an LIR block is at the bottom.
//
// Bytes. L_hirs = max(1, capacity / 100) bytes and L_lirs = capacity - L_hirs
// (libCacheSim's LIRS.c rounds the same way); the LIR set is full when one
// more block would take it past L_lirs, and an HIR block that turns LIR
// demotes bottom LIR blocks until the LIR set fits again. With one-byte
// blocks this is the paper's algorithm exactly.
//
// Ghost bound. The paper leaves S unbounded (a long run of blocks used once
// fills it with ghosts). As libCacheSim does, S is bounded to twice the
// capacity in bytes: while its entries weigh more, the oldest ghost (in the
// order they were evicted) leaves S. Ghosts are the only entries that can go:
// resident entries weigh at most the capacity.
//
// Refused blocks (query.eligible) keep their place and state. If Q has no
// eligible block (it is empty only after Erase, or with a tier of one or two
// blocks), LIR blocks are taken from the bottom of S upwards, with no ghost.
// Erase forgets a block, ghost included (it left the tier for another
// reason: no evidence about its reuse).
//
// capacity_bytes == 0 (unbounded): the resident bytes stand in for the
// capacity (L_lirs is 99% of what is held; S weighs at most twice that).
#include <algorithm>
#include <vector>

#include "cache/eviction_policy.h"
#include "cache/policies/key_slots.h"

namespace kvtier {
namespace {

class LirsPolicy final : public EvictionPolicy {
 public:
  explicit LirsPolicy(const PolicyOptions& options) : capacity_bytes_(options.capacity_bytes) {}

  std::string_view Name() const override { return "lirs"; }

  void Insert(const BlockKey& key, const PolicyBlock& block) override {
    int32_t s = slots_.Find(key);
    if (s != KeySlots::kNone && state_[s] != kGhost) {
      ResizeResident(s, block.bytes);
      Hit(s);
      return;
    }
    if (s != KeySlots::kNone) {
      // A ghost in S: its reuse distance beats the bottom LIR block's.
      hir_.Unlink(kGhosts, s);
      ghost_bytes_ -= bytes_[s];
      s_bytes_ = s_bytes_ - bytes_[s] + block.bytes;
      bytes_[s] = block.bytes;
      state_[s] = kLir;
      lir_bytes_ += block.bytes;
      stack_.MoveToFront(s);
      DemoteWhileLirOverLimit();
    } else {
      s = slots_.Add(key);
      Grow();
      bytes_[s] = block.bytes;
      in_s_[s] = 1;
      s_bytes_ += block.bytes;
      stack_.PushFront(s);
      if (lir_bytes_ + block.bytes <= LirLimit(block.bytes)) {
        state_[s] = kLir;  // start-up: the LIR set is not full yet
        lir_bytes_ += block.bytes;
      } else {
        state_[s] = kHir;
        hir_bytes_ += block.bytes;
        hir_.PushFront(kQueue, s);
      }
    }
    BoundGhosts();
  }

  void Touch(const BlockKey& key) override {
    const int32_t s = slots_.Find(key);
    if (s != KeySlots::kNone && state_[s] != kGhost) {
      Hit(s);
      BoundGhosts();
    }
  }

  void Erase(const BlockKey& key) override {
    const int32_t s = slots_.Find(key);
    if (s == KeySlots::kNone || state_[s] == kGhost) return;
    Forget(s);
    Prune();
  }

  size_t Victims(const VictimQuery& q, std::vector<BlockKey>* out) override {
    EligibilityScan scan(q);
    size_t taken = 0;
    // Q only loses blocks here, so one cursor walks it from the front; the
    // refused blocks lie behind it.
    for (int32_t s = hir_.tail(kQueue); taken < q.n && s != KeySlots::kNone && !scan.Exhausted();) {
      const int32_t next = hir_.prev(s);
      const BlockKey key = slots_.key(s);
      if (scan.Accepts(key)) {
        EvictHir(s);
        out->push_back(key);
        ++taken;
      }
      s = next;
    }
    // Q has nothing (eligible) left: LIR blocks from the bottom of S. S is
    // pruned after the walk, so the cursor never meets a forgotten slot.
    for (int32_t s = stack_.tail(); taken < q.n && s != KeySlots::kNone && !scan.Exhausted();) {
      const int32_t next = stack_.prev(s);
      if (state_[s] == kLir) {
        const BlockKey key = slots_.key(s);
        if (scan.Accepts(key)) {
          Forget(s);
          out->push_back(key);
          ++taken;
        }
      }
      s = next;
    }
    Prune();
    return taken;
  }

  void Prefetch(const BlockKey& key) const override { slots_.Prefetch(key); }
  size_t size() const override { return slots_.size() - hir_.size(kGhosts); }

 private:
  enum State : uint8_t { kLir, kHir, kGhost };
  // The lists of hir_: Q (resident HIR blocks; head = end, the newest; tail
  // = front, the next victim) and the ghosts in S (head = evicted last).
  enum HirList : size_t { kQueue = 0, kGhosts = 1 };

  // The capacity, or the resident bytes (with `incoming` more) when unbounded.
  uint64_t Capacity(uint64_t incoming = 0) const {
    return capacity_bytes_ > 0 ? capacity_bytes_ : lir_bytes_ + hir_bytes_ + incoming;
  }
  // L_lirs: the capacity less L_hirs = max(1, 1% of it).
  uint64_t LirLimit(uint64_t incoming = 0) const {
    const uint64_t c = Capacity(incoming);
    return c - std::min<uint64_t>(c, std::max<uint64_t>(1, c / 100));
  }

  void Grow() {
    if (state_.size() >= slots_.slot_bound()) return;
    state_.resize(slots_.slot_bound());
    in_s_.resize(slots_.slot_bound());
    bytes_.resize(slots_.slot_bound());
    stack_.Reserve(slots_.slot_bound());
    hir_.Reserve(slots_.slot_bound());
  }

  // A resident block's size changed (Insert of a present key).
  void ResizeResident(int32_t s, uint64_t bytes) {
    (state_[s] == kLir ? lir_bytes_ : hir_bytes_) += bytes - bytes_[s];
    if (in_s_[s]) s_bytes_ += bytes - bytes_[s];
    bytes_[s] = bytes;
  }

  void Hit(int32_t s) {
    if (state_[s] == kLir) {
      const bool was_bottom = stack_.tail() == s;
      stack_.MoveToFront(s);
      if (was_bottom) Prune();
      return;
    }
    if (in_s_[s]) {
      hir_.Unlink(kQueue, s);
      hir_bytes_ -= bytes_[s];
      state_[s] = kLir;
      lir_bytes_ += bytes_[s];
      stack_.MoveToFront(s);
      DemoteWhileLirOverLimit();
      return;
    }
    in_s_[s] = 1;
    s_bytes_ += bytes_[s];
    stack_.PushFront(s);
    hir_.MoveToFront(kQueue, kQueue, s);
  }

  // The bottom LIR blocks of S become HIR at the end of Q until the LIR set
  // fits in L_lirs; S is pruned after each (its bottom is LIR again).
  void DemoteWhileLirOverLimit() {
    while (lir_bytes_ > LirLimit() && stack_.tail() != KeySlots::kNone) {
      const int32_t b = stack_.tail();  // LIR: S is kept pruned
      stack_.Unlink(b);
      in_s_[b] = 0;
      s_bytes_ -= bytes_[b];
      state_[b] = kHir;
      lir_bytes_ -= bytes_[b];
      hir_bytes_ += bytes_[b];
      hir_.PushFront(kQueue, b);
      Prune();
    }
  }

  // A resident HIR block leaves the cache: a ghost if it is in S.
  void EvictHir(int32_t s) {
    hir_bytes_ -= bytes_[s];
    if (!in_s_[s]) {
      hir_.Unlink(kQueue, s);
      slots_.Remove(s);
      return;
    }
    state_[s] = kGhost;
    ghost_bytes_ += bytes_[s];
    hir_.MoveToFront(kQueue, kGhosts, s);
  }

  // Forgets any block, resident or ghost.
  void Forget(int32_t s) {
    if (in_s_[s]) {
      stack_.Unlink(s);
      in_s_[s] = 0;
      s_bytes_ -= bytes_[s];
    }
    switch (state_[s]) {
      case kLir:
        lir_bytes_ -= bytes_[s];
        break;
      case kHir:
        hir_bytes_ -= bytes_[s];
        hir_.Unlink(kQueue, s);
        break;
      case kGhost:
        ghost_bytes_ -= bytes_[s];
        hir_.Unlink(kGhosts, s);
        break;
    }
    slots_.Remove(s);
  }

  // Until the bottom of S is an LIR block: HIR blocks leave S (a resident one
  // stays in Q, a ghost is forgotten).
  void Prune() {
    for (int32_t b = stack_.tail(); b != KeySlots::kNone && state_[b] != kLir; b = stack_.tail()) {
      if (state_[b] == kGhost) {
        Forget(b);
        continue;
      }
      stack_.Unlink(b);
      in_s_[b] = 0;
      s_bytes_ -= bytes_[b];
    }
  }

  // S weighs at most twice the capacity: the oldest ghosts leave first.
  void BoundGhosts() {
    while (s_bytes_ > 2 * Capacity() && hir_.size(kGhosts) > 0) Forget(hir_.tail(kGhosts));
  }

  const uint64_t capacity_bytes_;  // 0 = unbounded
  // Every block in S or Q has a slot; by slot, its state, whether it is in
  // S, and its bytes.
  KeySlots slots_;
  std::vector<State> state_;
  std::vector<uint8_t> in_s_;
  std::vector<uint64_t> bytes_;
  SlotList stack_;            // S; head = top (most recent), tail = bottom
  SlotLists hir_{2};          // Q and the ghosts (HirList)
  uint64_t lir_bytes_ = 0;    // resident LIR blocks
  uint64_t hir_bytes_ = 0;    // resident HIR blocks (Q)
  uint64_t ghost_bytes_ = 0;  // ghosts (all in S)
  uint64_t s_bytes_ = 0;      // every entry of S
};

}  // namespace

std::unique_ptr<EvictionPolicy> NewLirsPolicy(const PolicyOptions& options) {
  return std::make_unique<LirsPolicy>(options);
}

}  // namespace kvtier
