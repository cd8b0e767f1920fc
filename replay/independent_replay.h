// Replaying a trace with independent block references: every block
// reference is a hit when the block is cached, whether or not the blocks
// before it in its request are. This is how block caches outside LLM serving
// (and libCacheSim) count, so a policy's hits here can be compared with
// another simulator's per reference (bench/peer/libcachesim_check.py). The
// prefix replay (replay/policy_replay.h) is what an engine gets; this one is
// for cross-checks and for seeing how much the prefix rule costs a policy.
//
// The references are the trace's blocks in order (request by request, each
// request's blocks in prefix order), each of one unit of size. A hit is
// touched; a miss evicts the policy's victims while the tier is full, then
// is inserted, with its parent and depth in the chain as the prefix replay
// gives them. "belady" is Belady's MIN with bypass on the same references.
//
// Deterministic: the same trace, policy and size give the same counts.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"
#include "replay/policy_replay.h"
#include "replay/trace.h"

namespace kvtier {

// `policy`: a name of EvictionPolicyNames() or "belady". The result's
// block_hits counts every cached reference (hit_tokens: their tokens).
// kInvalidArgument for an unknown policy or a size of 0.
Result<ReplayResult> ReplayTraceIndependent(const Trace& trace, const std::string& policy,
                                            uint64_t size_blocks);

}  // namespace kvtier
