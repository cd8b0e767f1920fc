// policy_bench: how fast every eviction policy replays a request trace, and
// whether its cost per request stays flat as the cache grows (DESIGN §5).
//
// For each cache size (in unit-size blocks) one deterministic trace is made:
// Zipf-distributed requests (exponent 0.9) over 10x as many distinct keys as
// the cache holds, drawn with rejection-inversion sampling from a fixed seed.
// Ranks are scattered over the key numbers by a fixed random permutation, as
// hashed block keys are, so no replay gains from hot keys sitting side by
// side in memory. The trace is made before any timing.
//
// Each policy replays it as a cache of that many one-byte blocks, exactly as
// the CacheManager drives one (hit: Touch; miss: Victims one at a time, with
// the missing key as `incoming`, while full; then Insert with no expiry),
// `now_ms` being the request's index. Presence is a byte per key number, so
// the harness costs next to nothing.
//
// Its peer, measured in the same run and on the same trace: the floor, an
// exact LRU made of the cheapest structure there is (an intrusive doubly
// linked list over an array indexed by key number: no hashing, no
// allocation). It is the physical limit of a recency policy on this machine;
// ratio_to_floor (a policy's requests/s over the floor's) is what the hashed,
// general interface costs on top. The floor runs before every policy and its
// median is used, since the machine is shared and noisy.
//
// Flatness: a policy's throughput at the largest size over the smallest. An
// O(1) policy stays near 1 except for what cache misses cost: the largest
// sizes spill out of L2 and L3, so even the floor drops; each policy's
// flatness is also printed over the floor's, which divides that out. At the
// largest size a short trace is partly the filling of an empty cache.
//
// Usage: policy_bench [--json] [--refs N] [--sizes A,B,...] [--policies P,Q,...]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cache/eviction_policy.h"

namespace kvtier {
namespace {

using Clock = std::chrono::steady_clock;

constexpr double kZipfExponent = 0.9;
constexpr uint64_t kKeysPerBlock = 10;  // distinct keys per block of cache
constexpr uint64_t kSeed = 20240917;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// Zipf ranks 1..n with P(k) proportional to k^-s, by rejection-inversion
// (Hörmann & Derflinger, "Rejection-inversion to generate variates from
// monotone discrete distributions", 1996): O(1) per sample, no table.
class ZipfSampler {
 public:
  ZipfSampler(uint64_t n, double s)
      : n_(static_cast<double>(n)),
        s_(s),
        h_integral_x1_(HIntegral(1.5) - 1.0),
        h_integral_n_(HIntegral(n_ + 0.5)),
        s_rej_(2.0 - HIntegralInverse(HIntegral(2.5) - H(2.0))) {}

  template <typename Rng>
  uint64_t operator()(Rng& rng) const {
    for (;;) {
      const double u01 = static_cast<double>(rng() >> 11) * 0x1.0p-53;
      const double u = h_integral_n_ + u01 * (h_integral_x1_ - h_integral_n_);
      const double x = HIntegralInverse(u);
      const double k = std::clamp(std::floor(x + 0.5), 1.0, n_);
      if (k - x <= s_rej_ || u >= HIntegral(k + 0.5) - H(k)) return static_cast<uint64_t>(k);
    }
  }

 private:
  // log1p(x) / x and expm1(x) / x, finite at 0.
  static double Helper1(double x) {
    return std::abs(x) > 1e-8 ? std::log1p(x) / x : 1 - x * (0.5 - x * (1.0 / 3 - 0.25 * x));
  }
  static double Helper2(double x) {
    return std::abs(x) > 1e-8 ? std::expm1(x) / x : 1 + x * 0.5 * (1 + x / 3 * (1 + 0.25 * x));
  }
  double H(double x) const { return std::exp(-s_ * std::log(x)); }
  double HIntegral(double x) const {
    const double lx = std::log(x);
    return Helper2((1 - s_) * lx) * lx;
  }
  double HIntegralInverse(double x) const {
    const double t = std::max(x * (1 - s_), -1.0);
    return std::exp(Helper1(t) * x);
  }

  const double n_;
  const double s_;
  const double h_integral_x1_;
  const double h_integral_n_;
  const double s_rej_;
};

// `refs` requests over keys 0..keys-1.
std::vector<uint32_t> MakeTrace(uint64_t keys, uint64_t refs) {
  std::mt19937_64 rng(kSeed);
  std::vector<uint32_t> key_of_rank(keys);
  std::iota(key_of_rank.begin(), key_of_rank.end(), 0u);
  std::shuffle(key_of_rank.begin(), key_of_rank.end(), rng);
  const ZipfSampler zipf(keys, kZipfExponent);
  std::vector<uint32_t> trace(refs);
  for (auto& k : trace) k = key_of_rank[zipf(rng) - 1];
  return trace;
}

struct Run {
  double mrefs_per_s = 0;
  uint64_t hits = 0;
};

// Replays `trace` through `policy` as a cache of `capacity` one-byte blocks.
Run ReplayPolicy(EvictionPolicy& policy, uint64_t capacity, uint64_t keys,
                 const std::vector<uint32_t>& trace) {
  std::vector<uint8_t> present(keys, 0);
  std::vector<BlockKey> out;
  out.reserve(4);
  VictimQuery query;
  const PolicyBlock block{1, 1.0, kNoExpiry};
  uint64_t held = 0, hits = 0;
  const auto t0 = Clock::now();
  for (size_t i = 0; i < trace.size(); ++i) {
    const uint32_t k = trace[i];
    const BlockKey key{0, k};
    if (present[k]) {
      ++hits;
      policy.Touch(key);
      continue;
    }
    query.incoming = &key;
    query.now_ms = static_cast<int64_t>(i);
    while (held >= capacity) {
      out.clear();
      if (policy.Victims(query, &out) != 1) {
        std::fprintf(stderr, "policy_bench: %s gave no victim with %llu blocks held\n",
                     std::string(policy.Name()).c_str(), static_cast<unsigned long long>(held));
        std::exit(1);
      }
      present[out[0].lo] = 0;
      --held;
    }
    policy.Insert(key, block);
    present[k] = 1;
    ++held;
  }
  const double secs = Seconds(t0, Clock::now());
  if (policy.size() != held) {
    std::fprintf(stderr, "policy_bench: %s holds %zu blocks, the cache %llu\n",
                 std::string(policy.Name()).c_str(), policy.size(),
                 static_cast<unsigned long long>(held));
    std::exit(1);
  }
  return {static_cast<double>(trace.size()) / secs / 1e6, hits};
}

// The floor: exact LRU as an intrusive doubly linked list over an array
// indexed by key number; node `keys` is the sentinel (next = most recent,
// prev = least recent).
Run ReplayFloor(uint64_t capacity, uint64_t keys, const std::vector<uint32_t>& trace) {
  struct Node {
    uint32_t prev, next;
  };
  const uint32_t head = static_cast<uint32_t>(keys);
  std::vector<Node> nodes(keys + 1);
  std::vector<uint8_t> present(keys, 0);
  nodes[head] = {head, head};
  auto unlink = [&](uint32_t k) {
    nodes[nodes[k].prev].next = nodes[k].next;
    nodes[nodes[k].next].prev = nodes[k].prev;
  };
  auto push_front = [&](uint32_t k) {
    const uint32_t first = nodes[head].next;
    nodes[k] = {head, first};
    nodes[first].prev = k;
    nodes[head].next = k;
  };
  uint64_t held = 0, hits = 0;
  const auto t0 = Clock::now();
  for (const uint32_t k : trace) {
    if (present[k]) {
      ++hits;
      unlink(k);
      push_front(k);
      continue;
    }
    if (held >= capacity) {
      const uint32_t victim = nodes[head].prev;
      unlink(victim);
      present[victim] = 0;
      --held;
    }
    push_front(k);
    present[k] = 1;
    ++held;
  }
  const double secs = Seconds(t0, Clock::now());
  return {static_cast<double>(trace.size()) / secs / 1e6, hits};
}

template <typename T, typename Parse>
std::vector<T> SplitList(const std::string& s, Parse parse) {
  std::vector<T> out;
  size_t start = 0;
  while (start <= s.size()) {
    const size_t comma = std::min(s.find(',', start), s.size());
    if (comma > start) out.push_back(parse(s.substr(start, comma - start)));
    start = comma + 1;
  }
  return out;
}

// A positive decimal count; 0 when `s` is not one.
uint64_t ParseCount(const std::string& s) {
  char* end = nullptr;
  const uint64_t v = std::strtoull(s.c_str(), &end, 10);
  return !s.empty() && s[0] != '-' && *end == '\0' ? v : 0;
}

int Usage() {
  std::fprintf(stderr,
               "usage: policy_bench [--json] [--refs N] [--sizes A,B,...] "
               "[--policies P,Q,...]\n");
  return 2;
}

int Main(int argc, char** argv) {
  bool json = false;
  uint64_t refs = 4'000'000;
  std::vector<uint64_t> sizes = {10'000, 100'000, 1'000'000};
  std::vector<std::string> policies = EvictionPolicyNames();
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--json") {
      json = true;
    } else if (a == "--refs" && has_value) {
      refs = ParseCount(argv[++i]);
    } else if (a == "--sizes" && has_value) {
      sizes = SplitList<uint64_t>(argv[++i], ParseCount);
    } else if (a == "--policies" && has_value) {
      policies = SplitList<std::string>(argv[++i], [](const std::string& x) { return x; });
    } else {
      return Usage();
    }
  }
  for (const auto& p : policies) {
    if (NewEvictionPolicy(p, PolicyOptions{1}) == nullptr) {
      std::fprintf(stderr, "policy_bench: unknown policy '%s'\n", p.c_str());
      return 2;
    }
  }
  for (uint64_t s : sizes) {
    if (s == 0 || s * kKeysPerBlock >= std::numeric_limits<uint32_t>::max()) {
      std::fprintf(stderr, "policy_bench: size %llu out of range\n",
                   static_cast<unsigned long long>(s));
      return 2;
    }
  }
  if (refs == 0 || sizes.empty() || policies.empty()) return Usage();
  std::sort(sizes.begin(), sizes.end());
  sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());

  std::printf(
      "trace: %llu requests, Zipf %.1f over %llux the cache size distinct keys, one-byte blocks\n",
      static_cast<unsigned long long>(refs), kZipfExponent,
      static_cast<unsigned long long>(kKeysPerBlock));
  std::printf("%-9s %10s %10s %9s %9s\n", "policy", "blocks", "Mreq/s", "hit", "vs floor");
  nlohmann::json results = nlohmann::json::array(), floor = nlohmann::json::array();
  std::map<std::string, std::map<uint64_t, double>> mrefs;  // policy -> size -> Mreq/s
  std::map<uint64_t, double> floor_mrefs;
  bool lru_matches_floor = true;
  for (const uint64_t size : sizes) {
    const uint64_t keys = size * kKeysPerBlock;
    const std::vector<uint32_t> trace = MakeTrace(keys, refs);
    const double n = static_cast<double>(refs);
    // The floor runs before every policy (and once after the last); the
    // median is the peer.
    std::vector<double> floor_runs;
    uint64_t floor_hits = 0;
    auto run_floor = [&] {
      const Run f = ReplayFloor(size, keys, trace);
      floor_runs.push_back(f.mrefs_per_s);
      floor_hits = f.hits;
    };
    std::vector<std::pair<std::string, Run>> runs;
    for (const auto& name : policies) {
      run_floor();
      auto policy = NewEvictionPolicy(name, PolicyOptions{size});
      runs.emplace_back(name, ReplayPolicy(*policy, size, keys, trace));
      policy.reset();
    }
    run_floor();
    const double f = Median(floor_runs);
    floor_mrefs[size] = f;
    std::printf("%-9s %10llu %10.2f %9.4f %9.3f\n", "floor", static_cast<unsigned long long>(size),
                f, static_cast<double>(floor_hits) / n, 1.0);
    floor.push_back({{"size_blocks", size},
                     {"mrefs_per_s", f},
                     {"hit_ratio", static_cast<double>(floor_hits) / n}});
    for (const auto& [name, r] : runs) {
      if (name == "lru" && r.hits != floor_hits) lru_matches_floor = false;
      const double hit_ratio = static_cast<double>(r.hits) / n;
      std::printf("%-9s %10llu %10.2f %9.4f %9.3f\n", name.c_str(),
                  static_cast<unsigned long long>(size), r.mrefs_per_s, hit_ratio,
                  r.mrefs_per_s / f);
      mrefs[name][size] = r.mrefs_per_s;
      results.push_back({{"policy", name},
                         {"size_blocks", size},
                         {"mrefs_per_s", r.mrefs_per_s},
                         {"hit_ratio", hit_ratio},
                         {"ratio_to_floor", r.mrefs_per_s / f}});
    }
    std::fflush(stdout);
  }

  const uint64_t lo = sizes.front(), hi = sizes.back();
  const double floor_flatness = floor_mrefs[hi] / floor_mrefs[lo];
  std::printf(
      "\nflatness: Mreq/s at %llu blocks over %llu blocks (1 = flat), and that over the "
      "floor's\n",
      static_cast<unsigned long long>(hi), static_cast<unsigned long long>(lo));
  std::printf("  %-9s %7.3f\n", "floor", floor_flatness);
  nlohmann::json flatness = nlohmann::json::object(), flatness_vs_floor = nlohmann::json::object();
  for (const auto& name : policies) {
    const double r = mrefs[name][hi] / mrefs[name][lo];
    flatness[name] = r;
    flatness_vs_floor[name] = r / floor_flatness;
    std::printf("  %-9s %7.3f %7.3f\n", name.c_str(), r, r / floor_flatness);
  }
  std::printf(
      "note: an O(1) policy loses throughput as the cache grows only to cache misses: the\n"
      "larger caches no longer fit in L2/L3, so even the floor drops; the second column\n"
      "divides that out. gdsf and ttl-cost keep ordered sets and are O(log n) by design.\n");
  if (refs < 10 * hi) {
    std::printf(
        "note: at %llu blocks the trace has only %.1f requests per block, so much of it fills\n"
        "the empty cache (inserts with no eviction) and policies differ little there.\n",
        static_cast<unsigned long long>(hi), static_cast<double>(refs) / static_cast<double>(hi));
  }
  if (!lru_matches_floor) {
    std::printf("WARNING: lru's hits differ from the floor's; both are exact LRU\n");
  }

  if (json) {
    const nlohmann::json out = {{"bench", "policy_bench"},
                                {"refs", refs},
                                {"results", results},
                                {"floor", floor},
                                {"flatness", flatness},
                                {"floor_flatness", floor_flatness},
                                {"lru_matches_floor", lru_matches_floor}};
    std::cout << out.dump() << std::endl;
  }
  return lru_matches_floor ? 0 : 1;
}

}  // namespace
}  // namespace kvtier

int main(int argc, char** argv) { return kvtier::Main(argc, argv); }
