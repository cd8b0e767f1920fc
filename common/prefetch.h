// PrefetchLine: a hint to start loading the cache line that holds `p`, so
// that a later read of it overlaps the work in between. It changes nothing a
// program can observe, and a wrong address is harmless (no fault).
//
// Why not __builtin_prefetch alone: GCC (12) takes the builtin as free of
// side effects, so it takes a helper made of prefetches alone (BloomBits::
// Prefetch) as pure and deletes every call to it, inlined or not, together
// with the prefetches. The empty volatile asm is a side effect as far as the
// compiler knows, which keeps the call; it emits no instruction and, with no
// memory clobber, does not stop loads and stores moving around it.
#pragma once

namespace kvtier {

inline void PrefetchLine(const void* p) {
  __builtin_prefetch(p);
  asm volatile("");
}

}  // namespace kvtier
