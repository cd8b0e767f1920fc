#include "replay/policy_replay.h"

#include <chrono>
#include <cmath>
#include <memory>
#include <optional>
#include <utility>

#include "cache/admission.h"
#include "cache/eviction_policy.h"
#include "replay/belady.h"

namespace kvtier {
namespace {

BlockKey KeyOf(uint32_t id) { return BlockKey{0, id}; }

// Prefetch hints (EvictionPolicy::Prefetch, AdmissionFilter::Prefetch): the
// replay tells the policy and the filter of the key kPrefetchDistance
// references ahead, so that the cache misses of their hashed tables overlap
// the work in between. Only for tiers of kPrefetchFromBlocks or more: below
// that their tables (some 30 bytes a block) fit in a core's L2, and the
// hints cost more than they save. On the Zen 4 (1 MiB of L2), all policies
// and filters on the three traces, medians of 5 runs against no hints: 0.85-
// 0.97 of the speed at 139-18K blocks, 1.01 at 36K, 1.09 at 91K (up to 2x
// for wtinylfu+prefix there while the machine was loaded).
constexpr size_t kPrefetchDistance = 8;
constexpr uint64_t kPrefetchFromBlocks = 32768;

// The leading cached run of a request, and its tokens, counted into `r`.
template <typename Cached>
void CountPrefixHits(const Trace& t, const TraceRequest& req, const Cached& cached,
                     ReplayResult* r) {
  r->block_refs += req.num_blocks;
  r->tokens += req.input_tokens;
  for (uint32_t i = 0; i < req.num_blocks && cached(t.blocks[req.first_block + i]); ++i) {
    ++r->block_hits;
    r->hit_tokens += t.BlockTokens(req, i);
  }
}

// kOracleAdmission: admits the block of the current reference exactly when
// a later reference uses it again (whether, not when). It hears of every
// reference in trace order (Record), which is how it knows which one is
// current: the trace's blocks are its requests' blocks, in request order.
class ReuseOracle final : public AdmissionFilter {
 public:
  explicit ReuseOracle(const Trace& t) : used_again_(t.blocks.size(), 0) {
    std::vector<uint8_t> seen(t.distinct_blocks, 0);
    for (size_t i = t.blocks.size(); i-- > 0;) {
      used_again_[i] = seen[t.blocks[i]];
      seen[t.blocks[i]] = 1;
    }
  }
  std::string_view Name() const override { return kOracleAdmission; }
  void Record(const BlockRef& /*ref*/, bool /*hit*/) override { ++refs_; }
  bool Admit(const BlockRef& /*ref*/, const BlockKey* /*victim*/) override {
    return used_again_[refs_ - 1] != 0;
  }
  bool ComparesVictim() const override { return false; }

 private:
  std::vector<uint8_t> used_again_;  // per reference: its block is used again later
  size_t refs_ = 0;                  // references heard of so far
};

// `admission` null: every miss is stored (no filter, and no victim peeking).
void ReplayOnline(const Trace& t, EvictionPolicy& policy, AdmissionFilter* admission, uint64_t size,
                  ReplayResult* r) {
  std::vector<uint8_t> cached(t.distinct_blocks, 0);
  uint64_t used = 0;
  std::vector<BlockKey> victims;
  const bool prefetch = size >= kPrefetchFromBlocks;
  for (const TraceRequest& req : t.requests) {
    CountPrefixHits(
        t, req, [&](uint32_t id) { return cached[id] != 0; }, r);
    for (uint32_t i = 0; i < req.num_blocks; ++i) {
      const uint32_t id = t.blocks[req.first_block + i];
      const BlockKey key = KeyOf(id);
      PolicyBlock block;
      if (i > 0) block.parent = KeyOf(t.blocks[req.first_block + i - 1]);
      block.depth = i;
      const BlockRef ref{key, block, i + 1 == req.num_blocks};
      if (const size_t ahead = req.first_block + i + kPrefetchDistance;
          prefetch && ahead < t.blocks.size()) {
        policy.Prefetch(KeyOf(t.blocks[ahead]));
        if (admission != nullptr) admission->Prefetch(KeyOf(t.blocks[ahead]));
      }
      if (admission != nullptr) admission->Record(ref, cached[id] != 0);
      if (cached[id]) {
        policy.Touch(key);
        continue;
      }
      if (admission != nullptr && used >= size) {
        const std::optional<BlockKey> victim =
            admission->ComparesVictim() ? PeekVictim(policy, key) : std::nullopt;
        if (!admission->Admit(ref, victim ? &*victim : nullptr)) continue;
      }
      while (used >= size) {
        victims.clear();
        VictimQuery q;
        q.incoming = &key;
        if (policy.Victims(q, &victims) == 0) break;
        for (const BlockKey& v : victims) {
          cached[v.lo] = 0;
          --used;
          if (admission != nullptr) admission->Evicted(v);
        }
      }
      policy.Insert(key, block);
      cached[id] = 1;
      ++used;
      if (admission != nullptr) admission->Inserted(ref);
    }
  }
}

void ReplayBelady(const Trace& t, uint64_t size, ReplayResult* r) {
  BeladyCache belady(t, size);
  for (const TraceRequest& req : t.requests) {
    CountPrefixHits(
        t, req, [&](uint32_t id) { return belady.Cached(id); }, r);
    for (uint32_t i = 0; i < req.num_blocks; ++i) belady.Use(req.first_block + i);
  }
}

}  // namespace

Result<ReplayResult> ReplayTrace(const Trace& trace, const std::string& policy,
                                 uint64_t size_blocks, const std::string& admission) {
  if (size_blocks == 0) return Status::InvalidArgument("a tier of 0 blocks caches nothing");
  ReplayResult r;
  r.policy = policy;
  r.admission = admission;
  r.size_blocks = size_blocks;
  const uint64_t size = std::min<uint64_t>(size_blocks, trace.distinct_blocks + 1ull);
  const auto t0 = std::chrono::steady_clock::now();
  if (policy == "belady") {
    if (admission != "none") {
      return Status::InvalidArgument(
          "belady is the offline bound and decides admission itself; "
          "it takes no admission filter ('" +
          admission + "')");
    }
    ReplayBelady(trace, size, &r);
  } else {
    PolicyOptions po;
    po.capacity_bytes = size;
    std::unique_ptr<EvictionPolicy> p = NewEvictionPolicy(policy, po);
    if (p == nullptr) return Status::InvalidArgument("unknown eviction policy '" + policy + "'");
    if (admission == kOracleAdmission) {
      ReuseOracle oracle(trace);
      ReplayOnline(trace, *p, &oracle, size, &r);
    } else {
      AdmissionOptions ao;
      ao.capacity_blocks = size;
      std::unique_ptr<AdmissionFilter> filter = NewAdmissionFilter(admission, ao);
      if (filter == nullptr) {
        return Status::InvalidArgument("unknown admission filter '" + admission + "'");
      }
      ReplayOnline(trace, *p, admission == "none" ? nullptr : filter.get(), size, &r);
    }
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

Result<std::vector<uint64_t>> ParseTraceSizes(const std::string& list, uint64_t footprint) {
  std::vector<uint64_t> out;
  size_t start = 0;
  while (start <= list.size()) {
    size_t end = list.find(',', start);
    if (end == std::string::npos) end = list.size();
    const std::string s = list.substr(start, end - start);
    start = end + 1;
    if (s == "inf") {
      out.push_back(kInfiniteBlocks);
      continue;
    }
    char* rest = nullptr;
    if (s.find_first_of(".eE") != std::string::npos) {
      const double f = std::strtod(s.c_str(), &rest);
      if (s.empty() || *rest != '\0' || !(f > 0 && f <= 1)) {
        return Status::InvalidArgument("size '" + s + "': a fraction must be in (0, 1]");
      }
      out.push_back(std::max<uint64_t>(1, static_cast<uint64_t>(std::llround(f * footprint))));
      continue;
    }
    const unsigned long long v = std::strtoull(s.c_str(), &rest, 10);
    if (s.empty() || *rest != '\0' || s[0] == '-' || v == 0) {
      return Status::InvalidArgument("size '" + s +
                                     "': give blocks (a positive integer), a fraction or inf");
    }
    out.push_back(v);
    if (end == list.size()) break;
  }
  if (out.empty()) return Status::InvalidArgument("no sizes given");
  return out;
}

}  // namespace kvtier
