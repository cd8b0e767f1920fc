// Space on the flash log: appending records to the open region, sealing and
// freeing regions, and compacting a sealed region in place when no region is
// free. FlashTier members (flash_tier_impl.h), and the write budget.
#include "tiers/flash/regions.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "tiers/flash/flash_tier_impl.h"

namespace kvtier::flash {

WriteBudget::WriteBudget(double bytes_per_s, uint64_t max_record_bytes)
    : rate_(bytes_per_s),
      burst_(std::max(bytes_per_s, static_cast<double>(max_record_bytes))),
      tokens_(burst_) {}

bool WriteBudget::Take(uint64_t bytes, int64_t now_ms) {
  if (rate_ <= 0) return true;
  Refill(now_ms);
  if (tokens_ < static_cast<double>(bytes)) return false;
  tokens_ -= static_cast<double>(bytes);
  return true;
}

void WriteBudget::Charge(uint64_t bytes, int64_t now_ms) {
  if (rate_ <= 0) return;
  Refill(now_ms);
  tokens_ -= static_cast<double>(bytes);
}

void WriteBudget::Refund(uint64_t bytes) {
  if (rate_ > 0) tokens_ = std::min(burst_, tokens_ + static_cast<double>(bytes));
}

void WriteBudget::Refill(int64_t now_ms) {
  if (last_ms_ >= 0 && now_ms > last_ms_) {
    tokens_ = std::min(burst_, tokens_ + rate_ * static_cast<double>(now_ms - last_ms_) / 1000.0);
  }
  last_ms_ = std::max(last_ms_, now_ms);
}

void FlashTier::OpenRegionLocked(uint32_t r) {
  Region& region = regions_[r];
  region.state = Region::State::kOpen;
  region.epoch = next_epoch_++;
  region.write_end = 0;
  region.records.clear();
  head_ = r;
}

void FlashTier::SealHeadLocked() {
  if (head_ < 0) return;
  const auto r = static_cast<uint32_t>(head_);
  regions_[r].state = Region::State::kSealed;
  head_ = -1;
  MaybeFreeLocked(r);
}

void FlashTier::MaybeFreeLocked(uint32_t r) {
  Region& region = regions_[r];
  if (region.state != Region::State::kSealed || region.live_bytes > 0 || region.unacked > 0) return;
  region.state = Region::State::kFree;
  region.records.clear();
  free_regions_.push_back(r);
}

Result<Location> FlashTier::AllocateLocked(uint64_t record_bytes) {
  if (committed_bytes_ + record_bytes > capacity_bytes_) {
    return Status::ResourceExhausted("flash tier '" + options_.name + "' is full (" +
                                     std::to_string(committed_bytes_) + " of " +
                                     std::to_string(capacity_bytes_) + " bytes)");
  }
  if (head_ < 0 || regions_[head_].write_end + record_bytes > region_bytes_) {
    SealHeadLocked();
    if (!free_regions_.empty()) {
      OpenRegionLocked(free_regions_.front());
      free_regions_.pop_front();
    } else {
      KVTIER_RETURN_IF_ERROR(CompactLocked(record_bytes));
    }
  }
  const auto r = static_cast<uint32_t>(head_);
  Region& region = regions_[r];
  Location loc;
  loc.region = r;
  loc.offset = RegionStart(r) + region.write_end;
  loc.seq = next_seq_++;
  region.records.emplace_back(region.write_end, BlockKey{});
  region.write_end += record_bytes;
  ++region.unacked;
  committed_bytes_ += record_bytes;
  return loc;
}

// The sealed region with the fewest live bytes, if compacting it leaves room
// for a record of `record_bytes`.
Result<uint32_t> FlashTier::CompactionVictimLocked(uint64_t record_bytes) const {
  int64_t victim = -1;
  for (uint32_t r = 0; r < regions_.size(); ++r) {
    const Region& region = regions_[r];
    if (region.state != Region::State::kSealed || region.unacked > 0) continue;
    if (victim < 0 || region.live_bytes < regions_[victim].live_bytes) victim = r;
  }
  if (victim < 0 || region_bytes_ - regions_[victim].live_bytes < record_bytes) {
    return Status::ResourceExhausted("flash tier '" + options_.name +
                                     "' has no region to reclaim: evict blocks to free one");
  }
  return static_cast<uint32_t>(victim);
}

// Rewrites the victim's live records at its front under a new epoch, with one
// read and one write, and reopens it as the head.
Status FlashTier::CompactLocked(uint64_t record_bytes) {
  KVTIER_ASSIGN_OR_RETURN(const uint32_t v, CompactionVictimLocked(record_bytes));
  Region& region = regions_[v];
  if (!compaction_buffer_) compaction_buffer_ = AllocAligned(region_bytes_);
  std::byte* buf = compaction_buffer_.get();
  if (!buf) return Status::ResourceExhausted("cannot allocate the flash compaction buffer");
  if (!PreadAll(fd_, buf, region.write_end, RegionStart(v))) {
    ++io_errors_;
    return Status::IOError("reading flash region for compaction: " + ErrnoText(errno));
  }
  const uint64_t epoch = next_epoch_++;
  uint64_t out = 0;
  std::vector<std::pair<uint64_t, BlockKey>> kept;
  for (const auto& [off, key] : region.records) {
    auto it = map_.find(key);
    if (it == map_.end() || it->second.offset != RegionStart(v) + off) continue;
    Location& loc = it->second;
    const uint64_t rb = loc.record_bytes();
    std::memmove(buf + out, buf + off, rb);  // out <= off: records only move forward
    loc.offset = RegionStart(v) + out;
    loc.seq = next_seq_++;
    EncodeHeader(MakeHeader(key, loc, epoch), buf + out);
    kept.emplace_back(out, key);
    out += rb;
  }
  region.epoch = epoch;
  region.write_end = out;
  region.records = std::move(kept);
  region.state = Region::State::kOpen;
  head_ = v;
  if (out > 0 && !PwriteAll(fd_, buf, out, RegionStart(v))) {
    // The moved records are in an unknown state on the device: drop them and
    // start the region afresh.
    const int err = errno;
    ++io_errors_;
    for (const auto& [off, key] : region.records) {
      auto it = map_.find(key);
      if (it != map_.end()) RemoveLocked(it, /*invalidate=*/false);
    }
    OpenRegionLocked(v);
    return Status::IOError("writing compacted flash region: " + ErrnoText(err));
  }
  ++compactions_;
  relocated_bytes_ += out;
  bytes_written_ += out;
  budget_.Charge(out, options_.clock->NowMs());
  return Status::Ok();
}

}  // namespace kvtier::flash
