// The flash log's on-device record format (docs/flash-tier.md, "On the
// device"). A record is a 4 KiB header page followed by its payload,
// zero-padded to 4 KiB. The header names the record (key, sequence, the
// region's epoch and geometry), carries the payload's XXH3-64 and a checksum
// of its own fields. Everything here is the format: a change makes logs
// written before unreadable. Private to tiers/flash; pure functions.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <optional>

#include "common/clock.h"

namespace kvtier::flash {

constexpr uint64_t kPage = 4096;  // header page, padding unit and O_DIRECT alignment, bytes
constexpr uint64_t kMagic = 0x3148534c4654564bull;  // "KVTFLSH1", little-endian
constexpr uint32_t kVersion = 1;
constexpr uint32_t kErasedFlag = 1;  // RecordHeader::flags: the record no longer holds its key

static_assert(std::endian::native == std::endian::little, "the record format is little-endian");

inline uint64_t RoundUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

// Device bytes of a record holding `payload_bytes`: header page and padded payload.
inline uint64_t RecordBytes(uint64_t payload_bytes) {
  return kPage + RoundUp(payload_bytes, kPage);
}

// The first bytes of a record's 4 KiB header page; the rest of the page is
// zero. Fits in one 512-byte sector, so a header is never torn.
struct RecordHeader {
  uint64_t magic = kMagic;
  uint32_t version = kVersion;
  uint32_t flags = 0;         // kErasedFlag
  uint64_t region_bytes = 0;  // the geometry the log was written with
  uint64_t epoch = 0;         // the region's epoch when the record was written
  uint64_t seq = 0;           // newest wins when a key appears twice
  uint64_t key_hi = 0;
  uint64_t key_lo = 0;
  uint64_t payload_bytes = 0;
  int64_t expiry_ms = kNoExpiry;
  uint64_t payload_checksum = 0;  // XXH3-64 of the payload
  uint64_t header_checksum = 0;   // XXH3-64 of the fields above
};
static_assert(sizeof(RecordHeader) == 88);

// Writes `h` to the start of `page` (kPage bytes) and zeroes the rest; sets
// its magic, version and header checksum.
void EncodeHeader(RecordHeader h, std::byte* page);

// The header at the start of `page` if it is intact (magic, version, header
// checksum) and was written for regions of `region_bytes`; nullopt otherwise.
std::optional<RecordHeader> DecodeHeader(const std::byte* page, uint64_t region_bytes);

}  // namespace kvtier::flash
