// W-TinyLFU: Einziger, Eden, Friedman & Manes, "Adaptive Software Cache
// Management", Middleware'18 (and TinyLFU, ACM ToS 2017), as Caffeine runs it.
//
// Three LRU queues. New blocks enter the window (1% of the capacity). A
// block pushed out of the window becomes a candidate for the main space, an
// SLRU of probation (20%) and protected (80% of the main space). When room
// is needed, the candidate duels the probation queue's LRU block (the
// victim): the candidate stays only if the TinyLFU sketch
// (cache/admission/frequency_sketch.h, every Insert and Touch counted)
// estimates it strictly more frequent, else it leaves. A hit in the window
// moves a block to the window's MRU end; a hit in probation promotes it to
// protected, whose overflow (its LRU block) goes back to probation's MRU
// end; a hit in protected moves it to protected's MRU end. With no
// candidate pending, victims come from probation, then protected, then the
// window, LRU first (Caffeine's order when a queue is empty).
//
// Candidates. The owner asks for victims before it inserts, so the duel for
// a candidate happens at the next Victims call: an Insert that pushes a
// block out of the window moves it to probation's MRU end and marks it
// pending. If the next call is another Insert (the tier had room), the
// candidate was taken in, as in Caffeine, which duels only while the cache
// is over its maximum.
//
// Adaptive window (Caffeine's hill climber): every sample of W = 10 x the
// blocks held references, the hit ratio of the sample is compared with the
// previous one; the window moves by the step (first -6.25% of the capacity)
// in the direction that improved it, else the other way; a change of 5
// points or more restarts the step at 6.25%, otherwise it decays by 2% per
// sample. The window's share ranges over [0, 100%] of the capacity and the
// queues follow lazily: a larger window fills from new blocks while victims
// come from the main space, a smaller one pushes its surplus out as
// candidates.
//
// Sizes are bytes (PolicyOptions::capacity_bytes; 0 = unbounded, the
// resident bytes stand in for it). The sketch is sized by the blocks held:
// it starts for 64, and is rebuilt (counts forgotten) each time the blocks
// held pass twice its size, as Caffeine's ensureCapacity does while a cache
// fills.
//
// Refused blocks (query.eligible) keep their place: a refused victim is
// stepped over (the next one towards probation's MRU end duels), a refused
// candidate stays pending (the next candidate duels).
#include <algorithm>
#include <array>
#include <cmath>
#include <memory>
#include <optional>
#include <vector>

#include "cache/admission/frequency_sketch.h"
#include "cache/eviction_policy.h"
#include "cache/policies/key_slots.h"

namespace kvtier {
namespace {

constexpr double kWindowShare = 0.01;     // Caffeine's initial window: 1%
constexpr double kProtectedShare = 0.80;  // of the main space
// Hill climber (Caffeine's constants).
constexpr double kStepShare = 0.0625;       // step: 6.25% of the capacity
constexpr double kRestartThreshold = 0.05;  // hit-ratio change that restarts the step
constexpr double kStepDecay = 0.98;         // per sample otherwise

class WTinyLfuPolicy final : public EvictionPolicy {
 public:
  explicit WTinyLfuPolicy(const PolicyOptions& options)
      : capacity_bytes_(options.capacity_bytes),
        sketch_(std::make_unique<FrequencySketch>(64, true)) {
    window_max_ = WindowOf(capacity_bytes_);
    step_ = -kStepShare * static_cast<double>(capacity_bytes_);
  }

  std::string_view Name() const override { return "wtinylfu"; }

  void Insert(const BlockKey& key, const PolicyBlock& block) override {
    int32_t s = slots_.Find(key);
    if (s != KeySlots::kNone) {
      bytes_in_[where_[s]] = bytes_in_[where_[s]] - bytes_[s] + block.bytes;
      bytes_[s] = block.bytes;
      Touch(key);
      return;
    }
    // The tier had room for the last candidates: they are in.
    candidates_.clear();
    Count(key, /*hit=*/false);
    s = slots_.Add(key);
    if (where_.size() < slots_.slot_bound()) {
      where_.resize(slots_.slot_bound());
      bytes_.resize(slots_.slot_bound());
      queues_.Reserve(slots_.slot_bound());
    }
    where_[s] = kWindow;
    bytes_[s] = block.bytes;
    bytes_in_[kWindow] += block.bytes;
    queues_.PushFront(kWindow, s);
    // The window's surplus moves to probation as candidates.
    while (static_cast<double>(bytes_in_[kWindow]) > WindowMax() && queues_.size(kWindow) > 0) {
      const int32_t c = queues_.tail(kWindow);
      Move(c, kProbation);
      candidates_.push_back(c);
    }
    if (slots_.size() > 2 * sketch_blocks_) {
      sketch_blocks_ = slots_.size();
      sketch_ = std::make_unique<FrequencySketch>(sketch_blocks_, true);
    }
  }

  void Touch(const BlockKey& key) override {
    const int32_t s = slots_.Find(key);
    if (s == KeySlots::kNone) return;
    Count(key, /*hit=*/true);
    switch (where_[s]) {
      case kWindow:
        queues_.MoveToFront(kWindow, kWindow, s);
        break;
      case kProbation:
        Uncandidate(s);
        Move(s, kProtected);
        // Protected's overflow goes back to probation.
        while (static_cast<double>(bytes_in_[kProtected]) > ProtectedMax() &&
               queues_.size(kProtected) > 1) {
          Move(queues_.tail(kProtected), kProbation);
        }
        break;
      case kProtected:
        queues_.MoveToFront(kProtected, kProtected, s);
        break;
    }
  }

  void Erase(const BlockKey& key) override {
    const int32_t s = slots_.Find(key);
    if (s == KeySlots::kNone) return;
    Uncandidate(s);
    Forget(s);
  }

  size_t Victims(const VictimQuery& q, std::vector<BlockKey>* out) override {
    refused_.clear();
    EligibilityScan scan(q);
    size_t taken = 0;
    while (taken < q.n && !scan.Exhausted()) {
      std::optional<int32_t> victim = Duel(scan);
      if (!victim) victim = Plain(scan);
      if (!victim) break;
      out->push_back(slots_.key(*victim));
      Uncandidate(*victim);
      Forget(*victim);
      ++taken;
    }
    refused_.clear();
    return taken;
  }

  void Prefetch(const BlockKey& key) const override { slots_.Prefetch(key); }
  size_t size() const override { return slots_.size(); }

 private:
  enum Where : uint8_t { kWindow = 0, kProbation = 1, kProtected = 2 };

  uint64_t Capacity() const {
    return capacity_bytes_ > 0 ? capacity_bytes_
                               : bytes_in_[kWindow] + bytes_in_[kProbation] + bytes_in_[kProtected];
  }
  // Caffeine's rounding: the main space is the 99% rounded down, so a cache
  // of at least one block has a window of at least one; protected is 80% of
  // the main space, rounded down.
  static double WindowOf(uint64_t capacity) {
    return static_cast<double>(capacity) -
           std::floor((1 - kWindowShare) * static_cast<double>(capacity));
  }
  double WindowMax() const { return capacity_bytes_ > 0 ? window_max_ : WindowOf(Capacity()); }
  double ProtectedMax() const {
    return std::floor(kProtectedShare * (static_cast<double>(Capacity()) - WindowMax()));
  }

  // The pending candidates duel probation's LRU blocks, oldest candidate
  // first. Returns the loser, or nothing when no candidate is pending or
  // every loser was refused.
  std::optional<int32_t> Duel(EligibilityScan& scan) {
    for (size_t i = 0; i < candidates_.size() && !scan.Exhausted();) {
      const int32_t c = candidates_[i];
      if (Refused(c)) {
        ++i;
        continue;
      }
      // The victim: probation's LRU block that is neither a candidate nor
      // refused; protected's LRU when probation holds none.
      std::optional<int32_t> v;
      for (int32_t s = queues_.tail(kProbation); s != SlotLists::kNone; s = queues_.prev(s)) {
        if (!IsCandidate(s) && !Refused(s)) {
          v = s;
          break;
        }
      }
      if (!v) {
        for (int32_t s = queues_.tail(kProtected); s != SlotLists::kNone; s = queues_.prev(s)) {
          if (!Refused(s)) {
            v = s;
            break;
          }
        }
      }
      const bool candidate_wins =
          v && sketch_->Frequency(Hash(slots_.key(c))) > sketch_->Frequency(Hash(slots_.key(*v)));
      const int32_t loser = candidate_wins ? *v : c;
      if (scan.Accepts(slots_.key(loser))) {
        if (loser != c) candidates_.erase(candidates_.begin() + i);  // c won its place
        return loser;
      }
      // Refused: a refused victim is stepped over and the candidate duels
      // the next one; a refused candidate stays pending, and the next
      // candidate duels.
      refused_.push_back(loser);
    }
    return std::nullopt;
  }

  // No candidate: probation, then protected, then window, LRU first.
  std::optional<int32_t> Plain(EligibilityScan& scan) {
    for (Where w : {kProbation, kProtected, kWindow}) {
      for (int32_t s = queues_.tail(w); s != SlotLists::kNone && !scan.Exhausted();
           s = queues_.prev(s)) {
        if (Refused(s)) continue;
        if (scan.Accepts(slots_.key(s))) return s;
        refused_.push_back(s);
      }
    }
    return std::nullopt;
  }

  // One reference: the sketch counts it, and the hill climber's sample.
  void Count(const BlockKey& key, bool hit) {
    sketch_->Increment(Hash(key));
    (hit ? sample_hits_ : sample_misses_) += 1;
    if (capacity_bytes_ > 0 && sample_hits_ + sample_misses_ >= 10 * std::max<size_t>(size(), 1)) {
      Climb();
    }
  }

  void Climb() {
    const double ratio = static_cast<double>(sample_hits_) / (sample_hits_ + sample_misses_);
    const double change = ratio - last_ratio_;
    const double amount = change >= 0 ? step_ : -step_;
    const double cap = static_cast<double>(capacity_bytes_);
    step_ = std::abs(change) >= kRestartThreshold ? kStepShare * cap * (amount >= 0 ? 1 : -1)
                                                  : kStepDecay * amount;
    window_max_ = std::clamp(window_max_ + amount, 0.0, cap);
    last_ratio_ = ratio;
    sample_hits_ = sample_misses_ = 0;
  }

  uint64_t Hash(const BlockKey& k) const { return AdmissionHash(k, 0); }

  bool IsCandidate(int32_t s) const {
    return std::find(candidates_.begin(), candidates_.end(), s) != candidates_.end();
  }
  void Uncandidate(int32_t s) {
    candidates_.erase(std::remove(candidates_.begin(), candidates_.end(), s), candidates_.end());
  }
  // Refused during the current Victims call (cleared when it returns).
  bool Refused(int32_t s) const {
    return std::find(refused_.begin(), refused_.end(), s) != refused_.end();
  }

  void Move(int32_t s, Where to) {
    bytes_in_[where_[s]] -= bytes_[s];
    bytes_in_[to] += bytes_[s];
    queues_.MoveToFront(where_[s], to, s);
    where_[s] = to;
  }

  void Forget(int32_t s) {
    bytes_in_[where_[s]] -= bytes_[s];
    queues_.Unlink(where_[s], s);
    slots_.Remove(s);
  }

  const uint64_t capacity_bytes_;  // 0 = unbounded
  std::unique_ptr<FrequencySketch> sketch_;
  uint64_t sketch_blocks_ = 64;  // the blocks sketch_ was sized for
  KeySlots slots_;               // by slot: queue and bytes
  std::vector<Where> where_;
  std::vector<uint64_t> bytes_;
  SlotLists queues_{3};  // indexed by Where; head = MRU
  std::array<uint64_t, 3> bytes_in_{};
  std::vector<int32_t> candidates_;  // pushed out of the window, not yet dueled; oldest first
  std::vector<int32_t> refused_;     // stepped over in this Victims call
  // Hill climber.
  double window_max_ = 0;  // bytes
  double step_ = 0;        // bytes, signed
  double last_ratio_ = 0;
  uint64_t sample_hits_ = 0, sample_misses_ = 0;
};

}  // namespace

std::unique_ptr<EvictionPolicy> NewWTinyLfuPolicy(const PolicyOptions& options) {
  return std::make_unique<WTinyLfuPolicy>(options);
}

}  // namespace kvtier
