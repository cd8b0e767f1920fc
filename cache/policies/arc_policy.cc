// ARC: Megiddo & Modha, "ARC: A Self-Tuning, Low Overhead Replacement Cache",
// FAST'03, the ARC(c) algorithm figure (cases I-IV and the subroutine
// REPLACE(x, p)).
//
// Four LRU lists: T1 (resident, seen once), T2 (resident, seen at least
// twice), and their ghosts B1 and B2 (keys evicted from T1 and T2, no data);
// p is the adaptive target size of T1.
//
// Bytes. Every list size is the sum of its blocks' bytes, c is
// PolicyOptions::capacity_bytes and p is a byte count. A ghost hit on x of g
// bytes moves p by g * max(1, |B2|/|B1|) (x in B1: p grows, at most to c) or
// by g * max(1, |B1|/|B2|) (x in B2: p shrinks, at least to 0), g being the
// bytes x had when it was evicted. With one-byte blocks these are the paper's
// deltas d1 and d2 exactly, and so is everything else here.
//
// The paper's p is a real number (its deltas are ratios such as 5/3), and
// REPLACE compares it with |T1| for > and =, so p is kept as an exact
// fraction: floating point would turn 10/3 - 1 - 4/3 into 0.999... and pick
// the wrong list. It stays exact while its reduced denominator is below 2^24
// (beyond that it is rounded to the nearest 2^-24 byte) and byte counts are
// below 2^50.
//
// How the paper's steps map onto this interface. The owner asks Victims for
// room, one victim at a time, with query.incoming = the missing key x, and
// then Inserts x:
//  - Victims applies the ghost-hit adaptation of p (cases II and III) on the
//    first call for a given x and remembers x, so that further calls for the
//    same x, and the Insert of x, do not apply it again. An Insert of a ghost
//    key that no Victims call saw (the tier had room) applies it there.
//  - Each victim is one REPLACE(x, p) with the current p; its "x is in B2
//    and |T1| = p" test reads `incoming`. For a new x (case IV) with
//    |T1| >= c (case IV-A with |T1| = c, where B1 is empty) the victim is the
//    LRU of T1 and is forgotten without a ghost, as the paper does.
//  - The ghost trimming of case IV (delete the LRU of B1 when |L1| = c,
//    delete the LRU of B2 when the directory holds 2c) is done by Insert once
//    x is in T1: it trims B1 while |T1| + |B1| > c and then B2 while
//    |T1| + |T2| + |B1| + |B2| > 2c. REPLACE only ever adds at the MRU ends
//    of B1 and B2 and the paper only trims when those lists are non-empty, so
//    for one-byte blocks this deletes exactly the pages the paper deletes.
//  - Touch of a resident key is case I (to the MRU of T2); Insert of a key
//    in B1 or B2 is case II or III (to the MRU of T2); Insert of a new key
//    goes to the MRU of T1.
//  - Erase forgets a resident key without leaving a ghost; a key that is only
//    a ghost is not in the tier and Erase ignores it.
// Refused blocks (query.eligible) keep their place; REPLACE then takes the
// next eligible block of the list it chose, or of the other list when the
// chosen one has none.
//
// capacity_bytes == 0 (unbounded): the resident bytes |T1| + |T2| stand in
// for c. p stays within [0, resident bytes], case IV-A's ghostless eviction
// does not apply, and the ghosts are bounded by the resident bytes:
// |B1| + |B2| <= |T1| + |T2|, the LRU of B2 going first, then that of B1.
#include <array>
#include <optional>
#include <vector>

#include "cache/eviction_policy.h"
#include "cache/policies/key_slots.h"

namespace kvtier {
namespace {

// A byte count in [0, hi] held as an exact fraction num / den.
class Fraction {
 public:
  // Adds a * b / d (d > 0), at most up to `hi`.
  void Raise(uint64_t a, uint64_t b, uint64_t d, uint64_t hi) {
    U num = num_ * d + U{a} * b * den_;
    U den = den_ * d;
    if (num >= U{hi} * den) {
      num = hi;
      den = 1;
    }
    Set(num, den);
  }
  // Subtracts a * b / d (d > 0), at least down to 0.
  void Lower(uint64_t a, uint64_t b, uint64_t d) {
    const U minus = U{a} * b * den_;
    const U num = num_ * d;
    if (minus >= num) {
      Set(0, 1);
    } else {
      Set(num - minus, den_ * d);
    }
  }
  // Negative, zero or positive as x is below, equal to or above the value.
  int Compare(uint64_t x) const {
    const U lhs = U{x} * den_;
    return lhs < num_ ? -1 : lhs > num_ ? 1 : 0;
  }

 private:
  using U = unsigned __int128;
  static constexpr U kMaxDen = U{1} << 24;

  static U Gcd(U a, U b) {
    while (b != 0) {
      const U r = a % b;
      a = b;
      b = r;
    }
    return a;
  }

  void Set(U num, U den) {
    const U g = Gcd(num, den);
    num /= g;
    den /= g;
    if (den > kMaxDen) {  // round to the nearest 1/kMaxDen
      const U whole = num / den;
      const U part = ((num % den) * kMaxDen + den / 2) / den;
      num = whole * kMaxDen + part;
      den = kMaxDen;
      const U h = Gcd(num, den);
      num /= h;
      den /= h;
    }
    num_ = num;
    den_ = den;
  }

  U num_ = 0;
  U den_ = 1;
};

class ArcPolicy final : public EvictionPolicy {
 public:
  explicit ArcPolicy(const PolicyOptions& options) : capacity_bytes_(options.capacity_bytes) {}

  std::string_view Name() const override { return "arc"; }

  void Insert(const BlockKey& key, const PolicyBlock& block) override {
    int32_t s = slots_.Find(key);
    if (s != KeySlots::kNone && IsResident(where_[s])) {
      Resize(s, block.bytes);
      MoveToMru(s, kT2);  // case I
      adapted_for_.reset();
      return;
    }
    if (s != KeySlots::kNone) {
      // Cases II and III: a ghost hit enters T2.
      if (adapted_for_ != key) Adapt(where_[s], bytes_[s]);
      Resize(s, block.bytes);
      MoveToMru(s, kT2);
    } else {
      // Case IV: a new key enters T1.
      s = slots_.Add(key);
      if (where_.size() < slots_.slot_bound()) {
        where_.resize(slots_.slot_bound());
        bytes_.resize(slots_.slot_bound());
        lists_.Reserve(slots_.slot_bound());
      }
      where_[s] = kT1;
      bytes_[s] = block.bytes;
      bytes_in_[kT1] += block.bytes;
      lists_.PushFront(kT1, s);
    }
    adapted_for_.reset();
    TrimGhosts();
  }

  void Touch(const BlockKey& key) override {
    const int32_t s = slots_.Find(key);
    if (s != KeySlots::kNone && IsResident(where_[s])) MoveToMru(s, kT2);
  }

  void Erase(const BlockKey& key) override {
    const int32_t s = slots_.Find(key);
    if (s == KeySlots::kNone || !IsResident(where_[s])) return;
    Forget(s);
    TrimGhosts();
  }

  size_t Victims(const VictimQuery& q, std::vector<BlockKey>* out) override {
    bool incoming_new = false;    // case IV
    bool incoming_in_b2 = false;  // case III
    if (q.incoming != nullptr) {
      const int32_t s = slots_.Find(*q.incoming);
      if (s == KeySlots::kNone) {
        incoming_new = true;
      } else if (!IsResident(where_[s])) {
        incoming_in_b2 = where_[s] == kB2;
        if (adapted_for_ != *q.incoming) {
          Adapt(where_[s], bytes_[s]);
          adapted_for_ = *q.incoming;
        }
      }
    }
    // Where this call goes on scanning each resident list, from its LRU end:
    // blocks behind the cursor were refused, and nothing enters T1 or T2
    // during the call.
    std::array<int32_t, 2> cursor = {lists_.tail(kT1), lists_.tail(kT2)};
    EligibilityScan scan(q);
    size_t taken = 0;
    while (taken < q.n) {
      std::optional<BlockKey> victim;
      if (incoming_new && capacity_bytes_ > 0 && bytes_in_[kT1] >= capacity_bytes_) {
        // Case IV-A with |T1| = c: the LRU of T1 leaves without a ghost.
        victim = Take(kT1, cursor[kT1], scan, /*to_ghost=*/false);
      }
      if (!victim) victim = Replace(incoming_in_b2, scan, cursor);
      if (!victim) break;
      out->push_back(*victim);
      ++taken;
    }
    return taken;
  }

  void Prefetch(const BlockKey& key) const override { slots_.Prefetch(key); }
  size_t size() const override { return lists_.size(kT1) + lists_.size(kT2); }

 private:
  enum Where : uint8_t { kT1 = 0, kT2 = 1, kB1 = 2, kB2 = 3 };

  static bool IsResident(Where w) { return w == kT1 || w == kT2; }

  uint64_t ResidentBytes() const { return bytes_in_[kT1] + bytes_in_[kT2]; }
  // c in the paper: the capacity, or the resident bytes when unbounded.
  uint64_t Capacity() const { return capacity_bytes_ > 0 ? capacity_bytes_ : ResidentBytes(); }

  // The adaptation of cases II (`ghost` == kB1) and III (kB2) for a ghost of
  // `bytes` bytes: d1 = max(1, |B2|/|B1|), d2 = max(1, |B1|/|B2|), times the bytes.
  void Adapt(Where ghost, uint64_t bytes) {
    const uint64_t b1 = bytes_in_[kB1];
    const uint64_t b2 = bytes_in_[kB2];
    if (ghost == kB1) {
      if (b1 >= b2) {
        p_.Raise(bytes, 1, 1, Capacity());
      } else {
        p_.Raise(bytes, b2, b1, Capacity());
      }
    } else {
      if (b2 >= b1) {
        p_.Lower(bytes, 1, 1);
      } else {
        p_.Lower(bytes, b1, b2);
      }
    }
  }

  // REPLACE(x, p): the LRU of T1 goes to B1 if T1 is not empty and
  // (|T1| > p or (x in B2 and |T1| = p)); otherwise the LRU of T2 goes to B2.
  std::optional<BlockKey> Replace(bool incoming_in_b2, EligibilityScan& scan,
                                  std::array<int32_t, 2>& cursor) {
    const int t1_vs_p = p_.Compare(bytes_in_[kT1]);
    const bool from_t1 = lists_.size(kT1) > 0 && (t1_vs_p > 0 || (incoming_in_b2 && t1_vs_p == 0));
    const Where first = from_t1 ? kT1 : kT2;
    const Where second = from_t1 ? kT2 : kT1;
    if (auto v = Take(first, cursor[first], scan, /*to_ghost=*/true)) return v;
    return Take(second, cursor[second], scan, /*to_ghost=*/true);
  }

  // Takes the first block `q` accepts from `cursor` on (towards the MRU end)
  // in resident list `from`, moving it to the MRU of its ghost list or
  // forgetting it.
  std::optional<BlockKey> Take(Where from, int32_t& cursor, EligibilityScan& scan, bool to_ghost) {
    while (cursor != SlotLists::kNone && !scan.Exhausted()) {
      const int32_t s = cursor;
      cursor = lists_.prev(s);
      const BlockKey key = slots_.key(s);
      if (!scan.Accepts(key)) continue;
      if (to_ghost) {
        MoveToMru(s, from == kT1 ? kB1 : kB2);
      } else {
        Forget(s);
      }
      return key;
    }
    return std::nullopt;
  }

  void MoveToMru(int32_t s, Where to) {
    bytes_in_[where_[s]] -= bytes_[s];
    bytes_in_[to] += bytes_[s];
    lists_.MoveToFront(where_[s], to, s);
    where_[s] = to;
  }

  void Resize(int32_t s, uint64_t bytes) {
    bytes_in_[where_[s]] = bytes_in_[where_[s]] - bytes_[s] + bytes;
    bytes_[s] = bytes;
  }

  void Forget(int32_t s) {
    bytes_in_[where_[s]] -= bytes_[s];
    lists_.Unlink(where_[s], s);
    slots_.Remove(s);
  }

  void DropLru(Where ghost) { Forget(lists_.tail(ghost)); }

  // Keeps the directory within the paper's bounds (see the file comment).
  void TrimGhosts() {
    const uint64_t& t1 = bytes_in_[kT1];
    const uint64_t& b1 = bytes_in_[kB1];
    const uint64_t& b2 = bytes_in_[kB2];
    if (capacity_bytes_ == 0) {
      const uint64_t resident = ResidentBytes();
      while (b1 + b2 > resident && lists_.size(kB2) > 0) DropLru(kB2);
      while (b1 + b2 > resident && lists_.size(kB1) > 0) DropLru(kB1);
      return;
    }
    const uint64_t c = capacity_bytes_;
    while (t1 + b1 > c && lists_.size(kB1) > 0) DropLru(kB1);
    auto directory = [&] { return ResidentBytes() + b1 + b2; };
    while (directory() > 2 * c && lists_.size(kB2) > 0) DropLru(kB2);
    while (directory() > 2 * c && lists_.size(kB1) > 0) DropLru(kB1);
  }

  const uint64_t capacity_bytes_;  // c; 0 = unbounded
  Fraction p_;                     // target bytes of T1, in [0, c]
  // Every key in T1, T2, B1 or B2 has a slot; by slot, its list and bytes.
  KeySlots slots_;
  std::vector<Where> where_;
  std::vector<uint64_t> bytes_;
  SlotLists lists_{4};                  // indexed by Where; head = MRU, tail = LRU
  std::array<uint64_t, 4> bytes_in_{};  // sum of each list's bytes
  // The key whose ghost hit Victims has already adapted p for; the Insert
  // that follows must not adapt again.
  std::optional<BlockKey> adapted_for_;
};

}  // namespace

std::unique_ptr<EvictionPolicy> NewArcPolicy(const PolicyOptions& options) {
  return std::make_unique<ArcPolicy>(options);
}

}  // namespace kvtier
