// prefix-lru: leaf-first LRU over the prefix tree, as SGLang's RadixCache
// evicts (Zheng et al., "SGLang: Efficient Execution of Structured Language
// Model Programs", NeurIPS'24, §3: "an LRU eviction policy that evicts leaf
// nodes first").
//
// A prefix block is only ever a hit when every block before it in its chain
// is cached, so a parent evicted before its cached children leaves them
// unreachable. The policy knows each block's parent (PolicyBlock::parent)
// and keeps a count of its cached children; only blocks with none (leaves)
// are candidates, least recently used first. A parent whose last child
// leaves becomes a leaf and takes the place its own last use gives it.
//
// O(1) per operation. Leaves sit in one list by last use (a use moves a leaf
// to the newest end). A parent that becomes a leaf is placed by walking from
// where its child was (from the oldest end after Erase) towards the newest
// end while the leaves there were used before it, at most kMaxPlaceSteps
// steps. In prefix order (an engine looks a chain up from its first block,
// so a block's use follows its parent's) the parent was used before the
// child that just left, which was the oldest leaf, so it is placed without a
// step: the order is then SGLang's exactly. Only a parent used later than
// its children (a request that ended at it) walks, and past kMaxPlaceSteps
// it stays where the walk stopped, a little too near the victim end.
//
// Parent links are hints (eviction_policy.h): a block is linked to its
// parent only if the parent is held when the block is inserted, and keeps
// that link (an Insert of a present key is a Touch and does not relink).
// Erase of a block with cached children (a demotion, a delete) leaves them
// as roots: the link carries the parent slot's generation, which changes
// when the slot is freed, so a stale link is recognised and ignored.
//
// Refused blocks (query.eligible) keep their place. A parent that becomes a
// leaf during a Victims call is placed among the leaves the call has not yet
// looked at, and is looked at in its turn. Interior blocks are never
// victims: when no leaf is eligible the call returns fewer than asked.
#include <vector>

#include "cache/eviction_policy.h"
#include "cache/policies/key_slots.h"
#include "cache/policies/leaf_list.h"

namespace kvtier {
namespace {

// How far a new leaf may walk towards the newest end to find its place (see
// above: 0 steps in prefix order; the bound keeps the operation O(1) when
// engines touch blocks out of order).
constexpr int kMaxPlaceSteps = 32;

class PrefixLruPolicy final : public EvictionPolicy {
 public:
  std::string_view Name() const override { return "prefix-lru"; }

  void Insert(const BlockKey& key, const PolicyBlock& block) override {
    if (slots_.Find(key) != KeySlots::kNone) {
      Touch(key);
      return;
    }
    const int32_t s = slots_.Add(key);
    Grow();
    children_[s] = 0;
    last_use_[s] = ++clock_;
    parent_[s] = KeySlots::kNone;
    if (block.parent) {
      const int32_t p = FindParent(slots_, last_used_, *block.parent);
      // A block named as its own parent (a bad hint) is not linked.
      if (p != KeySlots::kNone && p != s) {
        parent_[s] = p;
        parent_generation_[s] = generation_[p];
        if (children_[p]++ == 0) leaves_.Unlink(p);
      }
    }
    leaves_.PushFront(s);
    last_used_ = s;
  }

  void Touch(const BlockKey& key) override {
    const int32_t s = slots_.Find(key);
    if (s == KeySlots::kNone) return;
    last_use_[s] = ++clock_;
    if (children_[s] == 0) leaves_.MoveToFront(s);
    last_used_ = s;
  }

  void Erase(const BlockKey& key) override {
    const int32_t s = slots_.Find(key);
    if (s == KeySlots::kNone) return;
    if (children_[s] == 0) leaves_.Unlink(s);
    const int32_t p = Detach(s);
    if (p != KeySlots::kNone) Place(p, KeySlots::kNone);
  }

  size_t Victims(const VictimQuery& q, std::vector<BlockKey>* out) override {
    EligibilityScan scan(q);
    size_t taken = 0;
    for (int32_t s = leaves_.tail(); taken < q.n && s != KeySlots::kNone && !scan.Exhausted();) {
      int32_t next = leaves_.prev(s);
      const BlockKey key = slots_.key(s);
      if (!scan.Accepts(key)) {
        s = next;
        continue;
      }
      const int32_t older = leaves_.next(s);  // refused leaves, or none
      leaves_.Unlink(s);
      const int32_t p = Detach(s);
      out->push_back(key);
      ++taken;
      // A parent that became a leaf goes where the walk has not yet been.
      if (p != KeySlots::kNone && Place(p, older)) next = p;
      s = next;
    }
    return taken;
  }

  void Prefetch(const BlockKey& key) const override { slots_.Prefetch(key); }
  size_t size() const override { return slots_.size(); }

 private:
  void Grow() {
    if (children_.size() >= slots_.slot_bound()) return;
    const size_t n = slots_.slot_bound();
    children_.resize(n);
    last_use_.resize(n);
    parent_.resize(n);
    parent_generation_.resize(n);
    generation_.resize(n, 0);
    leaves_.Reserve(n);
  }

  // Frees the slot of a block that is no longer a leaf-list member, and
  // returns its parent if the parent has just lost its last cached child.
  int32_t Detach(int32_t s) {
    const int32_t p = parent_[s];
    ++generation_[s];  // links to this slot are stale from now on
    if (last_used_ == s) last_used_ = KeySlots::kNone;
    slots_.Remove(s);
    if (p == KeySlots::kNone || generation_[p] != parent_generation_[s]) return KeySlots::kNone;
    return --children_[p] == 0 ? p : KeySlots::kNone;
  }

  // Puts the new leaf p on the newer side of `older` (kNone: at the oldest
  // end), then walks it towards the newest end past leaves used before it,
  // at most kMaxPlaceSteps. True if it took no step (it sits right next to
  // `older`).
  bool Place(int32_t p, int32_t older) {
    int32_t newer = older == KeySlots::kNone ? leaves_.tail() : leaves_.prev(older);
    int steps = 0;
    while (newer != KeySlots::kNone && last_use_[newer] < last_use_[p] && steps < kMaxPlaceSteps) {
      older = newer;
      newer = leaves_.prev(newer);
      ++steps;
    }
    leaves_.InsertBefore(older, p);
    return steps == 0;
  }

  KeySlots slots_;
  // By slot: cached children linked to it, last use (clock_ value), parent
  // slot (kNone for a root) with the generation it had when linked, and the
  // slot's own generation (bumped when it is freed).
  std::vector<uint32_t> children_;
  std::vector<uint64_t> last_use_;
  std::vector<int32_t> parent_;
  std::vector<uint32_t> parent_generation_;
  std::vector<uint32_t> generation_;
  LeafList leaves_;                      // newest at the head
  uint64_t clock_ = 0;                   // counts uses
  int32_t last_used_ = KeySlots::kNone;  // the slot last inserted or touched
};

}  // namespace

std::unique_ptr<EvictionPolicy> NewPrefixLruPolicy() { return std::make_unique<PrefixLruPolicy>(); }

}  // namespace kvtier
