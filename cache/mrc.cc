#include "cache/mrc.h"

#include <algorithm>
#include <bit>
#include <cassert>
#include <cmath>

namespace kvtier {
namespace {

// SplitMix64's finaliser: the sampling hash. Keys that are already hashes
// (the daemon's) stay uniform; dense ids (a trace's) become uniform.
uint64_t SampleHash(uint64_t key) {
  uint64_t h = key + 0x9e3779b97f4a7c15ull;
  h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
  h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
  return h ^ (h >> 31);
}

// Last-use times run to at least this many before they are compacted, so
// that a small sample does not compact every few uses.
constexpr uint32_t kMinTimes = 1024;

}  // namespace

double MrcSnapshot::HitRatioAt(uint64_t bytes) const {
  if (curve.empty()) return 0;
  if (bytes >= curve.back().size_bytes) return curve.back().hit_ratio;
  // The first point past `bytes`; curve[0] is (0, 0), so there is one before.
  const auto next =
      std::upper_bound(curve.begin(), curve.end(), bytes,
                       [](uint64_t b, const MrcPoint& p) { return b < p.size_bytes; });
  const MrcPoint& a = *(next - 1);
  const MrcPoint& b = *next;
  const double f =
      static_cast<double>(bytes - a.size_bytes) / static_cast<double>(b.size_bytes - a.size_bytes);
  return a.hit_ratio + f * (b.hit_ratio - a.hit_ratio);
}

MrcEstimator::MrcEstimator(const MrcOptions& options)
    : max_keys_(std::max<size_t>(1, options.max_sampled_keys)),
      fenwick_(kMinTimes + 1, 0),
      histogram_(kNumBuckets, 0) {
  assert(options.max_sampled_keys >= 1);
}

// Distances below kExactBelow have a bucket each; above, a power of two
// [2^e, 2^(e+1)) is split into kBucketsPerOctave equal buckets.
size_t MrcEstimator::BucketOf(uint64_t distance) {
  if (distance < kExactBelow) return distance;
  const int e = std::bit_width(distance) - 1;  // >= 6
  return kExactBelow + (e - 6) * kBucketsPerOctave + ((distance >> (e - 5)) - kBucketsPerOctave);
}

uint64_t MrcEstimator::BucketLow(size_t bucket) {
  if (bucket < kExactBelow) return bucket;
  const size_t e = 6 + (bucket - kExactBelow) / kBucketsPerOctave;
  const uint64_t m = kBucketsPerOctave + (bucket - kExactBelow) % kBucketsPerOctave;
  return m << (e - 5);
}

uint64_t MrcEstimator::BucketHigh(size_t bucket) {
  if (bucket < kExactBelow) return bucket;
  const size_t e = 6 + (bucket - kExactBelow) / kBucketsPerOctave;
  return BucketLow(bucket) + ((uint64_t{1} << (e - 5)) - 1);
}

double MrcEstimator::Rate() const {
  // (T + 1) / 2^64: the share of hashes in [0, T].
  const double r =
      std::ldexp(static_cast<double>(threshold_.load(std::memory_order_relaxed)), -64) +
      std::ldexp(1.0, -64);
  return std::min(r, 1.0);
}

void MrcEstimator::Use(uint64_t key, uint64_t bytes) {
  uses_.fetch_add(1, std::memory_order_relaxed);
  const uint64_t h = SampleHash(key);
  if (h > threshold_.load(std::memory_order_relaxed)) return;
  UseSampled(key, h, std::max<uint64_t>(bytes, 1));
}

void MrcEstimator::UseSampled(uint64_t key, uint64_t hash, uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  if (hash > threshold_.load(std::memory_order_relaxed)) return;  // shed since
  if (next_time_ + 1 >= fenwick_.size()) Compact();
  ++sampled_uses_;
  auto it = tracked_.find(key);
  if (it == tracked_.end()) {
    cold_ += 1;
    it = tracked_.emplace(key, Tracked{hash, bytes, 0}).first;
    by_hash_.emplace(hash, key);
  } else {
    Tracked& k = it->second;
    // The bytes of the distinct keys used since k's last use, k's own included.
    const uint64_t distance = tracked_bytes_ - FenwickPrefix(k.time);
    Record(static_cast<double>(distance) / Rate());
    FenwickAdd(k.time, -static_cast<int64_t>(k.bytes));
    tracked_bytes_ -= k.bytes;
  }
  Tracked& k = it->second;
  k.bytes = bytes;
  k.time = next_time_++;
  FenwickAdd(k.time, static_cast<int64_t>(bytes));
  tracked_bytes_ += bytes;
  if (tracked_.size() > max_keys_) Shed();
}

void MrcEstimator::Record(double distance_bytes) {
  // Distances are whole bytes; a scaled one counts at the next whole byte.
  const double ceiling = std::ceil(std::max(distance_bytes, 1.0));
  const uint64_t d = ceiling >= 0x1p63 ? (uint64_t{1} << 63) : static_cast<uint64_t>(ceiling);
  histogram_[BucketOf(d)] += 1;
}

void MrcEstimator::Compact() {
  // Renumbers the tracked keys' last-use times 0, 1, ... in their order, and
  // leaves as many free times again (at least kMinTimes): amortised O(log n)
  // a use.
  std::vector<std::pair<uint32_t, Tracked*>> order;
  order.reserve(tracked_.size());
  for (auto& [key, k] : tracked_) order.emplace_back(k.time, &k);
  std::sort(order.begin(), order.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  const size_t times = std::max<size_t>(kMinTimes, 2 * order.size() + 2);
  fenwick_.assign(times + 1, 0);
  next_time_ = 0;
  for (auto& [old_time, k] : order) {
    k->time = next_time_++;
    fenwick_[k->time + 1] = k->bytes;
  }
  // Linear-time build: each node passes its sum to its parent.
  for (size_t i = 1; i < fenwick_.size(); ++i) {
    const size_t parent = i + (i & (~i + 1));
    if (parent < fenwick_.size()) fenwick_[parent] += fenwick_[i];
  }
}

void MrcEstimator::Shed() {
  FoldExpected();
  const double old_rate = Rate();
  while (tracked_.size() > max_keys_) {
    const uint64_t top = by_hash_.top().first;
    // The new threshold excludes the largest hash (and any key sharing it).
    const uint64_t threshold = top == 0 ? 0 : top - 1;
    threshold_.store(threshold, std::memory_order_relaxed);
    while (!by_hash_.empty() && by_hash_.top().first > threshold) {
      auto it = tracked_.find(by_hash_.top().second);
      by_hash_.pop();
      if (it == tracked_.end()) continue;
      FenwickAdd(it->second.time, -static_cast<int64_t>(it->second.bytes));
      tracked_bytes_ -= it->second.bytes;
      tracked_.erase(it);
    }
    if (top == 0) break;
  }
  // The counts so far were gathered at the old rate: scaled to the new one
  // they weigh as if sampled at it (SHARDS's fixed-size rescaling).
  const double scale = Rate() / old_rate;
  for (double& c : histogram_) c *= scale;
  cold_ *= scale;
  expected_uses_ *= scale;
}

void MrcEstimator::FoldExpected() {
  const uint64_t uses = uses_.load(std::memory_order_relaxed);
  expected_uses_ += static_cast<double>(uses - folded_uses_) * Rate();
  folded_uses_ = uses;
}

void MrcEstimator::FenwickAdd(uint32_t time, int64_t delta) {
  for (size_t i = time + 1; i < fenwick_.size(); i += i & (~i + 1)) {
    fenwick_[i] = static_cast<uint64_t>(static_cast<int64_t>(fenwick_[i]) + delta);
  }
}

uint64_t MrcEstimator::FenwickPrefix(uint32_t time) const {
  uint64_t sum = 0;
  for (size_t i = time; i > 0; i -= i & (~i + 1)) sum += fenwick_[i];
  return sum;
}

MrcSnapshot MrcEstimator::Snapshot() const {
  MrcSnapshot s;
  std::lock_guard<std::mutex> lock(mu_);
  s.uses = uses_.load(std::memory_order_relaxed);
  s.sampled_uses = sampled_uses_;
  s.sampling_rate = Rate();
  s.sampled_keys = tracked_.size();
  s.max_sampled_keys = max_keys_;
  double sampled = cold_;
  for (double c : histogram_) sampled += c;
  const double expected =
      expected_uses_ + static_cast<double>(s.uses - folded_uses_) * s.sampling_rate;
  if (!(sampled > 0) || !(expected > 0)) return s;
  // SHARDS_adj: the shortfall (or excess) of sampled uses against R * N
  // counts as uses at the smallest distance seen.
  double adjustment = expected - sampled;
  double cumulative = 0;
  const auto ratio = [&](double c) { return std::clamp(c / expected, 0.0, 1.0); };
  s.curve.push_back({0, 0});
  for (size_t b = 0; b < kNumBuckets; ++b) {
    if (histogram_[b] == 0) continue;
    const uint64_t low = BucketLow(b), high = BucketHigh(b);
    // Flat up to the bucket, then rising across it (its uses spread evenly).
    if (low > 0 && low - 1 > s.curve.back().size_bytes) {
      s.curve.push_back({low - 1, ratio(cumulative)});
    }
    cumulative += histogram_[b] + adjustment;
    adjustment = 0;
    s.curve.push_back({high, ratio(cumulative)});
  }
  return s;
}

}  // namespace kvtier
