// XXH3-64 kernels, one set per instruction set. Each set is compiled in its own
// file with that instruction set's flags (checksum_kernels_{sse2,avx2,avx512}.cc);
// checksum.cc picks one at run time from what the CPU reports, so one binary
// runs everywhere and the widest path the CPU has is used. Internal to
// checksum.cc and its tests; everyone else calls common/checksum.h.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kvtier::checksum_internal {

struct Xxh3Kernels {
  uint64_t (*hash)(const void* data, size_t bytes);
  // Copies bytes from src to dst and returns the XXH3-64 of them, hashing each
  // piece of src right after copying it, while it is still in L1.
  uint64_t (*copy_and_hash)(const void* src, void* dst, size_t bytes);
};

extern const Xxh3Kernels kSse2Kernels;
extern const Xxh3Kernels kAvx2Kernels;
extern const Xxh3Kernels kAvx512Kernels;

}  // namespace kvtier::checksum_internal
