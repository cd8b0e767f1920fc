#include "server/metrics.h"

#include <algorithm>
#include <cassert>
#include <charconv>
#include <cmath>
#include <functional>
#include <numeric>

namespace kvtier {
namespace {

bool IsNameStart(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// [a-zA-Z_:][a-zA-Z0-9_:]*
bool ValidMetricName(std::string_view name) {
  if (name.empty() || !(IsNameStart(name[0]) || name[0] == ':')) return false;
  return std::all_of(name.begin() + 1, name.end(),
                     [](char c) { return IsNameStart(c) || IsDigit(c) || c == ':'; });
}

// [a-zA-Z_][a-zA-Z0-9_]*
bool ValidLabelName(std::string_view name) {
  if (name.empty() || !IsNameStart(name[0])) return false;
  return std::all_of(name.begin() + 1, name.end(),
                     [](char c) { return IsNameStart(c) || IsDigit(c); });
}

bool ValidLabels(const MetricLabels& labels) {
  return std::all_of(labels.begin(), labels.end(),
                     [](const auto& l) { return ValidLabelName(l.first); });
}

// Prometheus reads values with Go's ParseFloat. Integers are written without a
// fraction and ordinary magnitudes in plain decimal (0.0005, not 5e-04), both
// the shortest digits that read back to the same double.
std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == 0) return "0";
  char buf[64];
  const double a = std::fabs(v);
  const auto r = (a >= 1e-6 && a < 1e15)
                     ? std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::fixed)
                     : std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, r.ptr);
}

// HELP text escapes backslash and newline.
void AppendEscapedHelp(std::string& out, std::string_view help) {
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
}

// Label values escape backslash, double quote and newline.
void AppendEscapedLabelValue(std::string& out, std::string_view value) {
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
}

// `name{a="x",b="y"} value\n`; `le`, when given, is the last label.
void AppendSample(std::string& out, std::string_view name, const MetricLabels& labels,
                  const std::string* le, double value) {
  out += name;
  if (!labels.empty() || le != nullptr) {
    out += '{';
    bool first = true;
    for (const auto& [label, label_value] : labels) {
      if (!first) out += ',';
      first = false;
      out += label;
      out += "=\"";
      AppendEscapedLabelValue(out, label_value);
      out += '"';
    }
    if (le != nullptr) {
      if (!first) out += ',';
      out += "le=\"";
      out += *le;
      out += '"';
    }
    out += '}';
  }
  out += ' ';
  out += FormatValue(value);
  out += '\n';
}

constexpr std::array<double, LatencyHistogram::kNumBounds> kLatencyBounds = [] {
  std::array<double, LatencyHistogram::kNumBounds> bounds{};
  double bound = 0.0005;
  for (double& b : bounds) {
    b = bound;
    bound *= 2;  // exact: doubling keeps 0.001, 0.002, ... the nearest doubles
  }
  return bounds;
}();

}  // namespace

uint64_t HistogramSnapshot::count() const {
  return std::accumulate(counts.begin(), counts.end(), uint64_t{0});
}

MetricsText::Family* MetricsText::FamilyFor(std::string_view name, std::string_view help,
                                            std::string_view type) {
  const bool valid = ValidMetricName(name);
  assert(valid && "invalid Prometheus metric name");
  if (!valid) return nullptr;
  auto it = family_index_.find(std::string(name));
  if (it == family_index_.end()) {
    family_index_.emplace(std::string(name), families_.size());
    families_.push_back(Family{std::string(name), std::string(type), std::string(help), {}});
    return &families_.back();
  }
  Family& family = families_[it->second];
  const bool same_type = family.type == type;
  assert(same_type && "metric family added again with another type");
  return same_type ? &family : nullptr;
}

void MetricsText::Sample(std::string_view name, std::string_view help, std::string_view type,
                         double value, const MetricLabels& labels) {
  const bool labels_valid = ValidLabels(labels);
  assert(labels_valid && "invalid Prometheus label name");
  if (!labels_valid) return;
  Family* family = FamilyFor(name, help, type);
  if (family == nullptr) return;
  AppendSample(family->samples, name, labels, nullptr, value);
}

void MetricsText::Counter(std::string_view name, std::string_view help, double value,
                          const MetricLabels& labels) {
  Sample(name, help, "counter", value, labels);
}

void MetricsText::Gauge(std::string_view name, std::string_view help, double value,
                        const MetricLabels& labels) {
  Sample(name, help, "gauge", value, labels);
}

void MetricsText::Histogram(std::string_view name, std::string_view help,
                            std::span<const double> upper_bounds, std::span<const uint64_t> counts,
                            double sum, const MetricLabels& labels) {
  const bool shape_valid = counts.size() == upper_bounds.size() + 1 &&
                           std::all_of(upper_bounds.begin(), upper_bounds.end(),
                                       [](double b) { return std::isfinite(b); }) &&
                           std::adjacent_find(upper_bounds.begin(), upper_bounds.end(),
                                              std::greater_equal<double>()) == upper_bounds.end();
  assert(shape_valid && "histogram bounds must be finite and increasing, with one more count");
  const bool labels_valid =
      ValidLabels(labels) &&
      std::none_of(labels.begin(), labels.end(), [](const auto& l) { return l.first == "le"; });
  assert(labels_valid && "invalid Prometheus label name for a histogram");
  if (!shape_valid || !labels_valid) return;
  Family* family = FamilyFor(name, help, "histogram");
  if (family == nullptr) return;

  const std::string bucket_name = std::string(name) + "_bucket";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < upper_bounds.size(); ++i) {
    cumulative += counts[i];
    const std::string le = FormatValue(upper_bounds[i]);
    AppendSample(family->samples, bucket_name, labels, &le, static_cast<double>(cumulative));
  }
  cumulative += counts.back();
  const std::string inf = "+Inf";
  AppendSample(family->samples, bucket_name, labels, &inf, static_cast<double>(cumulative));
  AppendSample(family->samples, std::string(name) + "_sum", labels, nullptr, sum);
  AppendSample(family->samples, std::string(name) + "_count", labels, nullptr,
               static_cast<double>(cumulative));
}

void MetricsText::Histogram(std::string_view name, std::string_view help,
                            const HistogramSnapshot& snapshot, const MetricLabels& labels) {
  Histogram(name, help, snapshot.upper_bounds, snapshot.counts, snapshot.sum, labels);
}

std::string MetricsText::Text() const {
  std::string out;
  for (const Family& family : families_) {
    if (!family.help.empty()) {
      out += "# HELP ";
      out += family.name;
      out += ' ';
      AppendEscapedHelp(out, family.help);
      out += '\n';
    }
    out += "# TYPE ";
    out += family.name;
    out += ' ';
    out += family.type;
    out += '\n';
    out += family.samples;
  }
  return out;
}

std::span<const double> LatencyHistogram::UpperBounds() { return kLatencyBounds; }

void LatencyHistogram::Observe(double seconds) {
  if (std::isnan(seconds)) return;
  seconds = std::max(seconds, 0.0);
  // The first bound >= seconds: buckets are `le`, upper bounds inclusive.
  const size_t bucket =
      static_cast<size_t>(std::lower_bound(kLatencyBounds.begin(), kLatencyBounds.end(), seconds) -
                          kLatencyBounds.begin());
  std::lock_guard<std::mutex> lock(mu_);
  ++counts_[bucket];
  sum_ += seconds;
}

HistogramSnapshot LatencyHistogram::Snapshot() const {
  HistogramSnapshot snapshot;
  snapshot.upper_bounds.assign(kLatencyBounds.begin(), kLatencyBounds.end());
  std::lock_guard<std::mutex> lock(mu_);
  snapshot.counts.assign(counts_.begin(), counts_.end());
  snapshot.sum = sum_;
  return snapshot;
}

}  // namespace kvtier
