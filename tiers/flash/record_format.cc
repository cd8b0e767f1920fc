#include "tiers/flash/record_format.h"

#include <cstring>
#include <span>

#include "common/checksum.h"

namespace kvtier::flash {
namespace {

uint64_t HeaderChecksum(const RecordHeader& h) {
  return Checksum64(std::as_bytes(std::span(&h, 1)).first(offsetof(RecordHeader, header_checksum)));
}

}  // namespace

void EncodeHeader(RecordHeader h, std::byte* page) {
  h.magic = kMagic;
  h.version = kVersion;
  h.header_checksum = HeaderChecksum(h);
  std::memset(page, 0, kPage);
  std::memcpy(page, &h, sizeof h);
}

std::optional<RecordHeader> DecodeHeader(const std::byte* page, uint64_t region_bytes) {
  RecordHeader h;
  std::memcpy(&h, page, sizeof h);
  if (h.magic != kMagic || h.version != kVersion || h.header_checksum != HeaderChecksum(h) ||
      h.region_bytes != region_bytes) {
    return std::nullopt;
  }
  return h;
}

}  // namespace kvtier::flash
