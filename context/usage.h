// Context-caching semantics (DESIGN §6): TTL classes, cache breakpoints and
// the usage a request reports.
//
// A request marks up to four prefixes of its prompt as cacheable, each for
// 5 minutes or an hour (1h breakpoints first). With A the end of the longest
// cached prefix found, B the end of the last 1h breakpoint after A and C the
// last breakpoint, the prompt splits into
//   read = A, 1h write = B - A, 5m write = C - B, input = prompt - C,
// four parts that never overlap and sum to the prompt. Pure functions; no
// state, thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace kvtier {

enum class TtlClass : uint8_t { k5m = 0, k1h = 1 };

int64_t TtlMs(TtlClass ttl);             // 300000 or 3600000
const char* TtlClassName(TtlClass ttl);  // "5m" or "1h"
std::optional<TtlClass> ParseTtlClass(std::string_view text);

// The prefix of the prompt up to (excluding) token `end` is cacheable for `ttl`.
struct CacheBreakpoint {
  uint32_t end = 0;  // tokens in the prefix, > 0
  TtlClass ttl = TtlClass::k5m;
  friend bool operator==(const CacheBreakpoint&, const CacheBreakpoint&) = default;
};

inline constexpr size_t kMaxBreakpoints = 4;

// At most four breakpoints, strictly increasing, none past the prompt, every
// 1h one before every 5m one. kInvalidArgument naming the problem otherwise.
Status ValidateBreakpoints(std::span<const CacheBreakpoint> breakpoints, size_t prompt_tokens);

// The breakpoints that are long enough to be cached (prefixes shorter than
// the model's minimum cacheable length are silently not cached).
std::vector<CacheBreakpoint> CacheableBreakpoints(std::span<const CacheBreakpoint> breakpoints,
                                                  size_t min_cacheable_tokens);

struct Usage {
  uint64_t input_tokens = 0;       // neither read from nor written to the cache
  uint64_t cache_creation_5m = 0;  // written with a 5-minute TTL
  uint64_t cache_creation_1h = 0;  // written with a 1-hour TTL
  uint64_t cache_read_input_tokens = 0;
  uint64_t output_tokens = 0;
  uint64_t cache_creation_input_tokens() const { return cache_creation_5m + cache_creation_1h; }
  uint64_t prompt_tokens() const {
    return input_tokens + cache_creation_input_tokens() + cache_read_input_tokens;
  }
  friend bool operator==(const Usage&, const Usage&) = default;
};

// The usage of a prompt of `prompt_tokens` whose first `hit_tokens` were read
// from the cache, with these (cacheable, validated) breakpoints.
Usage ComputeUsage(size_t prompt_tokens, size_t hit_tokens,
                   std::span<const CacheBreakpoint> breakpoints, size_t output_tokens);

}  // namespace kvtier
