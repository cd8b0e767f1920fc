// MrcEstimator: the LRU miss-ratio curve of a stream of block uses, estimated
// online in bounded memory (fixed-size SHARDS: Waldspurger, Park, Garthwaite,
// Ahmad, "Efficient MRC Construction with SHARDS", FAST'15).
//
// What it measures: for every use of a key, its LRU stack distance in bytes
// (the bytes of the distinct keys used since its previous use, its own
// included). An LRU cache of C bytes hits exactly the uses whose distance is
// at most C, so the distribution of distances answers "what hit ratio would a
// cache of C bytes give" for every C at once. Each use counts on its own
// (per-reference hits, not a request's leading run).
//
// How: spatial sampling. A key is sampled when a hash of it falls under a
// threshold T (rate R = T / 2^64), so either all uses of a key are seen or
// none. Distances among the sampled keys, scaled by 1/R, estimate the full
// stream's. Exact distances come from a Fenwick tree over the sampled keys'
// last-use times (O(log n) per sampled use). Fixed size: at most
// `max_sampled_keys` keys are tracked; when one more arrives, the key of the
// largest hash leaves and T drops to exclude it, and the counts gathered at
// the old rate are scaled by R_new / R_old. Memory is bounded by s_max (about
// 100 bytes per tracked key plus a 15 KiB histogram), whatever the stream.
// Distances are kept in a log-linear histogram, 32 buckets per power of two
// (exact below 64): a size is resolved to within 1/32 of itself.
//
// SHARDS's count correction is applied: a sample holds more or fewer uses
// than the expected R * N when it caught the wrong share of hot keys; the
// difference goes to the smallest distance seen (the paper's SHARDS_adj).
//
// Thread-safe. A use of an unsampled key (most of them) costs one hash and
// two atomic operations and takes no lock; sampled uses are serialised on an
// internal mutex, a leaf lock (no callbacks run under it).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <queue>
#include <unordered_map>
#include <utility>
#include <vector>

namespace kvtier {

struct MrcOptions {
  // s_max: the most keys tracked at once. The error shrinks about as
  // 1/sqrt(s_max), whatever the stream's length or footprint (the paper
  // measures a mean absolute error near 0.01 or less at 8K on its block
  // traces). On the shipped traces the worst error against exact LRU, from
  // 0.5% of the footprint to all of it, is 0.024 at 1K, 0.011 at 2K, 0.006 at
  // 8K and 0.0013 at 16K (tests/replay/mrc_trace_test.cc): 16K, for about
  // 2 MB.
  size_t max_sampled_keys = 16384;
};

// One point of a curve: an LRU cache of `size_bytes` hits `hit_ratio` of the uses.
struct MrcPoint {
  uint64_t size_bytes = 0;
  double hit_ratio = 0;
};

// The estimate at one moment, and how it was made.
struct MrcSnapshot {
  uint64_t uses = 0;          // uses fed in
  uint64_t sampled_uses = 0;  // of them, uses of sampled keys
  double sampling_rate = 1;   // R now
  size_t sampled_keys = 0;    // keys tracked now
  size_t max_sampled_keys = 0;
  // Piecewise linear, by increasing size, from (0, 0): the hit ratio at a size
  // between two points is their linear interpolation, and past the last
  // point it is the last point's (the uses that never hit: first uses).
  std::vector<MrcPoint> curve;

  // The estimated LRU hit ratio of a cache of `bytes`, in [0, 1]; 0 before any use.
  double HitRatioAt(uint64_t bytes) const;
  // The hit ratio of an unbounded cache: every use but the first of each key.
  double MaxHitRatio() const { return curve.empty() ? 0 : curve.back().hit_ratio; }
};

class MrcEstimator {
 public:
  // Requires max_sampled_keys >= 1.
  explicit MrcEstimator(const MrcOptions& options = MrcOptions());
  MrcEstimator(const MrcEstimator&) = delete;
  MrcEstimator& operator=(const MrcEstimator&) = delete;

  // A use of `key`, a block of `bytes`. Keys are any 64-bit identities of
  // blocks (a hash of the block key, a trace's block id); the estimator
  // hashes them again to sample. A size of 0 counts as 1 byte.
  void Use(uint64_t key, uint64_t bytes);

  MrcSnapshot Snapshot() const;
  // Snapshot().HitRatioAt(bytes).
  double HitRatioAt(uint64_t bytes) const { return Snapshot().HitRatioAt(bytes); }

  // The histogram's resolution (for tests): 64 exact buckets below 64, then
  // 32 per power of two.
  static constexpr size_t kExactBelow = 64;
  static constexpr size_t kBucketsPerOctave = 32;

 private:
  static constexpr size_t kNumBuckets = kExactBelow + (64 - 6) * kBucketsPerOctave;
  static size_t BucketOf(uint64_t distance);
  static uint64_t BucketLow(size_t bucket);
  static uint64_t BucketHigh(size_t bucket);

  // A use of a sampled key (hash <= threshold): the locked part of Use.
  void UseSampled(uint64_t key, uint64_t hash, uint64_t bytes);
  // Counts a use's scaled distance.
  void Record(double distance_bytes);
  // The next last-use time, compacting the times when they run out.
  uint32_t NextTime();
  void Compact();
  // Drops the keys of largest hash until at most max_sampled_keys remain,
  // lowering the rate and rescaling the counts.
  void Shed();
  // Adds the uses counted since the last fold to expected_uses_, at the
  // current rate.
  void FoldExpected();
  double Rate() const;

  // Fenwick tree over last-use times: the bytes of the key last used then.
  void FenwickAdd(uint32_t time, int64_t delta);
  uint64_t FenwickPrefix(uint32_t time) const;  // sum over [0, time)

  const size_t max_keys_;
  // Uses of every key, sampled or not: atomic, counted outside the lock.
  std::atomic<uint64_t> uses_{0};
  // Sampled iff hash <= threshold_. Written under mu_, read without it.
  std::atomic<uint64_t> threshold_{UINT64_MAX};

  mutable std::mutex mu_;
  // Everything below is guarded by mu_.
  struct Tracked {
    uint64_t hash = 0;
    uint64_t bytes = 0;
    uint32_t time = 0;
  };
  std::unordered_map<uint64_t, Tracked> tracked_;  // by key
  // Tracked keys by hash, largest first: the next to shed.
  std::priority_queue<std::pair<uint64_t, uint64_t>> by_hash_;
  std::vector<uint64_t> fenwick_;  // 1-based over times [0, fenwick_.size() - 1)
  uint32_t next_time_ = 0;
  uint64_t tracked_bytes_ = 0;
  uint64_t sampled_uses_ = 0;
  // Counts of uses at the current rate: by distance bucket, and first uses.
  std::vector<double> histogram_;
  double cold_ = 0;
  // SHARDS_adj: the uses a sample at the current rate should hold (R * N,
  // accumulated as the rate changed), and how many uses it has folded in.
  double expected_uses_ = 0;
  uint64_t folded_uses_ = 0;
};

}  // namespace kvtier
