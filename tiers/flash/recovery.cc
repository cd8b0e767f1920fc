// Rebuilding the flash tier's index from the log at open: there is nothing
// on the device but the records, so each region's chain is walked from its
// start, the newest regions' payloads are verified (only they can hold a
// record a crash tore), and the newest live record of each key is indexed.
// FlashTier members (flash_tier_impl.h); they run before the I/O thread
// starts, so nothing else touches the tier yet.
#include <algorithm>
#include <cerrno>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/checksum.h"
#include "tiers/flash/flash_tier_impl.h"

namespace kvtier::flash {

struct RecoveredRecord {
  BlockKey key;
  Location loc;
  uint32_t flags;
};

Status FlashTier::RecoverLog() {
  RecoveredLog found(regions_.size());
  KVTIER_RETURN_IF_ERROR(ScanRegions(found));
  KVTIER_RETURN_IF_ERROR(DiscardTornRecords(found));
  IndexNewestRecords(found);
  AccountRecoveredRegions();
  return Status::Ok();
}

Status FlashTier::ScanRegions(RecoveredLog& found) {
  uint64_t max_epoch = 0, max_seq = 0;
  for (uint32_t r = 0; r < regions_.size(); ++r) {
    KVTIER_RETURN_IF_ERROR(ScanRegion(r, found[r]));
    for (const RecoveredRecord& f : found[r]) max_seq = std::max(max_seq, f.loc.seq);
    max_epoch = std::max(max_epoch, regions_[r].epoch);
  }
  next_epoch_ = max_epoch + 1;
  next_seq_ = max_seq + 1;
  return Status::Ok();
}

// The chain ends at the first header that is invalid, does not fit the
// region, or carries another epoch than the first (left from the region's
// previous use). Sets the region's epoch and write_end.
Status FlashTier::ScanRegion(uint32_t r, std::vector<RecoveredRecord>& found) {
  std::byte* page = header_page_.get();
  uint64_t off = 0;
  std::optional<uint64_t> epoch;
  while (off + kPage <= region_bytes_) {
    if (!PreadAll(fd_, page, kPage, RegionStart(r) + off)) {
      return Status::IOError("reading flash log " + options_.path + ": " + ErrnoText(errno));
    }
    std::optional<RecordHeader> h = DecodeHeader(page, region_bytes_);
    if (!h || (epoch && h->epoch != *epoch)) break;
    const uint64_t rb = RecordBytes(h->payload_bytes);
    if (h->payload_bytes == 0 || off + rb > region_bytes_) break;
    epoch = h->epoch;
    Location loc{
        r, RegionStart(r) + off, h->seq, h->payload_bytes, h->expiry_ms, h->payload_checksum};
    found.push_back({BlockKey{h->key_hi, h->key_lo}, loc, h->flags});
    off += rb;
  }
  regions_[r].epoch = epoch.value_or(0);
  regions_[r].write_end = off;
  return Status::Ok();
}

// A crash can catch mid-write only the records still in staging: at most
// staging_bytes at the end of the log, which span the newest
// staging_bytes / region_bytes + 2 regions. Verify their payloads; a torn
// record is marked erased on the device and in `found`.
Status FlashTier::DiscardTornRecords(RecoveredLog& found) {
  const size_t verified = options_.staging_bytes / region_bytes_ + 2;
  std::vector<uint32_t> by_epoch;
  for (uint32_t r = 0; r < regions_.size(); ++r) {
    if (!found[r].empty()) by_epoch.push_back(r);
  }
  std::sort(by_epoch.begin(), by_epoch.end(),
            [&](uint32_t a, uint32_t b) { return regions_[a].epoch > regions_[b].epoch; });
  for (size_t i = 0; i < std::min(by_epoch.size(), verified); ++i) {
    for (RecoveredRecord& f : found[by_epoch[i]]) {
      if (f.flags & kErasedFlag) continue;
      AlignedBuffer buf = AllocAligned(f.loc.record_bytes());
      if (!buf || !PreadAll(fd_, buf.get(), f.loc.record_bytes(), f.loc.offset)) {
        return Status::IOError("reading flash log " + options_.path + ": " + ErrnoText(errno));
      }
      if (Checksum64(std::span(buf.get() + kPage, f.loc.bytes)) != f.loc.checksum) {
        RewriteHeaderLocked(f.key, f.loc, kErasedFlag);  // torn: never again a candidate
        f.flags |= kErasedFlag;
        ++discarded_records_;
      }
    }
  }
  return Status::Ok();
}

// The newest live, unexpired record of each key wins; older ones are marked
// erased so that erasing the winner later cannot bring them back. Every
// record found stays in its region's record list (compaction walks it).
void FlashTier::IndexNewestRecords(const RecoveredLog& found) {
  const int64_t now = options_.clock->NowMs();
  for (uint32_t r = 0; r < regions_.size(); ++r) {
    for (const RecoveredRecord& f : found[r]) {
      regions_[r].records.emplace_back(f.loc.offset - RegionStart(r), f.key);
      if ((f.flags & kErasedFlag) || f.loc.expiry_ms <= now) continue;
      auto [it, inserted] = map_.try_emplace(f.key, f.loc);
      if (!inserted) {
        Location older = f.loc;
        if (f.loc.seq > it->second.seq) std::swap(older, it->second);
        RewriteHeaderLocked(f.key, older, kErasedFlag);
      }
    }
  }
}

// Counts the indexed records' bytes; a region holding none of them is free,
// the others are sealed.
void FlashTier::AccountRecoveredRegions() {
  for (const auto& [key, loc] : map_) {
    regions_[loc.region].live_bytes += loc.record_bytes();
    committed_bytes_ += loc.record_bytes();
    used_bytes_ += loc.bytes;
  }
  for (uint32_t r = 0; r < regions_.size(); ++r) {
    Region& region = regions_[r];
    if (region.live_bytes > 0) {
      region.state = Region::State::kSealed;
    } else {
      region.state = Region::State::kFree;
      region.records.clear();
      free_regions_.push_back(r);
    }
  }
}

}  // namespace kvtier::flash
