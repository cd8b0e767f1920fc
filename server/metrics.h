// Metrics in the Prometheus text exposition format (version 0.0.4), and the
// latency histogram the daemon keeps per request kind.
//
// MetricsText builds one scrape's text: callers add samples family by family
// and take the text. Samples of one family (one metric name) are written
// together under a single `# HELP` and `# TYPE`, in the order the families
// were first added, even when other families are added in between. An invalid
// metric or label name, a family re-added with another type, or a histogram
// whose counts do not match its bounds is a programming error: it asserts in
// debug builds and the sample is skipped in release builds. A MetricsText is
// not thread-safe; build one per scrape.
//
// LatencyHistogram counts observations (seconds) in fixed exponential buckets;
// it is thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace kvtier {

// Label name/value pairs, written in this order. Values may hold any UTF-8;
// they are escaped on output.
using MetricLabels = std::vector<std::pair<std::string, std::string>>;

// The state of a histogram at one moment.
struct HistogramSnapshot {
  std::vector<double> upper_bounds;  // finite bucket bounds, increasing (seconds for latencies)
  std::vector<uint64_t> counts;      // per bucket, not cumulative; one more entry than
                                     // upper_bounds: the last counts values above every bound
  double sum = 0;                    // sum of all observed values

  uint64_t count() const;
};

class MetricsText {
 public:
  // A monotonically increasing value (e.g. `kvtier_tier_hits_total`). Values
  // are doubles: integers are exact up to 2^53.
  void Counter(std::string_view name, std::string_view help, double value,
               const MetricLabels& labels = {});
  // A value that goes up and down (e.g. `kvtier_tier_used_bytes`).
  void Gauge(std::string_view name, std::string_view help, double value,
             const MetricLabels& labels = {});
  // A histogram: `upper_bounds` are the finite bucket bounds, strictly
  // increasing; `counts` holds one count per bucket (not cumulative) plus one
  // for the values above the last bound. Writes the cumulative
  // `name_bucket{le="..."}` lines ending in `le="+Inf"`, then `name_sum` and
  // `name_count`. `labels` must not use "le".
  void Histogram(std::string_view name, std::string_view help, std::span<const double> upper_bounds,
                 std::span<const uint64_t> counts, double sum, const MetricLabels& labels = {});
  void Histogram(std::string_view name, std::string_view help, const HistogramSnapshot& snapshot,
                 const MetricLabels& labels = {});

  // The exposition text of everything added so far.
  std::string Text() const;

 private:
  struct Family {
    std::string name;
    std::string type;  // "counter", "gauge" or "histogram"
    std::string help;
    std::string samples;  // the sample lines, each ending in '\n'
  };
  // The family `name` of `type`, created on first use; null (after asserting)
  // when the name is invalid or the family exists with another type.
  Family* FamilyFor(std::string_view name, std::string_view help, std::string_view type);
  void Sample(std::string_view name, std::string_view help, std::string_view type, double value,
              const MetricLabels& labels);

  std::vector<Family> families_;                          // in first-added order
  std::unordered_map<std::string, size_t> family_index_;  // name -> index in families_
};

// Request latencies: fixed buckets doubling from 0.5 ms to 65.536 s. Observe
// and Snapshot may be called from any thread.
class LatencyHistogram {
 public:
  static constexpr size_t kNumBounds = 18;
  // The finite upper bounds, seconds: 0.0005, 0.001, 0.002, ..., 65.536.
  static std::span<const double> UpperBounds();

  // Counts one observation. Negative values count as 0; NaN is ignored.
  void Observe(double seconds);
  HistogramSnapshot Snapshot() const;

 private:
  mutable std::mutex mu_;
  std::array<uint64_t, kNumBounds + 1> counts_{};  // guarded by mu_; last = above every bound
  double sum_ = 0;                                 // guarded by mu_; seconds
};

}  // namespace kvtier
