// The namespace the prefix-hashing and namespace tests start from: a real
// model id, 16-token blocks, every other field its default.
#pragma once

#include "cache/namespace.h"

namespace kvtier {

inline Namespace TestNamespace() {
  Namespace ns;
  ns.model_id = "stories260K";
  ns.block_tokens = 16;
  return ns;
}

}  // namespace kvtier
