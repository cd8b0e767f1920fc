// lhd: least hit density (Beckmann, Chen & Cidon, "LHD: Improving Cache Hit
// Rate by Maximizing Hit Density", NSDI'18), over the prefix tree's leaves,
// with classes that follow a conversation's pace.
//
// A block's hit density is the hits it is expected to get before it leaves,
// over the time (references) it is expected to take up its bytes until then.
// LHD learns both from what happened to blocks of the same class at the same
// age (references since last use): for each class it counts hits and
// evictions by age, and from the counts at ages past a
//     density(a) = (hits at ages >= a) / (sum over ages x >= a of the events
//                  at ages >= x)           (the expected remaining lifetime)
// divided by the block's bytes. The victim is the sampled leaf of least
// density. Unlike LRU it can learn that a block's chance of a hit rises with
// age (a conversation's next turn comes a minute or more after the last) and
// that a class is hardly ever hit (a one-turn prompt), so a block just
// inserted may be the victim: eviction that also admits.
//
// Classes (what is prefix-aware here):
//  - new: a block never hit (it may still be hit: a conversation's turn);
//  - reused by the log2 bucket of its last reuse interval (the age at its
//    last hit, or the time it was away when an evicted block's key came back
//    while its ghost was remembered): on Mooncake a conversation whose last
//    gap was short comes back sooner (median next gap 66 s after gaps under
//    16 s, 318 s after gaps over 8 minutes; bench/RESULTS.md).
//    A new block continues its parent's class when the parent is reused and
//    no other cached child of the parent is (a conversation's next turn
//    appends to the chain it hit; a parent with a reused child is a fan-out
//    point such as a shared system prompt, and passes nothing on), as in
//    prefix-reuse.
// Victims are leaves only (no cached child; prefix_lru_policy.cc): a parent
// evicted before its children would leave them unreachable.
//
// What is counted (where this departs from LHD). LHD counts a block's
// eviction at the age it was evicted, so what a class would have done had it
// been kept longer is never seen: a class the policy evicts young looks as
// if it is never hit, and stays evicted (on Mooncake at 5% that made the new
// class 0.5% hits and the policy half as good as LRU). Here a victim becomes
// a ghost, and its lifetime ends when the ghost does: a hit at its age if
// its key comes back while the ghost is remembered (the hit it would have
// had), no hit at its age when the ghost is forgotten. An Erase (moved or
// dropped elsewhere) ends a lifetime without a hit. Hits past the last age
// bucket are counted as lifetimes ending there without a hit: beyond the
// horizon (counted as hits, the few old ones made the oldest blocks look
// the densest, and the cache kept them: 0.27 of Belady at 25% instead of
// 0.96).
//
// Constants:
//  - kSamples = 16 leaves sampled per victim (LHD samples 64; on Mooncake 32
//    gave 0.0939 / 0.2046 / 0.3534 at 1 / 5 / 25% and 16 gives 0.0922 /
//    0.2034 / 0.3526 at 1.3x the speed, which the 5 M refs/s floor needs);
//  - kAges = 64 age buckets of 2^shift references; the width doubles
//    (buckets merge pairwise, as LHD coarsens) when more than 1% of an
//    interval's events are older than the last bucket (256 and 32 buckets
//    gave within 0.003 of 64 at every size);
//  - the counts are decayed by kDecay = 0.9 (LHD's) and the densities
//    recomputed every max(4096, resident blocks) references (LHD: every
//    2^20 references, too rarely for a trace of 300 K);
//  - kGapClasses = 16 reuse classes (log2 buckets of the interval in age
//    buckets; the last takes the rest); a class with fewer than 32 decayed
//    events takes the densities of all classes pooled;
//  - kGhostFactor = 4 ghosts per resident block (2, 4, 16 gave, with 32
//    samples, 0.0876, 0.0933, 0.0864 at 1% and 0.2049, 0.2047, 0.1964 at
//    5%).
// Until the first recomputation every class ranks by age alone (LRU).
//
// Refused blocks (query.eligible) keep their place and state; a refused leaf
// is not sampled again in the same call (it is moved out of the sampled
// part of the leaf array: O(1) a refusal). A call that takes nothing puts
// everything back as it was, the sampler included, so the next call sees
// what it saw (PeekVictim's victim is the next call's). Sampling is
// deterministic (a fixed seed), so replays repeat exactly.
//
// Cost: Insert, Touch and Erase O(1); a victim costs kSamples density
// look-ups (a leaf array indexed at random); a recomputation
// O(classes x kAges) per max(4096, resident) references.
#include <algorithm>
#include <array>
#include <bit>
#include <vector>

#include "cache/eviction_policy.h"
#include "cache/policies/key_slots.h"

namespace kvtier {
namespace {

constexpr int kSamples = 16;
constexpr int kAges = 64;
constexpr int kGapClasses = 16;
constexpr int kClasses = 1 + kGapClasses;  // 0 = new
constexpr double kDecay = 0.9;
constexpr uint64_t kMinInterval = 4096;
constexpr double kOverflowShare = 0.01;
constexpr double kMinClassEvents = 32;
constexpr size_t kGhostFactor = 4;

class LhdPolicy final : public EvictionPolicy {
 public:
  LhdPolicy() {
    // Until there are counts: LRU (density falls with age, equally in every class).
    for (auto& d : density_) {
      for (int a = 0; a < kAges; ++a) d[a] = 1.0 / (1.0 + a);
    }
  }

  std::string_view Name() const override { return "lhd"; }

  void Insert(const BlockKey& key, const PolicyBlock& block) override {
    int32_t s = slots_.Find(key);
    if (s != KeySlots::kNone && !nodes_[s].ghost) {
      nodes_[s].bytes = block.bytes;
      Use(s);
      return;
    }
    uint8_t cls = kNew;
    if (s != KeySlots::kNone) {
      // Back while its ghost is remembered: a hit at this age had it been
      // kept; reused, after this long away.
      RecordEvent(s, /*hit=*/true);
      cls = GapClass(clock_ - nodes_[s].last_use + 1);
      ForgetGhost(s, /*free_slot=*/false);
    } else {
      s = slots_.Add(key);
      Grow();
    }
    Tick();
    Node& n = nodes_[s];
    n = Node{};
    n.last_use = clock_;
    n.bytes = block.bytes;
    if (block.parent) {
      const int32_t p = FindParent(slots_, last_used_, *block.parent);
      // A block named as its own parent (a bad hint) is not linked.
      if (p != KeySlots::kNone && p != s && !nodes_[p].ghost) {
        Node& parent = nodes_[p];
        if (cls == kNew && parent.cls != kNew && parent.reused_children == 0) cls = parent.cls;
        if (cls != kNew) ++parent.reused_children;
        n.parent = p;
        n.parent_generation = generation_[p];
        if (parent.children++ == 0) RemoveLeaf(p);
      }
    }
    n.cls = cls;
    AddLeaf(s);
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
    if (nodes_[s].children == 0) RemoveLeaf(s);
    RecordEvent(s, /*hit=*/false);
    Detach(s, /*to_ghost=*/false);
    TrimGhosts();
  }

  size_t Victims(const VictimQuery& q, std::vector<BlockKey>* out) override {
    EligibilityScan scan(q);
    const uint64_t draws = draws_;
    swaps_.clear();
    size_t taken = 0;
    while (taken < q.n && !scan.Exhausted()) {
      const int32_t s = Sample();
      if (s == KeySlots::kNone) break;
      const BlockKey key = slots_.key(s);
      if (!scan.Accepts(key)) {
        Refuse(s);
        continue;
      }
      out->push_back(key);
      RemoveLeaf(s);
      Detach(s, /*to_ghost=*/true);
      ++taken;
    }
    if (taken == 0) {
      // Nothing changed: the leaves' order and the sampler are put back, so
      // that the next call sees what this one saw (an admission filter peeks
      // at the victim with a call that refuses it: PeekVictim).
      for (auto it = swaps_.rbegin(); it != swaps_.rend(); ++it) SwapLeaves(it->first, it->second);
      draws_ = draws;
    }
    sampled_ = leaves_.size();
    TrimGhosts();
    return taken;
  }

  void Prefetch(const BlockKey& key) const override { slots_.Prefetch(key); }

  size_t size() const override { return slots_.size() - ghosts_; }

 private:
  static constexpr uint8_t kNew = 0;
  static constexpr int32_t kNotLeaf = -1;

  struct Node {
    uint64_t last_use = 0;  // clock_ at its last use (a ghost's too)
    uint64_t bytes = 1;
    int32_t parent = KeySlots::kNone;
    uint32_t parent_generation = 0;  // the parent slot's generation when linked
    uint32_t children = 0;           // cached children linked to it
    uint32_t reused_children = 0;    // of them, in a reused class
    int32_t leaf_index = kNotLeaf;   // in leaves_, or kNotLeaf
    int32_t ghost_prev = KeySlots::kNone, ghost_next = KeySlots::kNone;
    uint8_t cls = kNew;
    bool ghost = false;
  };

  void Grow() {
    if (nodes_.size() >= slots_.slot_bound()) return;
    const size_t n = std::max<size_t>(slots_.slot_bound(), 2 * nodes_.size());
    nodes_.resize(n);
    generation_.resize(n, 0);
  }

  // One reference: the clock moves, and every interval the densities are
  // recomputed.
  void Tick() {
    ++clock_;
    if (++since_recompute_ >= std::max<uint64_t>(kMinInterval, size())) Recompute();
  }

  uint64_t AgeOf(int32_t s) const { return (clock_ - nodes_[s].last_use) >> shift_; }
  static int Bucket(uint64_t age) { return static_cast<int>(std::min<uint64_t>(age, kAges - 1)); }

  uint8_t GapClass(uint64_t interval) const {
    const uint64_t buckets = interval >> shift_;
    return static_cast<uint8_t>(
        1 + std::min<int>(kGapClasses - 1, static_cast<int>(std::bit_width(buckets))));
  }

  // A hit or an eviction of s at its age.
  void RecordEvent(int32_t s, bool hit) {
    const uint64_t age = AgeOf(s);
    ++event_ages_[std::bit_width(clock_ - nodes_[s].last_use)];
    (hit ? hits_ : evictions_)[nodes_[s].cls][Bucket(age)] += 1.0;
  }

  // A hit: counted at the block's age; it is reused now, at this interval.
  void Use(int32_t s) {
    Node& n = nodes_[s];
    RecordEvent(s, /*hit=*/true);
    const uint8_t cls = GapClass(clock_ - n.last_use + 1);
    Tick();
    n.last_use = clock_;
    last_used_ = s;
    if (n.cls == kNew && n.parent != KeySlots::kNone &&
        generation_[n.parent] == n.parent_generation) {
      ++nodes_[n.parent].reused_children;  // a live link: the parent was not erased
    }
    n.cls = cls;
    SyncLeaf(s);
  }

  // LHD's density by class and age, from the decayed counts.
  void Recompute() {
    since_recompute_ = 0;
    // Coarser ages while more than kOverflowShare of this interval's events
    // fell past the last bucket.
    uint64_t events = 0;
    for (const uint64_t n : event_ages_) events += n;
    for (;;) {
      uint64_t past = 0;  // events of age >= kAges << shift_
      for (int w = 0; w < 65; ++w) {
        if (w > shift_ + std::countr_zero(unsigned(kAges)))
          past += event_ages_[w];  // age >= kAges << shift_
      }
      if (events == 0 || static_cast<double>(past) <= kOverflowShare * events || shift_ >= 40) {
        break;
      }
      ++shift_;
      for (int c = 0; c < kClasses; ++c) Coarsen(hits_[c]), Coarsen(evictions_[c]);
    }
    event_ages_.fill(0);
    std::array<double, kAges> pooled{};
    Densities(hits_, evictions_, kClasses, &pooled);
    for (int c = 0; c < kClasses; ++c) {
      std::array<double, kAges> d{};
      const double n = Densities(hits_, evictions_, c, &d);
      // A class with too few events to say anything takes the pooled densities.
      density_[c] = n >= kMinClassEvents ? d : pooled;
    }
    for (int c = 0; c < kClasses; ++c) {
      for (int a = 0; a < kAges; ++a) hits_[c][a] *= kDecay, evictions_[c][a] *= kDecay;
    }
  }

  using Counts = std::array<std::array<double, kAges>, kClasses>;

  // Class c's densities (c == kClasses: all classes pooled); returns its events.
  static double Densities(const Counts& hits, const Counts& evictions, int c,
                          std::array<double, kAges>* density) {
    double h = 0, events = 0, lifetime = 0;
    for (int a = kAges - 1; a >= 0; --a) {
      for (int k = c == kClasses ? 0 : c; k < (c == kClasses ? kClasses : c + 1); ++k) {
        // Past the last bucket a hit is beyond the horizon: no hit.
        if (a < kAges - 1) h += hits[k][a];
        events += hits[k][a] + evictions[k][a];
      }
      lifetime += events;
      (*density)[a] = lifetime > 0 ? h / lifetime : 0;
    }
    return events;
  }

  // Buckets twice as wide: a and a+1 merge; the last bucket (ages past it)
  // stays the last.
  static void Coarsen(std::array<double, kAges>& v) {
    const double past = v[kAges - 1];
    for (int a = 0; a < kAges / 2; ++a)
      v[a] = v[2 * a] + (2 * a + 1 < kAges - 1 ? v[2 * a + 1] : 0);
    for (int a = kAges / 2; a < kAges; ++a) v[a] = 0;
    v[kAges - 1] = past;
  }

  double Density(int32_t s) const {
    return density_[nodes_[s].cls][Bucket(AgeOf(s))] / static_cast<double>(nodes_[s].bytes);
  }

  // The least dense of kSamples leaves not refused in this call; the older on a tie.
  int32_t Sample() {
    if (sampled_ == 0) return KeySlots::kNone;
    // The samples' places first, each from its own counter value (no chain
    // between them), so that their loads overlap.
    std::array<const Leaf*, kSamples> sample;
    for (int i = 0; i < kSamples; ++i) {
      const uint64_t r = Mix(++draws_);
      sample[i] = &leaves_[(static_cast<unsigned __int128>(r) * sampled_) >> 64];
      __builtin_prefetch(sample[i]);
    }
    const Leaf* best = nullptr;
    double best_density = 0;
    for (const Leaf* sampled : sample) {
      const Leaf& l = *sampled;
      const double d = density_[l.cls][Bucket((clock_ - l.last_use) >> shift_)] * l.inverse_bytes;
      if (best == nullptr || d < best_density ||
          (d == best_density && l.last_use < best->last_use)) {
        best = &l;
        best_density = d;
      }
    }
    return best->slot;
  }

  static uint64_t Mix(uint64_t x) {  // splitmix64's finaliser
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
  }

  // leaves_[0, sampled_) are sampled; a Victims call moves the leaves it
  // refuses past sampled_ (so that it never samples them again, O(1) each)
  // and puts sampled_ back to the end when it returns.
  void SwapLeaves(size_t i, size_t j) {
    if (i == j) return;
    std::swap(leaves_[i], leaves_[j]);
    nodes_[leaves_[i].slot].leaf_index = static_cast<int32_t>(i);
    nodes_[leaves_[j].slot].leaf_index = static_cast<int32_t>(j);
  }
  void Refuse(int32_t s) {
    const auto i = static_cast<size_t>(nodes_[s].leaf_index);
    swaps_.emplace_back(i, sampled_ - 1);
    SwapLeaves(i, sampled_ - 1);
    --sampled_;
  }
  void AddLeaf(int32_t s) {
    const Node& n = nodes_[s];
    nodes_[s].leaf_index = static_cast<int32_t>(leaves_.size());
    leaves_.push_back(Leaf{n.last_use, 1.0 / static_cast<double>(n.bytes), s, n.cls});
    // Ahead of the leaves this call refused (outside a call there are none).
    SwapLeaves(sampled_++, leaves_.size() - 1);
  }
  void RemoveLeaf(int32_t s) {
    auto i = static_cast<size_t>(nodes_[s].leaf_index);
    if (i < sampled_) {
      SwapLeaves(i, --sampled_);
      i = sampled_;
    }
    SwapLeaves(i, leaves_.size() - 1);
    leaves_.pop_back();
    nodes_[s].leaf_index = kNotLeaf;
  }
  // A leaf's copy of its block's state, after a change.
  void SyncLeaf(int32_t s) {
    const Node& n = nodes_[s];
    if (n.leaf_index == kNotLeaf) return;
    Leaf& l = leaves_[n.leaf_index];
    l.last_use = n.last_use;
    l.inverse_bytes = 1.0 / static_cast<double>(n.bytes);
    l.cls = n.cls;
  }

  // A resident block (no longer a leaf) leaves: it becomes a ghost or its
  // slot is freed. A parent that loses its last cached child becomes a leaf.
  void Detach(int32_t s, bool to_ghost) {
    Node& n = nodes_[s];
    const int32_t p = n.parent;
    const bool live_parent = p != KeySlots::kNone && generation_[p] == n.parent_generation;
    ++generation_[s];  // links to this slot are stale from now on
    if (last_used_ == s) last_used_ = KeySlots::kNone;
    if (to_ghost) {
      n.ghost = true;
      n.ghost_next = ghost_head_;
      n.ghost_prev = KeySlots::kNone;
      if (ghost_head_ != KeySlots::kNone) nodes_[ghost_head_].ghost_prev = s;
      ghost_head_ = s;
      if (ghost_tail_ == KeySlots::kNone) ghost_tail_ = s;
      ++ghosts_;
    } else {
      slots_.Remove(s);
    }
    if (!live_parent) return;
    if (n.cls != kNew) --nodes_[p].reused_children;
    if (--nodes_[p].children == 0) AddLeaf(p);
  }

  void ForgetGhost(int32_t g, bool free_slot) {
    Node& n = nodes_[g];
    (n.ghost_prev == KeySlots::kNone ? ghost_head_ : nodes_[n.ghost_prev].ghost_next) =
        n.ghost_next;
    (n.ghost_next == KeySlots::kNone ? ghost_tail_ : nodes_[n.ghost_next].ghost_prev) =
        n.ghost_prev;
    n.ghost = false;
    --ghosts_;
    if (free_slot) slots_.Remove(g);
  }

  // kGhostFactor ghosts per resident block at most, the oldest forgotten
  // first; a forgotten ghost's lifetime ends there, without a hit.
  void TrimGhosts() {
    while (ghosts_ > 0 && ghosts_ > kGhostFactor * size()) {
      RecordEvent(ghost_tail_, /*hit=*/false);
      ForgetGhost(ghost_tail_, /*free_slot=*/true);
    }
  }

  KeySlots slots_;                    // resident blocks and ghosts
  std::vector<Node> nodes_;           // by slot
  std::vector<uint32_t> generation_;  // by slot: bumped when the slot's block leaves
  // Resident blocks with no cached child, with what sampling reads of them
  // (one array read at random, not the nodes).
  struct Leaf {
    uint64_t last_use;
    double inverse_bytes;
    int32_t slot;
    uint8_t cls;
  };
  std::vector<Leaf> leaves_;
  size_t sampled_ = 0;  // leaves_[0, sampled_) may be sampled (all, outside a Victims call)
  std::vector<std::pair<size_t, size_t>> swaps_;  // this call's refusals, to undo
  int32_t ghost_head_ = KeySlots::kNone, ghost_tail_ = KeySlots::kNone;  // newest at the head
  size_t ghosts_ = 0;
  Counts hits_{}, evictions_{}, density_{};
  std::array<uint64_t, 65> event_ages_{};  // this interval's events by bit width of their age
  int shift_ = 0;                          // an age bucket is 2^shift_ references
  uint64_t clock_ = 0;                     // counts references
  uint64_t since_recompute_ = 0;
  uint64_t draws_ = 0;                   // samples drawn: the counter the sampler mixes
  int32_t last_used_ = KeySlots::kNone;  // the slot last inserted or touched
};

}  // namespace

std::unique_ptr<EvictionPolicy> NewLhdPolicy() { return std::make_unique<LhdPolicy>(); }

}  // namespace kvtier
