#include "context/usage.h"

#include <algorithm>
#include <string>

namespace kvtier {

int64_t TtlMs(TtlClass ttl) { return ttl == TtlClass::k1h ? 3'600'000 : 300'000; }

const char* TtlClassName(TtlClass ttl) { return ttl == TtlClass::k1h ? "1h" : "5m"; }

std::optional<TtlClass> ParseTtlClass(std::string_view text) {
  if (text == "5m") return TtlClass::k5m;
  if (text == "1h") return TtlClass::k1h;
  return std::nullopt;
}

Status ValidateBreakpoints(std::span<const CacheBreakpoint> breakpoints, size_t prompt_tokens) {
  if (breakpoints.size() > kMaxBreakpoints) {
    return Status::InvalidArgument("at most " + std::to_string(kMaxBreakpoints) +
                                   " cache_control breakpoints are allowed, not " +
                                   std::to_string(breakpoints.size()));
  }
  bool seen_5m = false;
  uint32_t previous = 0;
  for (size_t i = 0; i < breakpoints.size(); ++i) {
    const CacheBreakpoint& b = breakpoints[i];
    if (b.end == 0 || b.end > prompt_tokens) {
      return Status::InvalidArgument("breakpoint " + std::to_string(i) + " ends at token " +
                                     std::to_string(b.end) + ", outside the prompt of " +
                                     std::to_string(prompt_tokens) + " tokens");
    }
    if (i > 0 && b.end <= previous) {
      return Status::InvalidArgument("breakpoint " + std::to_string(i) +
                                     " does not come after the one before it");
    }
    if (b.ttl == TtlClass::k5m) seen_5m = true;
    if (b.ttl == TtlClass::k1h && seen_5m) {
      return Status::InvalidArgument(
          "a 1h cache_control breakpoint may not follow a 5m one (1h breakpoints come first)");
    }
    previous = b.end;
  }
  return Status::Ok();
}

std::vector<CacheBreakpoint> CacheableBreakpoints(std::span<const CacheBreakpoint> breakpoints,
                                                  size_t min_cacheable_tokens) {
  std::vector<CacheBreakpoint> out;
  for (const CacheBreakpoint& b : breakpoints) {
    if (b.end >= min_cacheable_tokens) out.push_back(b);
  }
  return out;
}

Usage ComputeUsage(size_t prompt_tokens, size_t hit_tokens,
                   std::span<const CacheBreakpoint> breakpoints, size_t output_tokens) {
  const uint64_t a = std::min(hit_tokens, prompt_tokens);
  uint64_t last_1h = 0, last = 0;
  for (const CacheBreakpoint& b : breakpoints) {
    if (b.ttl == TtlClass::k1h) last_1h = std::max<uint64_t>(last_1h, b.end);
    last = std::max<uint64_t>(last, b.end);
  }
  const uint64_t b = std::max(a, std::min<uint64_t>(last_1h, prompt_tokens));
  const uint64_t c = std::max(b, std::min<uint64_t>(last, prompt_tokens));
  Usage u;
  u.cache_read_input_tokens = a;
  u.cache_creation_1h = b - a;
  u.cache_creation_5m = c - b;
  u.input_tokens = prompt_tokens - c;
  u.output_tokens = output_tokens;
  return u;
}

}  // namespace kvtier
