// Payload checksums: XXH3-64 over the bytes (DESIGN §3). Every payload stored
// below HBM carries one and it is verified on every read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace kvtier {

uint64_t Checksum64(std::span<const std::byte> data);

// Copies src to dst (equal sizes required) and returns the checksum of the
// bytes, computed while each piece is still in cache: one pass over memory
// instead of two.
uint64_t CopyAndChecksum64(std::span<const std::byte> src, std::span<std::byte> dst);

}  // namespace kvtier
