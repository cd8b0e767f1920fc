// The flash tier itself: options, opening the device, and the Tier methods
// that tie the record format, the regions, recovery and the I/O loop
// together (flash_tier_impl.h says which file holds what).
#include "tiers/flash/flash_tier.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/checksum.h"
#include "common/log.h"
#include "tiers/calibration.h"
#include "tiers/flash/flash_tier_impl.h"

namespace kvtier {
namespace flash {

FlashTier::FlashTier(const FlashTierOptions& o)
    : options_(o),
      region_bytes_(o.region_bytes),
      read_slot_count_(2 * static_cast<uint64_t>(o.queue_depth)),
      budget_(o.write_budget_bytes_per_s, RecordBytes(o.max_block_bytes)) {}

FlashTier::~FlashTier() {
  if (io_thread_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    Wake();
    io_thread_.join();
  }
  if (ring_ready_) io_uring_queue_exit(&ring_);
  if (wake_fd_ >= 0) ::close(wake_fd_);
  if (fd_ >= 0) ::close(fd_);
}

void FlashTier::set_bandwidth(Bandwidth bw) {
  std::lock_guard<std::mutex> lock(mu_);
  bandwidth_ = bw;
}

Status FlashTier::Open() {
  KVTIER_RETURN_IF_ERROR(OpenDevice());
  regions_.resize(device_bytes_ / region_bytes_);
  header_page_ = AllocAligned(kPage);
  KVTIER_RETURN_IF_ERROR(RecoverLog());

  staging_ = AllocAligned(options_.staging_bytes);
  read_slots_ = AllocAligned(options_.read_slot_bytes * read_slot_count_);
  if (!staging_ || !read_slots_ || !header_page_) {
    return Status::ResourceExhausted("cannot allocate flash staging buffers");
  }
  for (int i = static_cast<int>(read_slot_count_) - 1; i >= 0; --i) free_slots_.push_back(i);
  KVTIER_RETURN_IF_ERROR(StartIoThread());
  LogInfo("flash tier open", LogFields()
                                 .Add("path", options_.path)
                                 .Add("device_bytes", device_bytes_)
                                 .Add("capacity_bytes", capacity_bytes_)
                                 .Add("regions", regions_.size())
                                 .Add("blocks", map_.size())
                                 .Add("discarded_records", discarded_records_));
  return Status::Ok();
}

Status FlashTier::OpenDevice() {
  KVTIER_RETURN_IF_ERROR(OpenAndLockLog());
  KVTIER_ASSIGN_OR_RETURN(const uint64_t log_bytes, LogBytes());
  return SetGeometry(log_bytes);
}

Status FlashTier::OpenAndLockLog() {
  fd_ = ::open(options_.path.c_str(), O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    const int err = errno;
    if (err == EINVAL) {
      return Status::InvalidArgument("flash log " + options_.path +
                                     ": the file system does not support O_DIRECT");
    }
    return Status::IOError("cannot open flash log " + options_.path + ": " + ErrnoText(err));
  }
  // A process killed with I/O in flight lets go of its io_uring, and with it
  // of this file and its lock, a moment after it has died (the kernel tears
  // the ring down asynchronously): a restart right after a crash waits that
  // moment out (at most a second) before calling the log taken.
  for (int attempt = 0; ::flock(fd_, LOCK_EX | LOCK_NB) != 0; ++attempt) {
    if (errno != EWOULDBLOCK || attempt == 50) {
      return Status::Unavailable("flash log " + options_.path + " is in use by another process");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return Status::Ok();
}

// The bytes of the log, not yet rounded to regions: a block device's size
// (or less, if device_bytes asks), or the file's, sized as asked.
Result<uint64_t> FlashTier::LogBytes() {
  struct stat st {};
  if (::fstat(fd_, &st) != 0)
    return Status::IOError("fstat " + options_.path + ": " + ErrnoText(errno));
  if (S_ISBLK(st.st_mode)) {
    uint64_t size = 0;
    if (::ioctl(fd_, BLKGETSIZE64, &size) != 0) {
      return Status::IOError("BLKGETSIZE64 " + options_.path + ": " + ErrnoText(errno));
    }
    const uint64_t device = options_.device_bytes;
    return device == 0 || device > size ? size : device;
  }
  if (S_ISREG(st.st_mode)) return SizeLogFile(static_cast<uint64_t>(st.st_size));
  return Status::InvalidArgument("flash log " + options_.path +
                                 " is neither a regular file nor a block device");
}

// Grows or cuts the log file of `file_bytes` to whole regions: device_bytes,
// else its present size, else (a new file) capacity_bytes plus slack.
Result<uint64_t> FlashTier::SizeLogFile(uint64_t file_bytes) {
  uint64_t device = options_.device_bytes;
  if (device == 0) {
    device = file_bytes > 0
                 ? file_bytes
                 : RoundUp(options_.capacity_bytes + options_.capacity_bytes / 8, region_bytes_) +
                       2 * region_bytes_;
  }
  device = device / region_bytes_ * region_bytes_;
  if (file_bytes == device) return device;
  if (options_.preallocate && file_bytes < device) {
    // Refuse up front what cannot fit: posix_fallocate would fill the
    // file system before failing, starving everything else on it.
    struct statvfs vfs {};
    const bool known = ::fstatvfs(fd_, &vfs) == 0;
    const uint64_t free_bytes = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
    const int err = known && free_bytes < device - file_bytes
                        ? ENOSPC
                        : ::posix_fallocate(fd_, 0, static_cast<off_t>(device));
    if (err == ENOSPC) {
      return Status::ResourceExhausted("not enough free disk for a flash log of " +
                                       std::to_string(device) + " bytes at " + options_.path);
    }
    if (err != 0) return Status::IOError("fallocate " + options_.path + ": " + ErrnoText(err));
  }
  if (::ftruncate(fd_, static_cast<off_t>(device)) != 0) {
    return Status::IOError("ftruncate " + options_.path + ": " + ErrnoText(errno));
  }
  return device;
}

// Settles device_bytes_ (whole regions, at least two) and capacity_bytes_
// (at least one region of slack).
Status FlashTier::SetGeometry(uint64_t log_bytes) {
  device_bytes_ = log_bytes / region_bytes_ * region_bytes_;
  if (device_bytes_ / region_bytes_ < 2) {
    return Status::InvalidArgument("flash log " + options_.path +
                                   " holds fewer than two regions of " +
                                   std::to_string(region_bytes_) + " bytes");
  }
  capacity_bytes_ = options_.capacity_bytes;
  if (capacity_bytes_ == 0) {
    capacity_bytes_ = device_bytes_ / 9 * 8 > 2 * region_bytes_
                          ? device_bytes_ / 9 * 8 - 2 * region_bytes_
                          : region_bytes_;
  }
  if (capacity_bytes_ > device_bytes_ - region_bytes_) {
    return Status::InvalidArgument("flash capacity of " + std::to_string(capacity_bytes_) +
                                   " bytes leaves less than one region of slack in a log of " +
                                   std::to_string(device_bytes_) + " bytes");
  }
  return Status::Ok();
}

TierInfo FlashTier::Info() const {
  std::lock_guard<std::mutex> lock(mu_);
  TierInfo info;
  info.name = options_.name;
  info.capacity_bytes = capacity_bytes_;
  info.used_bytes = used_bytes_;
  info.allocated_bytes = committed_bytes_;
  info.blocks = map_.size();
  info.max_block_bytes = options_.max_block_bytes;
  info.read_bytes_per_s = bandwidth_.read_bytes_per_s;
  info.write_bytes_per_s = bandwidth_.write_bytes_per_s;
  info.persistent = true;
  info.corruption_errors = corruption_errors_;
  info.io_errors = io_errors_;
  return info;
}

FlashTierStats FlashTier::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  FlashTierStats s;
  s.device_bytes = device_bytes_;
  s.regions = regions_.size();
  s.free_regions = free_regions_.size();
  s.bytes_written = bytes_written_;
  s.relocated_bytes = relocated_bytes_;
  s.compactions = compactions_;
  s.budget_refusals = budget_refusals_;
  s.discarded_records = discarded_records_;
  s.registered_buffers = registered_;
  return s;
}

void FlashTier::Write(std::span<const WriteOp> ops, IoCallback done) {
  auto batch = std::make_shared<Batch>(ops.size(), std::move(done));
  std::vector<std::shared_ptr<Batch>> ready;
  const bool on_io_thread = std::this_thread::get_id() == io_thread_.get_id();
  for (size_t i = 0; i < ops.size(); ++i) {
    const WriteOp& op = ops[i];
    // Reserve staging and log space under the lock...
    std::unique_lock<std::mutex> lock(mu_);
    Status refused = ReserveLocked(op, on_io_thread, lock);
    if (!refused.ok()) {
      FinishLocked(batch, i, {std::move(refused), 0}, &ready);
      continue;
    }
    PendingWrite& reserved = writes_.back();
    reserved.batch = batch;
    reserved.op_index = i;
    const uint64_t pos = writes_front_pos_ + writes_.size() - 1;
    const Location loc = reserved.loc;
    const uint64_t epoch = regions_[loc.region].epoch;
    std::byte* record = staging_.get() + reserved.staging_offset;
    lock.unlock();
    // ...and copy without it: the I/O thread keeps submitting meanwhile. The
    // record is not submitted (so its staging is not reused) until ready.
    const uint64_t checksum = StageRecord(op, loc, epoch, record);
    lock.lock();
    PendingWrite& w = writes_[pos - writes_front_pos_];
    w.loc.checksum = checksum;
    w.ready = true;
    lock.unlock();
    Wake();
  }
  for (auto& b : ready) b->done(std::move(b->results));
}

uint64_t FlashTier::StageRecord(const WriteOp& op, const Location& loc, uint64_t epoch,
                                std::byte* record) const {
  const uint64_t rb = RecordBytes(op.payload.size());
  const uint64_t checksum =
      CopyAndChecksum64(op.payload, std::span(record + kPage, op.payload.size()));
  std::memset(record + kPage + op.payload.size(), 0, rb - kPage - op.payload.size());
  Location written = loc;
  written.bytes = op.payload.size();
  written.expiry_ms = op.expiry_ms;
  written.checksum = checksum;
  EncodeHeader(MakeHeader(op.key, written, epoch), record);
  return checksum;
}

Status FlashTier::ReserveLocked(const WriteOp& op, bool on_io_thread,
                                std::unique_lock<std::mutex>& lock) {
  if (op.payload.empty()) return Status::InvalidArgument("empty block payload");
  if (op.payload.size() > options_.max_block_bytes) {
    return Status::ResourceExhausted(
        "a block of " + std::to_string(op.payload.size()) + " bytes is larger than flash tier '" +
        options_.name + "' accepts (" + std::to_string(options_.max_block_bytes) + ")");
  }
  const uint64_t rb = RecordBytes(op.payload.size());
  std::optional<uint64_t> staging = TryStagingLocked(rb);
  // Wait for acknowledgements to free staging, except on the I/O thread
  // (a callback), which is what frees it.
  while (!staging && !on_io_thread && !stop_) {
    staging_freed_.wait(lock);
    staging = TryStagingLocked(rb);
  }
  if (!staging) return Status::Retry("flash staging is full");
  if (!budget_.Take(rb, options_.clock->NowMs())) {
    ++budget_refusals_;
    return Status::Retry("flash write budget exhausted");
  }
  Result<Location> loc = AllocateLocked(rb);
  if (!loc.ok()) {
    budget_.Refund(rb);  // the write is not made
    return loc.status();
  }
  regions_[loc->region].records.back().second = op.key;
  loc->bytes = op.payload.size();
  loc->expiry_ms = op.expiry_ms;
  staging_head_ = *staging + rb;
  PendingWrite w;
  w.key = op.key;
  w.loc = *loc;
  w.staging_offset = *staging;
  w.written_expiry_ms = op.expiry_ms;
  writes_.push_back(std::move(w));
  return Status::Ok();
}

// Where in the staging ring a record of `bytes` fits now, if anywhere.
std::optional<uint64_t> FlashTier::TryStagingLocked(uint64_t bytes) const {
  const uint64_t size = options_.staging_bytes;
  if (writes_.empty()) return bytes <= size ? std::optional<uint64_t>(0) : std::nullopt;
  const uint64_t tail = writes_.front().staging_offset;
  if (staging_head_ > tail) {
    if (bytes <= size - staging_head_) return staging_head_;
    if (bytes <= tail) return 0;  // wrap; the gap at the end is skipped
    return std::nullopt;
  }
  if (staging_head_ < tail && staging_head_ + bytes <= tail) return staging_head_;
  return std::nullopt;  // head == tail with records queued: full
}

void FlashTier::Read(std::span<const ReadOp> ops, IoCallback done) {
  auto batch = std::make_shared<Batch>(ops.size(), std::move(done));
  std::vector<std::shared_ptr<Batch>> ready;
  bool queued = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const int64_t now = options_.clock->NowMs();
    for (size_t i = 0; i < ops.size(); ++i) {
      auto it = map_.find(ops[i].key);
      if (it == map_.end() || it->second.expiry_ms <= now) {
        FinishLocked(batch, i,
                     {Status::NotFound("block " + ops[i].key.ToHex() + " is not in flash"), 0},
                     &ready);
        continue;
      }
      if (ops[i].dest.size() < it->second.bytes) {
        FinishLocked(batch, i,
                     {Status::ResourceExhausted("read buffer too small"), it->second.bytes},
                     &ready);
        continue;
      }
      auto r = std::make_unique<PendingRead>();
      r->op = ops[i];
      r->loc = it->second;
      r->batch = batch;
      r->op_index = i;
      read_queue_.push_back(std::move(r));
      queued = true;
    }
  }
  if (queued) Wake();
  for (auto& b : ready) b->done(std::move(b->results));
}

Status FlashTier::Erase(std::span<const BlockKey> keys) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const BlockKey& key : keys) {
    auto it = map_.find(key);
    if (it != map_.end()) RemoveLocked(it, /*invalidate=*/true);
    for (PendingWrite& w : writes_) {
      if (w.key == key) w.canceled = true;
    }
  }
  return Status::Ok();
}

Status FlashTier::SetExpiry(std::span<const BlockKey> keys, int64_t expiry_ms) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const BlockKey& key : keys) {
    auto it = map_.find(key);
    if (it != map_.end() && it->second.expiry_ms != expiry_ms) {
      it->second.expiry_ms = expiry_ms;
      RewriteHeaderLocked(key, it->second, 0);
    }
    for (PendingWrite& w : writes_) {
      if (w.key == key) w.loc.expiry_ms = expiry_ms;  // rewritten when acknowledged
    }
  }
  return Status::Ok();
}

Status FlashTier::Recover(IndexSink& sink) {
  std::vector<std::pair<BlockKey, Location>> live;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const int64_t now = options_.clock->NowMs();
    for (const auto& [key, loc] : map_) {
      if (loc.expiry_ms > now) live.emplace_back(key, loc);
    }
  }
  for (const auto& [key, loc] : live) sink.Announce(key, loc.bytes, loc.expiry_ms);
  return Status::Ok();
}

Result<std::pair<uint64_t, uint64_t>> FlashTier::Extent(const BlockKey& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = map_.find(key);
  if (it == map_.end()) return Status::NotFound("block " + key.ToHex() + " is not in flash");
  return std::make_pair(it->second.offset, it->second.record_bytes());
}

Status FlashTier::Corrupt(const BlockKey& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = map_.find(key);
  if (it == map_.end()) return Status::NotFound("block " + key.ToHex() + " is not in flash");
  AlignedBuffer page = AllocAligned(kPage);
  const uint64_t off = it->second.offset + kPage;
  if (!PreadAll(fd_, page.get(), kPage, off)) return Status::IOError(ErrnoText(errno));
  page[0] ^= std::byte{0x5a};
  if (!PwriteAll(fd_, page.get(), kPage, off)) return Status::IOError(ErrnoText(errno));
  return Status::Ok();
}

// Drops `it` from the index and its bytes from the accounting; with
// `invalidate`, marks its record erased on the device too.
void FlashTier::RemoveLocked(Index::iterator it, bool invalidate) {
  const BlockKey key = it->first;
  const Location loc = it->second;
  map_.erase(it);
  Region& region = regions_[loc.region];
  region.live_bytes -= loc.record_bytes();
  committed_bytes_ -= loc.record_bytes();
  used_bytes_ -= loc.bytes;
  if (invalidate) RewriteHeaderLocked(key, loc, kErasedFlag);
  MaybeFreeLocked(loc.region);
}

// Rewrites the header page of `loc`'s record in place (one kPage write).
void FlashTier::RewriteHeaderLocked(const BlockKey& key, const Location& loc, uint32_t flags) {
  EncodeHeader(MakeHeader(key, loc, regions_[loc.region].epoch, flags), header_page_.get());
  if (PwriteAll(fd_, header_page_.get(), kPage, loc.offset)) {
    bytes_written_ += kPage;
  } else {
    ++io_errors_;
    LogError("flash header rewrite failed", LogFields()
                                                .Add("path", options_.path)
                                                .Add("offset", loc.offset)
                                                .Add("error", ErrnoText(errno)));
  }
}

RecordHeader FlashTier::MakeHeader(const BlockKey& key, const Location& loc, uint64_t epoch,
                                   uint32_t flags) const {
  RecordHeader h;
  h.flags = flags;
  h.region_bytes = region_bytes_;
  h.epoch = epoch;
  h.seq = loc.seq;
  h.key_hi = key.hi;
  h.key_lo = key.lo;
  h.payload_bytes = loc.bytes;
  h.expiry_ms = loc.expiry_ms;
  h.payload_checksum = loc.checksum;
  return h;
}

namespace {

// Checks the options once, so that the tier may trust them.
Status ValidateOptions(const FlashTierOptions& o) {
  if (o.path.empty()) return Status::InvalidArgument("flash tier needs a path");
  if (o.region_bytes < 2 * kPage || o.region_bytes % kPage != 0) {
    return Status::InvalidArgument(
        "flash region_bytes must be a multiple of 4 KiB, at least 8 KiB");
  }
  if (o.max_block_bytes == 0 || RecordBytes(o.max_block_bytes) > o.region_bytes) {
    return Status::InvalidArgument(
        "flash max_block_bytes must be positive and fit a region with its header");
  }
  if (o.queue_depth < 1 || o.queue_depth > 4096) {
    return Status::InvalidArgument("flash queue_depth must be in 1..4096");
  }
  if (o.staging_bytes % kPage != 0 || o.staging_bytes < RecordBytes(o.max_block_bytes)) {
    return Status::InvalidArgument(
        "flash staging_bytes must be a multiple of 4 KiB holding the largest record");
  }
  if (o.read_slot_bytes < 2 * kPage || o.read_slot_bytes % kPage != 0) {
    return Status::InvalidArgument(
        "flash read_slot_bytes must be a multiple of 4 KiB, at least 8 KiB");
  }
  if (o.device_bytes == 0 && o.capacity_bytes == 0) {
    // Fine for an existing file or a device; a new file needs a size.
    struct stat st {};
    if (::stat(o.path.c_str(), &st) != 0 || (S_ISREG(st.st_mode) && st.st_size == 0)) {
      return Status::InvalidArgument(
          "flash tier needs device_bytes or capacity_bytes for a new log");
    }
  }
  if (o.clock == nullptr) return Status::InvalidArgument("flash tier needs a clock");
  return Status::Ok();
}

Result<FlashTier*> AsFlash(const Tier& tier) {
  auto* flash_tier = dynamic_cast<FlashTier*>(const_cast<Tier*>(&tier));
  if (flash_tier == nullptr) return Status::InvalidArgument("not a flash tier");
  return flash_tier;
}

}  // namespace
}  // namespace flash

using flash::AsFlash;
using flash::FlashTier;

Result<std::unique_ptr<Tier>> OpenFlashTier(const FlashTierOptions& options) {
  KVTIER_RETURN_IF_ERROR(flash::ValidateOptions(options));
  std::error_code ec;
  const bool existed = std::filesystem::exists(options.path, ec);
  auto tier = std::make_unique<FlashTier>(options);
  if (Status s = tier->Open(); !s.ok()) {
    tier.reset();
    if (!existed) std::filesystem::remove(options.path, ec);  // a failed open leaves nothing behind
    return s;
  }
  tier->set_bandwidth(
      ConfiguredOrMeasured(*tier, options.read_bytes_per_s, options.write_bytes_per_s));
  return std::unique_ptr<Tier>(std::move(tier));
}

Result<FlashTierStats> GetFlashTierStats(const Tier& tier) {
  KVTIER_ASSIGN_OR_RETURN(auto* flash_tier, AsFlash(tier));
  return flash_tier->Stats();
}

Result<std::pair<uint64_t, uint64_t>> FlashRecordExtentForTesting(Tier& tier, const BlockKey& key) {
  KVTIER_ASSIGN_OR_RETURN(auto* flash_tier, AsFlash(tier));
  return flash_tier->Extent(key);
}

Status CorruptFlashBlockForTesting(Tier& tier, const BlockKey& key) {
  KVTIER_ASSIGN_OR_RETURN(auto* flash_tier, AsFlash(tier));
  return flash_tier->Corrupt(key);
}

}  // namespace kvtier
