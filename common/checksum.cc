#include "common/checksum.h"

#include <cassert>

#include "common/checksum_kernels.h"

namespace kvtier {
namespace {

using checksum_internal::Xxh3Kernels;

const Xxh3Kernels& KernelsFor(ChecksumIsa isa) {
  switch (isa) {
    case ChecksumIsa::kAvx512:
      return checksum_internal::kAvx512Kernels;
    case ChecksumIsa::kAvx2:
      return checksum_internal::kAvx2Kernels;
    case ChecksumIsa::kSse2:
      break;
  }
  return checksum_internal::kSse2Kernels;
}

// __builtin_cpu_supports also checks that the OS saves the wider registers.
bool Supported(ChecksumIsa isa) {
  switch (isa) {
    case ChecksumIsa::kAvx512:
      return __builtin_cpu_supports("avx512f");
    case ChecksumIsa::kAvx2:
      return __builtin_cpu_supports("avx2");
    case ChecksumIsa::kSse2:
      break;
  }
  return true;  // x86-64's baseline
}

const Xxh3Kernels& Active() {
  static const Xxh3Kernels& kernels = KernelsFor(ActiveChecksumIsa());
  return kernels;
}

}  // namespace

std::string_view ToString(ChecksumIsa isa) {
  switch (isa) {
    case ChecksumIsa::kAvx512:
      return "avx512";
    case ChecksumIsa::kAvx2:
      return "avx2";
    case ChecksumIsa::kSse2:
      break;
  }
  return "sse2";
}

std::vector<ChecksumIsa> SupportedChecksumIsas() {
  std::vector<ChecksumIsa> out;
  for (ChecksumIsa isa : {ChecksumIsa::kSse2, ChecksumIsa::kAvx2, ChecksumIsa::kAvx512}) {
    if (Supported(isa)) out.push_back(isa);
  }
  return out;
}

ChecksumIsa ActiveChecksumIsa() {
  static const ChecksumIsa isa = SupportedChecksumIsas().back();
  return isa;
}

uint64_t Checksum64(std::span<const std::byte> data) {
  return Active().hash(data.data(), data.size());
}

uint64_t CopyAndChecksum64(std::span<const std::byte> src, std::span<std::byte> dst) {
  assert(src.size() == dst.size());
  return Active().copy_and_hash(src.data(), dst.data(), src.size());
}

uint64_t Checksum64(std::span<const std::byte> data, ChecksumIsa isa) {
  assert(Supported(isa));
  return KernelsFor(isa).hash(data.data(), data.size());
}

uint64_t CopyAndChecksum64(std::span<const std::byte> src, std::span<std::byte> dst,
                           ChecksumIsa isa) {
  assert(src.size() == dst.size() && Supported(isa));
  return KernelsFor(isa).copy_and_hash(src.data(), dst.data(), src.size());
}

}  // namespace kvtier
