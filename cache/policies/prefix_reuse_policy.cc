// prefix-reuse: leaf-first eviction (as prefix-lru) that gives chains with
// evidence of reuse more time than new ones, by an amount learned online.
// In the spirit of Marconi (Pan et al., "Marconi: Prefix Caching for the Era
// of Hybrid LLMs", MLSys'25), whose eviction utility adds to recency a
// weighted term for what an entry is worth and tunes the weight online; here
// the term is the evidence of reuse and the weight is adapted as ARC adapts
// its target (Megiddo & Modha, FAST'03), from ghosts of evicted blocks.
//
// In a prefix cache most chains are used once (a one-turn conversation, a
// one-shot prompt), while a chain that has been reused (a conversation's
// next turn) is more likely to be reused again, whole. A block is "new"
// until it is used again (a hit), then "reused"; it is reused from the start
// when
//  - its key is a ghost (it was evicted lately and has come back: its chain
//    returned), or
//  - it continues a reused chain: its parent is reused and no other cached
//    child of the parent is (a conversation's next turn appends to the
//    chain it hit; the parent's other child, if any, is the last turn's
//    partial last block, which is never reused). A parent with a reused
//    child is a fan-out point (a system prompt that every request shares,
//    a prefix two conversations share) and passes nothing on: a new prompt
//    under it is new.
//
// Victims are leaves only (no cached child; prefix_lru_policy.cc). New and
// reused leaves are kept in two lists by last use; the victim is the older
// of the two oldest, a reused leaf counting `credit` uses younger than its
// last use. credit starts at 0 (prefix-lru's order exactly) and moves when
// an evicted block's ghost is inserted again: a new block's ghost says new
// blocks went too soon (credit falls), a reused block's ghost says reused
// blocks did (credit rises). Each step is one block's share of the time the
// oldest leaf has been held (its bytes over the resident bytes), scaled by
// the ratio of the two ghost populations when the other class's is larger,
// as ARC scales its steps; credit stays within [0, clock].
//
// Ghosts: every victim's key is remembered, oldest forgotten first, while
// the ghosts' bytes exceed the capacity (ARC's directory of 2c: c resident,
// c ghosts). Erase leaves no ghost. The capacity is
// PolicyOptions::capacity_bytes, or the resident bytes when it is 0.
//
// Refused blocks (query.eligible) keep their place; each victim's walk
// starts at the oldest end of its list and steps over the blocks this call
// has already refused without asking again (they sit at the oldest ends), so
// a call costs O(victims x refused) at worst.
//
// O(1) per operation otherwise, as prefix-lru: a block that becomes a leaf
// is placed in its class's list by its last use, walking at most
// kMaxPlaceSteps from the oldest end.
#include <algorithm>
#include <array>
#include <vector>

#include "cache/eviction_policy.h"
#include "cache/policies/key_slots.h"
#include "cache/policies/leaf_list.h"

namespace kvtier {
namespace {

constexpr int kMaxPlaceSteps = 32;  // as prefix-lru

class PrefixReusePolicy final : public EvictionPolicy {
 public:
  explicit PrefixReusePolicy(const PolicyOptions& options)
      : capacity_bytes_(options.capacity_bytes) {}

  std::string_view Name() const override { return "prefix-reuse"; }

  void Insert(const BlockKey& key, const PolicyBlock& block) override {
    int32_t s = slots_.Find(key);
    if (s != KeySlots::kNone && !nodes_[s].ghost) {
      class_bytes_[nodes_[s].cls] += block.bytes - nodes_[s].bytes;
      nodes_[s].bytes = block.bytes;
      Use(s);
      return;
    }
    Class cls = kNew;
    if (s != KeySlots::kNone) {
      Adapt(nodes_[s].cls, block.bytes);
      ForgetGhost(s, /*free_slot=*/false);
      cls = kReused;  // its chain came back
    } else {
      s = slots_.Add(key);
      Grow();
    }
    Node& n = nodes_[s];
    n.children = 0;
    n.reused_children = 0;
    n.last_use = ++clock_;
    n.bytes = block.bytes;
    n.parent = KeySlots::kNone;
    if (block.parent) {
      const int32_t p = FindParent(slots_, last_used_, *block.parent);
      // A block named as its own parent (a bad hint) is not linked.
      if (p != KeySlots::kNone && p != s && !nodes_[p].ghost) {
        Node& parent = nodes_[p];
        // Continues a reused chain: no other child of the parent was reused.
        if (parent.cls == kReused && parent.reused_children == 0) cls = kReused;
        if (cls == kReused) ++parent.reused_children;
        n.parent = p;
        n.parent_generation = parent.generation;
        if (parent.children++ == 0) lists_.Unlink(parent.cls, p);
      }
    }
    n.cls = cls;
    class_bytes_[cls] += block.bytes;
    lists_.PushFront(cls, s);
    last_used_ = s;
    TrimGhosts();
  }

  void Touch(const BlockKey& key) override {
    const int32_t s = slots_.Find(key);
    if (s != KeySlots::kNone && !nodes_[s].ghost) Use(s);
  }

  void Erase(const BlockKey& key) override {
    const int32_t s = slots_.Find(key);
    if (s == KeySlots::kNone || nodes_[s].ghost) return;
    if (nodes_[s].children == 0) lists_.Unlink(nodes_[s].cls, s);
    const int32_t p = Detach(s, /*to_ghost=*/false);
    if (p != KeySlots::kNone) Place(p);
    TrimGhosts();
  }

  size_t Victims(const VictimQuery& q, std::vector<BlockKey>* out) override {
    EligibilityScan scan(q);
    ++call_;
    size_t taken = 0;
    while (taken < q.n && !scan.Exhausted()) {
      const Class first = FirstClass();
      int32_t s = Pick(first, scan);
      if (s == KeySlots::kNone) s = Pick(first == kNew ? kReused : kNew, scan);
      if (s == KeySlots::kNone) break;
      out->push_back(slots_.key(s));
      lists_.Unlink(nodes_[s].cls, s);
      const int32_t p = Detach(s, /*to_ghost=*/true);
      if (p != KeySlots::kNone) Place(p);
      ++taken;
    }
    TrimGhosts();
    return taken;
  }

  void Prefetch(const BlockKey& key) const override { slots_.Prefetch(key); }
  size_t size() const override { return slots_.size() - lists_.size(kGhosts); }

 private:
  // The classes double as the indices of their leaf lists in lists_.
  enum Class : uint8_t { kNew = 0, kReused = 1 };
  static constexpr size_t kGhosts = 2;  // the ghosts' list in lists_

  // A resident block or a ghost, all its state in one place.
  struct Node {
    uint64_t last_use = 0;      // clock_ at its last use
    uint64_t bytes = 0;         //
    uint64_t refused_call = 0;  // the Victims call that last refused it
    int32_t parent = KeySlots::kNone;
    uint32_t parent_generation = 0;  // the parent slot's generation when linked
    uint32_t generation = 0;         // bumped when the block stops being resident
    uint32_t children = 0;           // cached children linked to it
    uint32_t reused_children = 0;    // of them, reused ones
    Class cls = kNew;                // a ghost's: when it was evicted
    bool ghost = false;
  };

  uint64_t Capacity() const {
    return capacity_bytes_ > 0 ? capacity_bytes_ : class_bytes_[kNew] + class_bytes_[kReused];
  }

  void Grow() {
    if (nodes_.size() >= slots_.slot_bound()) return;
    // Doubling: one resize now and then, not one per new slot.
    const size_t n = std::max<size_t>(slots_.slot_bound(), 2 * nodes_.size());
    nodes_.resize(n);
    lists_.Reserve(n);
  }

  // A hit: the block is reused now; a leaf moves to its list's newest end.
  void Use(int32_t s) {
    Node& n = nodes_[s];
    n.last_use = ++clock_;
    last_used_ = s;
    if (n.cls == kReused) {
      if (n.children == 0) lists_.MoveToFront(kReused, s);
      return;
    }
    if (n.children == 0) lists_.Unlink(kNew, s);
    class_bytes_[kNew] -= n.bytes;
    class_bytes_[kReused] += n.bytes;
    n.cls = kReused;
    if (n.parent != KeySlots::kNone && nodes_[n.parent].generation == n.parent_generation) {
      ++nodes_[n.parent].reused_children;  // a live link: the parent was not erased
    }
    if (n.children == 0) lists_.PushFront(kReused, s);
  }

  // The class whose oldest leaf goes first: the older of the two oldest, a
  // reused leaf counting credit_ uses younger than it is.
  Class FirstClass() const {
    const int32_t n = lists_.tail(kNew), r = lists_.tail(kReused);
    if (n == KeySlots::kNone) return kReused;
    if (r == KeySlots::kNone) return kNew;
    return nodes_[n].last_use <= nodes_[r].last_use + credit_ ? kNew : kReused;
  }

  // The oldest leaf of `cls` that the query accepts, stepping over those
  // refused earlier in this call.
  int32_t Pick(Class cls, EligibilityScan& scan) {
    for (int32_t s = lists_.tail(cls); s != KeySlots::kNone && !scan.Exhausted();
         s = lists_.prev(s)) {
      if (nodes_[s].refused_call == call_) continue;
      if (scan.Accepts(slots_.key(s))) return s;
      nodes_[s].refused_call = call_;
    }
    return KeySlots::kNone;
  }

  // A resident block (in no leaf list) leaves: it becomes a ghost or its
  // slot is freed. Returns its parent if the parent has just lost its last
  // cached child.
  int32_t Detach(int32_t s, bool to_ghost) {
    Node& n = nodes_[s];
    const int32_t p = n.parent;
    const uint32_t parent_generation = n.parent_generation;
    ++n.generation;  // links to this slot are stale from now on
    n.refused_call = 0;
    if (last_used_ == s) last_used_ = KeySlots::kNone;
    class_bytes_[n.cls] -= n.bytes;
    if (to_ghost) {
      n.ghost = true;
      ghost_bytes_[n.cls] += n.bytes;
      lists_.PushFront(kGhosts, s);
    } else {
      slots_.Remove(s);
    }
    if (p == KeySlots::kNone || nodes_[p].generation != parent_generation) return KeySlots::kNone;
    if (n.cls == kReused) --nodes_[p].reused_children;
    return --nodes_[p].children == 0 ? p : KeySlots::kNone;
  }

  void ForgetGhost(int32_t g, bool free_slot) {
    ghost_bytes_[nodes_[g].cls] -= nodes_[g].bytes;
    lists_.Unlink(kGhosts, g);
    nodes_[g].ghost = false;
    if (free_slot) slots_.Remove(g);
  }

  // The ghosts' bytes stay within the capacity, the oldest leaving first.
  void TrimGhosts() {
    while (lists_.size(kGhosts) > 0 && ghost_bytes_[kNew] + ghost_bytes_[kReused] > Capacity()) {
      ForgetGhost(lists_.tail(kGhosts), /*free_slot=*/true);
    }
  }

  // A new leaf goes into its class's list by its last use, walking from the
  // oldest end at most kMaxPlaceSteps.
  void Place(int32_t p) {
    const Class cls = nodes_[p].cls;
    const uint64_t last_use = nodes_[p].last_use;
    int32_t older = KeySlots::kNone, newer = lists_.tail(cls);
    for (int steps = 0;
         newer != KeySlots::kNone && nodes_[newer].last_use < last_use && steps < kMaxPlaceSteps;
         ++steps) {
      older = newer;
      newer = lists_.prev(newer);
    }
    lists_.InsertBefore(cls, older, p);
  }

  // A ghost of class `ghost` and `bytes` came back: see the file comment.
  void Adapt(Class ghost, uint64_t bytes) {
    const uint64_t mine = std::max<uint64_t>(1, ghost_bytes_[ghost]);
    const uint64_t other = ghost_bytes_[ghost == kNew ? kReused : kNew];
    const uint64_t resident = std::max<uint64_t>(1, class_bytes_[kNew] + class_bytes_[kReused]);
    uint64_t oldest = clock_;
    for (const Class c : {kNew, kReused}) {
      if (lists_.tail(c) != KeySlots::kNone)
        oldest = std::min(oldest, nodes_[lists_.tail(c)].last_use);
    }
    const uint64_t step = std::max<uint64_t>(1, (clock_ - oldest) * bytes / resident) *
                          std::max<uint64_t>(1, other / mine);
    credit_ = ghost == kNew ? credit_ - std::min(credit_, step) : std::min(clock_, credit_ + step);
  }

  const uint64_t capacity_bytes_;  // 0 = unbounded
  KeySlots slots_;                 // resident blocks and ghosts
  std::vector<Node> nodes_;        // by slot
  // The new leaves, the reused leaves (by Class; newest at the head) and
  // the ghosts (newest at the head).
  LeafLists lists_{3};
  std::array<uint64_t, 2> class_bytes_{};  // resident bytes by class
  std::array<uint64_t, 2> ghost_bytes_{};  // ghosts' bytes by the class they had
  uint64_t credit_ = 0;                    // uses a reused leaf counts younger
  uint64_t clock_ = 0;                     // counts uses
  uint64_t call_ = 0;                      // counts Victims calls
  int32_t last_used_ = KeySlots::kNone;    // the slot last inserted or touched
};

}  // namespace

std::unique_ptr<EvictionPolicy> NewPrefixReusePolicy(const PolicyOptions& options) {
  return std::make_unique<PrefixReusePolicy>(options);
}

}  // namespace kvtier
