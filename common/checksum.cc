#include "common/checksum.h"

#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <memory>

namespace kvtier {
namespace {

// Large enough to amortise the streaming state, small enough to stay in L2.
constexpr size_t kChunkBytes = 64 * 1024;

struct StateDeleter {
  void operator()(XXH3_state_t* s) const { XXH3_freeState(s); }
};

}  // namespace

uint64_t Checksum64(std::span<const std::byte> data) {
  return XXH3_64bits(data.data(), data.size());
}

uint64_t CopyAndChecksum64(std::span<const std::byte> src, std::span<std::byte> dst) {
  if (src.size() <= kChunkBytes) {
    // An empty span's data() may be null, and memcpy's pointers must never
    // be, even for no bytes.
    if (!src.empty()) std::memcpy(dst.data(), src.data(), src.size());
    return XXH3_64bits(dst.data(), dst.size());
  }
  thread_local std::unique_ptr<XXH3_state_t, StateDeleter> state(XXH3_createState());
  XXH3_64bits_reset(state.get());
  for (size_t off = 0; off < src.size(); off += kChunkBytes) {
    size_t n = std::min(kChunkBytes, src.size() - off);
    std::memcpy(dst.data() + off, src.data() + off, n);
    XXH3_64bits_update(state.get(), dst.data() + off, n);
  }
  return XXH3_64bits_digest(state.get());
}

}  // namespace kvtier
