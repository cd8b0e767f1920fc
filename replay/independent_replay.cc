#include "replay/independent_replay.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <utility>
#include <vector>

#include "cache/eviction_policy.h"
#include "replay/belady.h"

namespace kvtier {
namespace {

BlockKey KeyOf(uint32_t id) { return BlockKey{0, id}; }

// Calls `visit(request, index in request, reference number)` for every block
// reference, and counts references and tokens into `r`.
template <typename Visit>
void ForEachReference(const Trace& t, ReplayResult* r, Visit visit) {
  for (const TraceRequest& req : t.requests) {
    r->tokens += req.input_tokens;
    r->block_refs += req.num_blocks;
    for (uint32_t i = 0; i < req.num_blocks; ++i) visit(req, i, size_t{req.first_block} + i);
  }
}

void ReplayOnline(const Trace& t, EvictionPolicy& policy, uint64_t size, ReplayResult* r) {
  std::vector<uint8_t> cached(t.distinct_blocks, 0);
  uint64_t used = 0;
  std::vector<BlockKey> victims;
  ForEachReference(t, r, [&](const TraceRequest& req, uint32_t i, size_t ref) {
    const uint32_t id = t.blocks[ref];
    const BlockKey key = KeyOf(id);
    if (cached[id]) {
      ++r->block_hits;
      r->hit_tokens += t.BlockTokens(req, i);
      policy.Touch(key);
      return;
    }
    while (used >= size) {
      victims.clear();
      VictimQuery q;
      q.incoming = &key;
      if (policy.Victims(q, &victims) == 0) break;
      for (const BlockKey& v : victims) {
        cached[v.lo] = 0;
        --used;
      }
    }
    PolicyBlock block;
    if (i > 0) block.parent = KeyOf(t.blocks[ref - 1]);
    block.depth = i;
    policy.Insert(key, block);
    cached[id] = 1;
    ++used;
  });
}

void ReplayBelady(const Trace& t, uint64_t size, ReplayResult* r) {
  BeladyCache belady(t, size);
  ForEachReference(t, r, [&](const TraceRequest& req, uint32_t i, size_t ref) {
    if (!belady.Use(ref)) return;
    ++r->block_hits;
    r->hit_tokens += t.BlockTokens(req, i);
  });
}

}  // namespace

Result<ReplayResult> ReplayTraceIndependent(const Trace& trace, const std::string& policy,
                                            uint64_t size_blocks) {
  if (size_blocks == 0) return Status::InvalidArgument("a tier of 0 blocks caches nothing");
  ReplayResult r;
  r.policy = policy;
  r.size_blocks = size_blocks;
  const uint64_t size = std::min<uint64_t>(size_blocks, trace.distinct_blocks + 1ull);
  const auto t0 = std::chrono::steady_clock::now();
  if (policy == "belady") {
    ReplayBelady(trace, size, &r);
  } else {
    PolicyOptions po;
    po.capacity_bytes = size;
    std::unique_ptr<EvictionPolicy> p = NewEvictionPolicy(policy, po);
    if (p == nullptr) return Status::InvalidArgument("unknown eviction policy '" + policy + "'");
    ReplayOnline(trace, *p, size, &r);
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace kvtier
