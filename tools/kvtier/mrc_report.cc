// `kvtier stats --mrc`: the daemon's estimated LRU miss-ratio curve
// (StatsResponse.mrc, cache/mrc.h) as a table of sizes, and each tier's
// what-if: the hit ratio of the tiers up to and including it as they are,
// with each --mrc-add size more in it, and with it doubled.
#include <cinttypes>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tools/kvtier/command.h"

namespace kvtier::cli {
namespace {

using nlohmann::json;

// The curve is piecewise linear from (0, 0); past its last point, flat.
double HitRatioAt(const v1::MrcStats& m, uint64_t bytes) {
  const auto& c = m.curve();
  if (c.empty()) return 0;
  if (bytes >= c.rbegin()->size_bytes()) return c.rbegin()->hit_ratio();
  for (int i = 1; i < c.size(); ++i) {
    if (bytes >= c[i].size_bytes()) continue;
    const v1::MrcPoint& a = c[i - 1];
    const v1::MrcPoint& b = c[i];
    if (b.size_bytes() <= a.size_bytes()) return b.hit_ratio();
    const double f = static_cast<double>(bytes - a.size_bytes()) /
                     static_cast<double>(b.size_bytes() - a.size_bytes());
    return a.hit_ratio() + f * (b.hit_ratio() - a.hit_ratio());
  }
  return c.rbegin()->hit_ratio();
}

// 1536 -> "1.5 KiB", 1073741824 -> "1 GiB".
std::string HumanBytes(uint64_t bytes) {
  static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = static_cast<double>(bytes);
  int unit = 0;
  while (v >= 1024 && unit < 6) {
    v /= 1024;
    ++unit;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf,
                v == static_cast<double>(static_cast<uint64_t>(v)) ? "%.0f %s" : "%.1f %s", v,
                kUnits[unit]);
  return buf;
}

// --mrc-add: sizes (each > 0), default 1G.
Result<std::vector<uint64_t>> AddedSizes(const FlagSet& flags) {
  const std::string list = flags.Get("mrc-add", "1G");
  std::vector<uint64_t> sizes;
  for (size_t start = 0;;) {
    const size_t end = std::min(list.find(',', start), list.size());
    const std::string item = list.substr(start, end - start);
    Result<uint64_t> b = ParseBytes(item);
    if (!b.ok()) {
      return Status::InvalidArgument("--mrc-add: '" + item + "' is not a size (e.g. 512M, 1G, 2T)");
    }
    if (*b == 0) return Status::InvalidArgument("--mrc-add: a size must be more than 0");
    sizes.push_back(*b);
    if (end == list.size()) break;
    start = end + 1;
  }
  return sizes;
}

// The sizes the table shows: powers of two from the curve's first rise to
// where it levels off (every other power, or every fourth, past 24 rows).
std::vector<uint64_t> TableSizes(const v1::MrcStats& m) {
  std::vector<uint64_t> sizes;
  if (m.curve_size() < 2) return sizes;
  uint64_t first = 0;
  for (const v1::MrcPoint& p : m.curve()) {
    if (p.hit_ratio() > 0) {
      first = p.size_bytes();
      break;
    }
  }
  const uint64_t last = m.curve().rbegin()->size_bytes();
  if (first == 0) first = last;
  int lo = 0, hi = 0;
  while (lo < 62 && (uint64_t{2} << lo) <= first) ++lo;
  while (hi < 62 && (uint64_t{1} << hi) < last) ++hi;
  const int step = (hi - lo) / 24 + 1;
  for (int e = lo; e <= hi; e += step) sizes.push_back(uint64_t{1} << e);
  return sizes;
}

struct TierWhatIf {
  std::string name;
  uint64_t capacity_bytes = 0;
  uint64_t through_bytes = 0;  // tiers 0..this one
  double hit_ratio = 0;
  std::vector<std::pair<uint64_t, double>> added;  // more bytes in it -> hit ratio
};

std::vector<TierWhatIf> WhatIfs(const v1::StatsResponse& s, const std::vector<uint64_t>& added) {
  std::vector<TierWhatIf> out;
  uint64_t through = 0;
  for (const v1::TierStats& t : s.tiers()) {
    through += t.capacity_bytes();
    TierWhatIf w{t.name(), t.capacity_bytes(), through, HitRatioAt(s.mrc(), through), {}};
    for (uint64_t a : added) w.added.emplace_back(a, HitRatioAt(s.mrc(), through + a));
    w.added.emplace_back(t.capacity_bytes(), HitRatioAt(s.mrc(), through + t.capacity_bytes()));
    out.push_back(std::move(w));
  }
  return out;
}

json MrcJson(const v1::StatsResponse& s, const std::vector<TierWhatIf>& tiers) {
  const v1::MrcStats& m = s.mrc();
  json curve = json::array();
  for (const v1::MrcPoint& p : m.curve()) curve.push_back({p.size_bytes(), p.hit_ratio()});
  json tier_rows = json::array();
  for (const TierWhatIf& t : tiers) {
    json added = json::array();
    for (const auto& [bytes, ratio] : t.added) {
      added.push_back({{"added_bytes", bytes}, {"hit_ratio", ratio}});
    }
    tier_rows.push_back({{"name", t.name},
                         {"capacity_bytes", t.capacity_bytes},
                         {"through_bytes", t.through_bytes},
                         {"hit_ratio", t.hit_ratio},
                         {"added", added}});
  }
  return {{"ok", true},
          {"mrc",
           {{"uses", m.uses()},
            {"sampled_uses", m.sampled_uses()},
            {"sampling_rate", m.sampling_rate()},
            {"sampled_blocks", m.sampled_blocks()},
            {"max_sampled_blocks", m.max_sampled_blocks()},
            {"max_hit_ratio", m.curve().empty() ? 0.0 : m.curve().rbegin()->hit_ratio()},
            {"curve", curve},
            {"tiers", tier_rows}}}};
}

std::string MrcText(const v1::StatsResponse& s, const std::vector<TierWhatIf>& tiers) {
  const v1::MrcStats& m = s.mrc();
  std::ostringstream text;
  char line[160];
  std::snprintf(line, sizeof line,
                "miss-ratio curve (LRU, each block use on its own): %" PRIu64 " uses, %" PRIu64
                " of them sampled (rate %.4f, %" PRIu64 " of at most %" PRIu64 " blocks tracked)\n",
                m.uses(), m.sampled_uses(), m.sampling_rate(), m.sampled_blocks(),
                m.max_sampled_blocks());
  text << line;
  if (m.curve_size() < 2) {
    text << "no block has been used twice yet: every size hits nothing so far\n";
  } else {
    text << "  cache size   hit ratio\n";
    for (uint64_t size : TableSizes(m)) {
      std::snprintf(line, sizeof line, "  %10s   %.4f\n", HumanBytes(size).c_str(),
                    HitRatioAt(m, size));
      text << line;
    }
    std::snprintf(line, sizeof line, "  %10s   %.4f (every use but each block's first)\n",
                  "unbounded", m.curve().rbegin()->hit_ratio());
    text << line;
  }
  text << "tiers (the hit ratio of the tiers up to and including each, as it is, with more"
          " bytes in it, and doubled):\n";
  for (const TierWhatIf& t : tiers) {
    std::snprintf(line, sizeof line, "  %-8s %10s (through it %s): %.4f", t.name.c_str(),
                  HumanBytes(t.capacity_bytes).c_str(), HumanBytes(t.through_bytes).c_str(),
                  t.hit_ratio);
    text << line;
    for (size_t i = 0; i < t.added.size(); ++i) {
      const bool doubled = i + 1 == t.added.size();
      std::snprintf(line, sizeof line, "   +%s%s: %.4f", HumanBytes(t.added[i].first).c_str(),
                    doubled ? " (2x)" : "", t.added[i].second);
      text << line;
    }
    text << "\n";
  }
  return text.str();
}

}  // namespace

Exit StatsMrc(const Command& c) {
  Result<std::vector<uint64_t>> added = AddedSizes(c.flags);
  if (!added.ok()) return UsageError(added.status());
  KVTIER_ASSIGN_OR_RETURN(const v1::StatsResponse s, c.client.Stats());
  const std::vector<TierWhatIf> tiers = WhatIfs(s, *added);
  c.out.Print(MrcJson(s, tiers), MrcText(s, tiers));
  return {};
}

}  // namespace kvtier::cli
