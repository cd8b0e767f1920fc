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
#include <list>
#include <optional>
#include <unordered_map>

#include "cache/eviction_policy.h"

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
    auto it = index_.find(key);
    if (it != index_.end() && it->second.where != kGhost) {
      Queue& queue = queues_[it->second.where];
      queue.bytes = queue.bytes - it->second.it->bytes + block.bytes;
      it->second.it->bytes = block.bytes;
      Hit(*it->second.it);
      return;
    }
    Where to = kSmall;
    if (it != index_.end()) {
      to = kMain;  // a ghost hit
      Forget(it);
    }
    Queue& queue = queues_[to];
    queue.order.push_back(Entry{key, block.bytes, 0});
    queue.bytes += block.bytes;
    index_.emplace(key, Slot{to, std::prev(queue.order.end())});
    TrimGhosts();
  }

  void Touch(const BlockKey& key) override {
    auto it = index_.find(key);
    if (it != index_.end() && it->second.where != kGhost) Hit(*it->second.it);
  }

  void Erase(const BlockKey& key) override {
    auto it = index_.find(key);
    if (it == index_.end() || it->second.where == kGhost) return;
    Forget(it);
    TrimGhosts();
  }

  size_t Victims(const VictimQuery& q, std::vector<BlockKey>* out) override {
    Scan scan{queues_[kSmall].order.begin(), std::nullopt};
    size_t taken = 0;
    while (taken < q.n) {
      const bool small_first =
          10 * queues_[kSmall].bytes >= Capacity() && !queues_[kSmall].order.empty();
      std::optional<BlockKey> victim = small_first ? EvictSmall(q, scan) : EvictMain(q, scan);
      if (!victim) victim = small_first ? EvictMain(q, scan) : EvictSmall(q, scan);
      if (!victim) break;
      out->push_back(*victim);
      ++taken;
    }
    TrimGhosts();
    return taken;
  }

  size_t size() const override {
    return queues_[kSmall].order.size() + queues_[kMain].order.size();
  }

 private:
  enum Where : uint8_t { kSmall = 0, kMain = 1, kGhost = 2 };

  struct Entry {
    BlockKey key;
    uint64_t bytes;
    uint8_t freq;  // 0..kMaxFreq; unused in G
  };
  struct Queue {
    std::list<Entry> order;  // front = tail (oldest), back = head (newest)
    uint64_t bytes = 0;      // sum of the entries' bytes
  };
  struct Slot {
    Where where;
    std::list<Entry>::iterator it;
  };
  using Index = std::unordered_map<BlockKey, Slot, BlockKeyHash>;

  // Where one Victims call has got to. S only loses blocks during a call, so
  // `small` is the next block of S to look at (refused ones lie before it).
  // M gains blocks at its head, so for M the call remembers the last refused
  // block stepped over (none: start at the tail).
  struct Scan {
    std::list<Entry>::iterator small;
    std::optional<std::list<Entry>::iterator> main_refused;
  };

  static void Hit(Entry& e) { e.freq = std::min<uint8_t>(e.freq + 1, kMaxFreq); }

  // c: the capacity, or the resident bytes when unbounded.
  uint64_t Capacity() const {
    return capacity_bytes_ > 0 ? capacity_bytes_ : queues_[kSmall].bytes + queues_[kMain].bytes;
  }

  // EVICTS. Returns the block that left the cache, if one did.
  std::optional<BlockKey> EvictSmall(const VictimQuery& q, Scan& scan) {
    std::list<Entry>& small = queues_[kSmall].order;
    while (scan.small != small.end()) {
      auto entry = scan.small++;
      if (q.eligible && !q.eligible(entry->key)) continue;
      Slot& slot = index_.find(entry->key)->second;
      if (entry->freq > kMoveToMainAbove) {
        entry->freq = 0;
        MoveToHead(slot, kMain);
        if (10 * queues_[kMain].bytes > 9 * Capacity()) {
          if (auto victim = EvictMain(q, scan)) return victim;
        }
        continue;
      }
      const BlockKey key = entry->key;
      MoveToHead(slot, kGhost);
      return key;
    }
    return std::nullopt;
  }

  // EVICTM. Returns the block that left the cache, if one did.
  std::optional<BlockKey> EvictMain(const VictimQuery& q, Scan& scan) {
    std::list<Entry>& main = queues_[kMain].order;
    auto entry = scan.main_refused ? std::next(*scan.main_refused) : main.begin();
    // Terminates: each reinsertion lowers a frequency, and refused blocks are
    // passed once (the cursor only moves towards the head).
    while (entry != main.end()) {
      if (q.eligible && !q.eligible(entry->key)) {
        scan.main_refused = entry;
        ++entry;
        continue;
      }
      if (entry->freq > 0) {
        --entry->freq;
        auto next = std::next(entry);
        main.splice(main.end(), main, entry);
        if (next == main.end()) next = entry;  // it was the head: it is next again
        entry = next;
        continue;
      }
      const BlockKey key = entry->key;
      Forget(index_.find(key));
      return key;
    }
    return std::nullopt;
  }

  void MoveToHead(Slot& slot, Where to) {
    const uint64_t bytes = slot.it->bytes;
    queues_[slot.where].bytes -= bytes;
    queues_[to].bytes += bytes;
    queues_[to].order.splice(queues_[to].order.end(), queues_[slot.where].order, slot.it);
    slot.where = to;
  }

  void Forget(Index::iterator it) {
    Queue& queue = queues_[it->second.where];
    queue.bytes -= it->second.it->bytes;
    queue.order.erase(it->second.it);
    index_.erase(it);
  }

  // G holds at most 90% of c (the size of M), oldest ghosts leaving first.
  void TrimGhosts() {
    Queue& ghost = queues_[kGhost];
    while (!ghost.order.empty() && 10 * ghost.bytes > 9 * Capacity()) {
      Forget(index_.find(ghost.order.front().key));
    }
  }

  const uint64_t capacity_bytes_;  // c; 0 = unbounded
  std::array<Queue, 3> queues_;    // indexed by Where
  Index index_;                    // every key in S, M or G
};

}  // namespace

std::unique_ptr<EvictionPolicy> NewS3FifoPolicy(const PolicyOptions& options) {
  return std::make_unique<S3FifoPolicy>(options);
}

}  // namespace kvtier
