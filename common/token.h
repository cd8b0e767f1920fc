// TokenId: a token of a model's vocabulary, shared by the cache (which hashes
// token ids into block keys) and the model (which embeds and samples them).
#pragma once

#include <cstdint>

namespace kvtier {

using TokenId = int32_t;

}  // namespace kvtier
