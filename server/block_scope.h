// BlockScope: a caller's namespace and its block-key scope on the block API
// (DESIGN §2, server/cache_secret.h).
//
// The namespace is the daemon's default with the fields a request gives, and
// always the caller's secret salt (a client salt only refines it within the
// tenant). Keys cross the API masked: a client sees Visible(stored key) and
// names a block by it; Stored() maps it back. Another tenant, or the same
// tenant in another namespace, gets another mask, so its calls by key never
// reach these blocks.
#pragma once

#include "cache/namespace.h"
#include "common/block_key.h"
#include "common/status.h"
#include "proto/kvtier.pb.h"
#include "server/auth.h"
#include "server/cache_secret.h"

namespace kvtier {

struct BlockScope {
  Namespace ns;  // with the caller's salt
  BlockKey mask;
  BlockKey Stored(const BlockKey& visible) const { return ScopeKey(visible, mask); }
  BlockKey Visible(const BlockKey& stored) const { return ScopeKey(stored, mask); }
};

// `defaults` with the fields of `request` (when `present`; empty or zero
// fields keep the default) and `caller`'s salt, validated. kInvalidArgument
// naming the field that is wrong.
Result<BlockScope> ResolveBlockScope(const Namespace& defaults, const CacheSecret& secret,
                                     const Principal& caller, bool present,
                                     const v1::Namespace& request);

}  // namespace kvtier
