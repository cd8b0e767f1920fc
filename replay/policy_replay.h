// Replaying a trace through one tier's eviction policy (DESIGN §5, §11).
//
// Prefix semantics, as the engine looks blocks up: a request hits only the
// leading run of its blocks that are cached, and its hit tokens are those
// blocks' tokens. Then every block of the request is used: a cached one is
// touched, a missing one inserted, evicting the policy's victims while the
// tier is full. Sizes are in blocks (each block weighs one).
//
// "belady" is the offline optimum for block hits (Belady's MIN with bypass):
// on a miss with a full tier it evicts the cached block whose next use is
// farthest, or keeps the incoming one out when its own is. In traces of
// chained prefix keys a block's next use is never before its parent's, so
// what it keeps is prefix-closed and its block hits are prefix hits.
//
// Admission (cache/admission.h): on a miss that needs room, the filter is
// shown the victim the policy would take (asked for with an `eligible` that
// refuses it, so it stays in place) and decides whether the block is stored;
// a block kept out is not inserted, and the victim stays. The filter sees
// every reference, hit or miss, and every insertion and eviction.
//
// "oracle" (kOracleAdmission) is an offline filter, a bound for admission
// alone: it admits a block exactly when the trace uses it again, knowing
// whether but not when. With an online eviction policy it says how far a
// perfect reuse predictor would take that policy; Belady, which knows when,
// is the bound for both. Replays only (a daemon cannot see the future), so it
// is not in AdmissionFilterNames().
//
// Deterministic: the same trace, policy, admission and size give the same
// counts.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "common/status.h"
#include "replay/trace.h"

namespace kvtier {

inline constexpr uint64_t kInfiniteBlocks = std::numeric_limits<uint64_t>::max();
inline constexpr const char* kOracleAdmission = "oracle";

struct ReplayResult {
  std::string policy;
  std::string admission = "none";  // the admission filter's name
  uint64_t size_blocks = 0;        // kInfiniteBlocks for an unbounded tier
  uint64_t block_refs = 0;
  uint64_t block_hits = 0;  // blocks inside each request's leading cached run
  uint64_t tokens = 0;      // input tokens
  uint64_t hit_tokens = 0;  // of them, in hit blocks
  double seconds = 0;       // wall time of the replay

  double hit_ratio() const { return block_refs ? double(block_hits) / double(block_refs) : 0; }
  double token_hit_ratio() const { return tokens ? double(hit_tokens) / double(tokens) : 0; }
  // "lru", or "lru+tinylfu" with a filter.
  std::string name() const { return admission == "none" ? policy : policy + "+" + admission; }
};

// `policy`: a name of EvictionPolicyNames() or "belady"; `admission`: a name
// of AdmissionFilterNames() or kOracleAdmission ("none" for belady, which
// decides admission itself). kInvalidArgument for an unknown policy or filter, a filter with
// belady, or a size of 0.
Result<ReplayResult> ReplayTrace(const Trace& trace, const std::string& policy,
                                 uint64_t size_blocks, const std::string& admission = "none");

// Sizes as a user writes them: a block count ("4096"), a fraction of the
// footprint ("0.25", in (0, 1]) or "inf"; comma-separated.
Result<std::vector<uint64_t>> ParseTraceSizes(const std::string& list, uint64_t footprint);

}  // namespace kvtier
