// S3-FIFO: Yang et al., "FIFO Queues are All You Need for Cache Eviction",
// SOSP'23, Algorithm 1.
//
// Three FIFO queues: S (small, 10% of the capacity) takes new keys; M (main)
// takes keys promoted from S and ghost hits; G (ghost) remembers keys evicted
// from S. Each resident key has a 2-bit frequency: 0 on insertion, +1 per hit,
// capped at 3. As in Algorithm 1:
//  - EVICT: if |S| >= 0.1 * c, EVICTS, else EVICTM.
//  - EVICTS: the tail t of S moves to the head of M if t.freq > 1 (and then,
//    if M is full, EVICTM), else t leaves the cache and enters G; repeat until
//    something left the cache. The condition is `t.freq > 1`, i.e. at least
//    two hits while in S, as printed in Algorithm 1 and as in the
//    implementation the paper was evaluated with (libCacheSim S3FIFOv0.c,
//    move-to-main-threshold=2, `freq >= threshold`). A key moved to M starts
//    there with freq 0 ("its access bits are cleared during the move",
//    S3-FIFO's description; libCacheSim inserts a fresh object into M).
//  - EVICTM: the tail t of M is reinserted at the head with t.freq - 1 while
//    t.freq > 0, else it leaves the cache (no ghost: G only records S's
//    evictions).
//  - Insert: a key found in G goes to the head of M (and leaves G), any other
//    to the head of S.
//
// Bytes. Queue sizes are sums of bytes and c is PolicyOptions::capacity_bytes:
// EVICTS runs when 10 * |S| >= c; "M is full" means M holds more than its
// 90% share, 10 * |M| > 9 * c, after the move; G remembers keys (with the
// bytes they had) while their bytes add up to at most 90% of c, which for
// one-byte blocks is the paper's "as many entries as M" (M's 90% share).
//
// One victim at a time. The paper's EVICTS keeps going after an EVICTM made
// room inside it, until one key of S has also gone to G; here the object
// EVICTM removed is already the victim the owner asked for, so the call stops
// there and the next Victims call decides afresh by |S|. (When S has no other
// key, as in the tests, this is the paper's behaviour exactly.) A key never
// moves to M without a victim being found, so no call loops.
//
// Refused blocks (query.eligible) are stepped over where they stand: they
// keep their queue, place and frequency (a refused block of S is not
// promoted, a refused block of M is not reinserted). When the queue EVICT
// chose has nothing eligible, the other queue is tried.
//
// capacity_bytes == 0 (unbounded): the resident bytes |S| + |M| stand in for
// c, so G never holds more than 90% of the resident bytes.
#include <algorithm>
#include <array>
#include <optional>
#include <vector>

#include "cache/eviction_policy.h"
#include "cache/policies/key_slots.h"

namespace kvtier {
namespace {

// Algorithm 1: `if t.freq > 1 then insert t to M`.
constexpr uint8_t kMoveToMainAbove = 1;
constexpr uint8_t kMaxFreq = 3;  // 2 bits

class S3FifoPolicy final : public EvictionPolicy {
 public:
  explicit S3FifoPolicy(const PolicyOptions& options) : capacity_bytes_(options.capacity_bytes) {}

  std::string_view Name() const override { return "s3fifo"; }

  void Insert(const BlockKey& key, const PolicyBlock& block) override {
    int32_t s = slots_.Find(key);
    if (s != KeySlots::kNone && where_[s] != kGhost) {
      bytes_in_[where_[s]] = bytes_in_[where_[s]] - bytes_[s] + block.bytes;
      bytes_[s] = block.bytes;
      Hit(s);
      return;
    }
    Where to = kSmall;
    if (s != KeySlots::kNone) {
      to = kMain;  // a ghost hit
      Forget(s);
    }
    s = slots_.Add(key);
    if (where_.size() < slots_.slot_bound()) {
      where_.resize(slots_.slot_bound());
      bytes_.resize(slots_.slot_bound());
      freq_.resize(slots_.slot_bound());
      queues_.Reserve(slots_.slot_bound());
    }
    where_[s] = to;
    bytes_[s] = block.bytes;
    freq_[s] = 0;
    bytes_in_[to] += block.bytes;
    queues_.PushFront(to, s);
    TrimGhosts();
  }

  void Touch(const BlockKey& key) override {
    const int32_t s = slots_.Find(key);
    if (s != KeySlots::kNone && where_[s] != kGhost) Hit(s);
  }

  void Erase(const BlockKey& key) override {
    const int32_t s = slots_.Find(key);
    if (s == KeySlots::kNone || where_[s] == kGhost) return;
    Forget(s);
    TrimGhosts();
  }

  size_t Victims(const VictimQuery& q, std::vector<BlockKey>* out) override {
    Scan scan{queues_.tail(kSmall), SlotLists::kNone, EligibilityScan(q)};
    size_t taken = 0;
    while (taken < q.n) {
      const bool small_first = 10 * bytes_in_[kSmall] >= Capacity() && queues_.size(kSmall) > 0;
      std::optional<BlockKey> victim = small_first ? EvictSmall(scan) : EvictMain(scan);
      if (!victim) victim = small_first ? EvictMain(scan) : EvictSmall(scan);
      if (!victim) break;
      out->push_back(*victim);
      ++taken;
    }
    TrimGhosts();
    return taken;
  }

  void Prefetch(const BlockKey& key) const override { slots_.Prefetch(key); }
  size_t size() const override { return queues_.size(kSmall) + queues_.size(kMain); }

 private:
  enum Where : uint8_t { kSmall = 0, kMain = 1, kGhost = 2 };

  // Where one Victims call has got to. S only loses blocks during a call, so
  // `small` is the next block of S to look at (refused ones lie behind it,
  // towards the tail). M gains blocks at its head, so for M the call
  // remembers the last refused block stepped over (none: start at the tail).
  struct Scan {
    int32_t small;
    int32_t main_refused;
    EligibilityScan eligibility;
  };

  void Hit(int32_t s) { freq_[s] = std::min<uint8_t>(freq_[s] + 1, kMaxFreq); }

  // c: the capacity, or the resident bytes when unbounded.
  uint64_t Capacity() const {
    return capacity_bytes_ > 0 ? capacity_bytes_ : bytes_in_[kSmall] + bytes_in_[kMain];
  }

  // EVICTS. Returns the block that left the cache, if one did.
  std::optional<BlockKey> EvictSmall(Scan& scan) {
    while (scan.small != SlotLists::kNone && !scan.eligibility.Exhausted()) {
      const int32_t s = scan.small;
      scan.small = queues_.prev(s);
      const BlockKey key = slots_.key(s);
      if (!scan.eligibility.Accepts(key)) continue;
      if (freq_[s] > kMoveToMainAbove) {
        freq_[s] = 0;
        MoveToHead(s, kMain);
        if (10 * bytes_in_[kMain] > 9 * Capacity()) {
          if (auto victim = EvictMain(scan)) return victim;
        }
        continue;
      }
      MoveToHead(s, kGhost);
      return key;
    }
    return std::nullopt;
  }

  // EVICTM. Returns the block that left the cache, if one did.
  std::optional<BlockKey> EvictMain(Scan& scan) {
    int32_t s = scan.main_refused != SlotLists::kNone ? queues_.prev(scan.main_refused)
                                                      : queues_.tail(kMain);
    // Terminates: each reinsertion lowers a frequency, and refused blocks are
    // passed once (the cursor only moves towards the head).
    while (s != SlotLists::kNone && !scan.eligibility.Exhausted()) {
      const BlockKey key = slots_.key(s);
      if (!scan.eligibility.Accepts(key)) {
        scan.main_refused = s;
        s = queues_.prev(s);
        continue;
      }
      if (freq_[s] > 0) {
        --freq_[s];
        int32_t next = queues_.prev(s);
        queues_.MoveToFront(kMain, kMain, s);
        if (next == SlotLists::kNone) next = s;  // it was the head: it is next again
        s = next;
        continue;
      }
      Forget(s);
      return key;
    }
    return std::nullopt;
  }

  void MoveToHead(int32_t s, Where to) {
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

  // G holds at most 90% of c (the size of M), oldest ghosts leaving first.
  void TrimGhosts() {
    while (queues_.size(kGhost) > 0 && 10 * bytes_in_[kGhost] > 9 * Capacity()) {
      Forget(queues_.tail(kGhost));
    }
  }

  const uint64_t capacity_bytes_;  // c; 0 = unbounded
  // Every key in S, M or G has a slot; by slot, its queue, bytes and
  // frequency (0..kMaxFreq; unused in G).
  KeySlots slots_;
  std::vector<Where> where_;
  std::vector<uint64_t> bytes_;
  std::vector<uint8_t> freq_;
  SlotLists queues_{3};                 // indexed by Where; head = newest, tail = oldest
  std::array<uint64_t, 3> bytes_in_{};  // sum of each queue's bytes
};

}  // namespace

std::unique_ptr<EvictionPolicy> NewS3FifoPolicy(const PolicyOptions& options) {
  return std::make_unique<S3FifoPolicy>(options);
}

}  // namespace kvtier
