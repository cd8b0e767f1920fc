// Payload checksums: XXH3-64 over the bytes (DESIGN §3). Every payload stored
// below HBM carries one and it is verified on every read.
//
// The hash runs with the widest instruction set the CPU has (AVX-512, AVX2 or
// SSE2, chosen once at run time); every path gives the same XXH3-64, the
// algorithm's own definition.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace kvtier {

enum class ChecksumIsa { kSse2, kAvx2, kAvx512 };

std::string_view ToString(ChecksumIsa isa);
// The instruction sets this CPU (and its OS) can run, narrowest first.
std::vector<ChecksumIsa> SupportedChecksumIsas();
// The one Checksum64 and CopyAndChecksum64 use: the widest supported.
ChecksumIsa ActiveChecksumIsa();

uint64_t Checksum64(std::span<const std::byte> data);

// Copies src to dst (equal sizes required) and returns the checksum of the
// bytes, computed while each piece is still in cache: one pass over memory
// instead of two. The checksum is of src as the copy read it, never read
// back from dst: a tier verifying a block as it delivers it checks what it
// stored, and a destination another thread writes meanwhile (a client's
// shared-memory region) cannot turn a good block into "corruption".
uint64_t CopyAndChecksum64(std::span<const std::byte> src, std::span<std::byte> dst);

// The same on a named instruction set, which must be supported: for tests and
// benchmarks that check or compare every path.
uint64_t Checksum64(std::span<const std::byte> data, ChecksumIsa isa);
uint64_t CopyAndChecksum64(std::span<const std::byte> src, std::span<std::byte> dst,
                           ChecksumIsa isa);

}  // namespace kvtier
