#include "tiers/flash/flash_tier.h"

#include <fcntl.h>
#include <liburing.h>
#include <linux/fs.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/checksum.h"
#include "common/log.h"
#include "tiers/calibration.h"

namespace kvtier {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kMagic = 0x3148534c4654564bull;  // "KVTFLSH1", little-endian
constexpr uint32_t kVersion = 1;
constexpr uint32_t kErasedFlag = 1;
constexpr int kReadAttempts = 8;  // a read that raced with compaction is retried

uint64_t RoundUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }
uint64_t RecordBytes(uint64_t payload_bytes) { return kPage + RoundUp(payload_bytes, kPage); }

static_assert(std::endian::native == std::endian::little, "the record format is little-endian");

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

uint64_t HeaderChecksum(const RecordHeader& h) {
  return Checksum64(std::as_bytes(std::span(&h, 1)).first(offsetof(RecordHeader, header_checksum)));
}

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

struct AlignedFree {
  void operator()(std::byte* p) const { std::free(p); }
};
using AlignedBuffer = std::unique_ptr<std::byte[], AlignedFree>;

AlignedBuffer AllocAligned(uint64_t bytes) {
  return AlignedBuffer(static_cast<std::byte*>(
      std::aligned_alloc(kPage, RoundUp(std::max<uint64_t>(bytes, 1), kPage))));
}

std::string ErrnoText(int err) { return std::strerror(err); }

// Full-length positional I/O for the synchronous paths (recovery, header
// rewrites, compaction); false with errno set on failure or a short transfer.
template <typename Buffer, typename Io>
bool TransferAll(Io io, int fd, Buffer* buf, uint64_t bytes, uint64_t offset) {
  while (bytes > 0) {
    ssize_t n = io(fd, buf, bytes, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      return false;
    }
    buf += n;
    bytes -= static_cast<uint64_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return true;
}
bool PreadAll(int fd, std::byte* buf, uint64_t bytes, uint64_t offset) {
  return TransferAll(::pread, fd, buf, bytes, offset);
}
bool PwriteAll(int fd, const std::byte* buf, uint64_t bytes, uint64_t offset) {
  return TransferAll(::pwrite, fd, buf, bytes, offset);
}

// Device write budget: a token bucket holding at most one second of budget
// (or one record, if larger). Relocation is charged without refusal, so the
// bucket may go negative. Guarded by the tier's mutex.
class WriteBudget {
 public:
  WriteBudget(double bytes_per_s, uint64_t max_record_bytes)
      : rate_(bytes_per_s),
        burst_(std::max(bytes_per_s, static_cast<double>(max_record_bytes))),
        tokens_(burst_) {}
  bool Take(uint64_t bytes, int64_t now_ms) {
    if (rate_ <= 0) return true;
    Refill(now_ms);
    if (tokens_ < static_cast<double>(bytes)) return false;
    tokens_ -= static_cast<double>(bytes);
    return true;
  }
  void Charge(uint64_t bytes, int64_t now_ms) {
    if (rate_ <= 0) return;
    Refill(now_ms);
    tokens_ -= static_cast<double>(bytes);
  }
  void Refund(uint64_t bytes) {
    if (rate_ > 0) tokens_ = std::min(burst_, tokens_ + static_cast<double>(bytes));
  }

 private:
  void Refill(int64_t now_ms) {
    if (last_ms_ >= 0 && now_ms > last_ms_) {
      tokens_ = std::min(burst_, tokens_ + rate_ * static_cast<double>(now_ms - last_ms_) / 1000.0);
    }
    last_ms_ = std::max(last_ms_, now_ms);
  }
  double rate_, burst_, tokens_;
  int64_t last_ms_ = -1;
};

// Where a block's record lies, and what its header says.
struct Location {
  uint32_t region = 0;
  uint64_t offset = 0;  // device offset of the header page
  uint64_t seq = 0;
  uint64_t bytes = 0;  // payload
  int64_t expiry_ms = kNoExpiry;
  uint64_t checksum = 0;
  uint64_t record_bytes() const { return RecordBytes(bytes); }
};

struct Region {
  enum class State { kFree, kOpen, kSealed };
  State state = State::kFree;
  uint64_t epoch = 0;
  uint64_t write_end = 0;   // bytes of records appended from the region's start
  uint64_t live_bytes = 0;  // record bytes of indexed blocks
  uint32_t unacked = 0;     // records appended and not yet acknowledged
  std::vector<std::pair<uint64_t, BlockKey>> records;  // (offset in region, key), in log order
};

// The results of one Write or Read call, completed op by op.
struct Batch {
  Batch(size_t n, IoCallback d) : results(n), remaining(n), done(std::move(d)) {}
  std::vector<IoResult> results;
  size_t remaining;
  IoCallback done;
};

struct PendingWrite {
  BlockKey key;
  Location loc;
  uint64_t staging_offset = 0;
  int64_t written_expiry_ms = kNoExpiry;  // the expiry in the header as queued
  std::shared_ptr<Batch> batch;
  size_t op_index = 0;
  bool ready = false;  // copied into staging; may be submitted
  bool submitted = false;
  bool completed = false;
  bool canceled = false;  // erased before it was acknowledged
  Status status;
};

struct PendingRead {
  ReadOp op;
  Location loc;
  std::shared_ptr<Batch> batch;
  size_t op_index = 0;
  int attempts = 0;
  int slot = -1;      // registered read slot, or -1 with `own` holding the record
  AlignedBuffer own;  // for records larger than a slot
};

struct IoTask {
  enum class Kind { kWrite, kRead };
  Kind kind = Kind::kWrite;
  uint64_t first_pos = 0;  // write: queue position of the first record
  uint32_t count = 0;      // write: records in this I/O
  uint64_t bytes = 0;      // bytes transferred when the I/O succeeds
  std::unique_ptr<PendingRead> read;
};

constexpr uint64_t kWakeTag = 0;  // user_data of the eventfd read that wakes the I/O thread

class FlashTier final : public Tier {
 public:
  explicit FlashTier(const FlashTierOptions& o)
      : options_(o),
        region_bytes_(o.region_bytes),
        read_slot_count_(2 * static_cast<uint64_t>(o.queue_depth)),
        budget_(o.write_budget_bytes_per_s, RecordBytes(o.max_block_bytes)) {}

  ~FlashTier() override {
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

  Status Open();
  void set_bandwidth(Bandwidth bw) {
    std::lock_guard<std::mutex> lock(mu_);
    bandwidth_ = bw;
  }

  TierInfo Info() const override {
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

  FlashTierStats Stats() const {
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

  void Write(std::span<const WriteOp> ops, IoCallback done) override;
  void Read(std::span<const ReadOp> ops, IoCallback done) override;
  Status Erase(std::span<const BlockKey> keys) override;
  Status SetExpiry(std::span<const BlockKey> keys, int64_t expiry_ms) override;
  Status Recover(IndexSink& sink) override;

  Result<std::pair<uint64_t, uint64_t>> Extent(const BlockKey& key) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(key);
    if (it == map_.end()) return Status::NotFound("block " + key.ToHex() + " is not in flash");
    return std::make_pair(it->second.offset, it->second.record_bytes());
  }
  Status Corrupt(const BlockKey& key);

 private:
  Status OpenDevice();
  Status RecoverLog();
  void IoLoop();
  void Wake() {
    if (wake_fd_ >= 0) (void)eventfd_write(wake_fd_, 1);
  }
  void ArmWake();
  // All *Locked methods require mu_.
  void SubmitLocked();
  void CompleteWriteLocked(const IoTask& task, int res);
  void CompleteRead(std::unique_ptr<PendingRead> r, int res,
                    std::vector<std::shared_ptr<Batch>>* ready);
  void AckWritesLocked(std::vector<std::shared_ptr<Batch>>* ready);
  void FinishLocked(const std::shared_ptr<Batch>& b, size_t i, IoResult r,
                    std::vector<std::shared_ptr<Batch>>* ready);
  std::optional<uint64_t> TryStagingLocked(uint64_t bytes) const;
  // Validates a write and reserves its staging and log space, queueing it
  // (not yet ready); may wait for staging with `lock` released.
  Status ReserveLocked(const WriteOp& op, bool on_io_thread, std::unique_lock<std::mutex>& lock);
  Result<Location> AllocateLocked(uint64_t record_bytes);
  void OpenRegionLocked(uint32_t r);
  void SealHeadLocked();
  void MaybeFreeLocked(uint32_t r);
  Status CompactLocked(uint64_t record_bytes);
  void RemoveLocked(std::unordered_map<BlockKey, Location, BlockKeyHash>::iterator it,
                    bool invalidate);
  void RewriteHeaderLocked(const BlockKey& key, const Location& loc, uint32_t flags);
  uint64_t RegionStart(uint32_t r) const { return uint64_t{r} * region_bytes_; }
  RecordHeader MakeHeader(const BlockKey& key, const Location& loc, uint64_t epoch,
                          uint32_t flags = 0) const {
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

  const FlashTierOptions options_;
  const uint64_t region_bytes_;
  uint64_t device_bytes_ = 0;
  uint64_t capacity_bytes_ = 0;
  Bandwidth bandwidth_;
  int fd_ = -1;
  int wake_fd_ = -1;
  io_uring ring_{};
  bool ring_ready_ = false;
  bool registered_ = false;
  AlignedBuffer staging_;  // the write staging ring (registered buffer 0)
  // Read slots (registered buffer 1): twice the queue depth, so that new
  // reads are in flight while completed ones are verified and copied out.
  const uint64_t read_slot_count_;
  AlignedBuffer read_slots_;
  std::thread io_thread_;
  uint64_t wake_value_ = 0;  // the I/O thread's eventfd read lands here

  mutable std::mutex mu_;
  std::condition_variable staging_freed_;
  // All below guarded by mu_.
  bool stop_ = false;
  std::unordered_map<BlockKey, Location, BlockKeyHash> map_;  // acknowledged blocks
  std::vector<Region> regions_;
  std::deque<uint32_t> free_regions_;
  int64_t head_ = -1;  // the open region, or -1
  uint64_t next_epoch_ = 1;
  uint64_t next_seq_ = 1;
  uint64_t committed_bytes_ = 0;     // record bytes of indexed and queued records
  uint64_t used_bytes_ = 0;          // payload bytes of indexed blocks
  std::deque<PendingWrite> writes_;  // queued records in log order; the front is acked first
  uint64_t writes_front_pos_ = 0;    // queue position of writes_.front()
  size_t unsubmitted_ = 0;           // index in writes_ of the first record not yet submitted
  uint64_t staging_head_ = 0;        // where the next record is staged
  std::deque<std::unique_ptr<PendingRead>> read_queue_;
  std::vector<int> free_slots_;
  int inflight_ = 0;  // I/Os submitted and not completed (not counting the wake read)
  WriteBudget budget_;
  AlignedBuffer header_page_;  // for header rewrites
  AlignedBuffer compaction_buffer_;
  uint64_t corruption_errors_ = 0, io_errors_ = 0, bytes_written_ = 0, relocated_bytes_ = 0,
           compactions_ = 0, budget_refusals_ = 0, discarded_records_ = 0;
};

Status FlashTier::OpenDevice() {
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
  struct stat st {};
  if (::fstat(fd_, &st) != 0)
    return Status::IOError("fstat " + options_.path + ": " + ErrnoText(errno));
  uint64_t device = options_.device_bytes;
  if (S_ISBLK(st.st_mode)) {
    uint64_t size = 0;
    if (::ioctl(fd_, BLKGETSIZE64, &size) != 0) {
      return Status::IOError("BLKGETSIZE64 " + options_.path + ": " + ErrnoText(errno));
    }
    if (device == 0 || device > size) device = size;
  } else if (S_ISREG(st.st_mode)) {
    const uint64_t size = static_cast<uint64_t>(st.st_size);
    if (device == 0) {
      device = size > 0
                   ? size
                   : RoundUp(options_.capacity_bytes + options_.capacity_bytes / 8, region_bytes_) +
                         2 * region_bytes_;
    }
    device = device / region_bytes_ * region_bytes_;
    if (size != device) {
      if (options_.preallocate && size < device) {
        // Refuse up front what cannot fit: posix_fallocate would fill the
        // file system before failing, starving everything else on it.
        struct statvfs vfs {};
        const bool known = ::fstatvfs(fd_, &vfs) == 0;
        const uint64_t free_bytes = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
        const int err = known && free_bytes < device - size
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
    }
  } else {
    return Status::InvalidArgument("flash log " + options_.path +
                                   " is neither a regular file nor a block device");
  }
  device_bytes_ = device / region_bytes_ * region_bytes_;
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
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC);
  if (wake_fd_ < 0) return Status::IOError("eventfd: " + ErrnoText(errno));
  const int err =
      io_uring_queue_init(static_cast<unsigned>(2 * options_.queue_depth + 2), &ring_, 0);
  if (err < 0) return Status::Unavailable("io_uring is not available: " + ErrnoText(-err));
  ring_ready_ = true;
  iovec bufs[2] = {{staging_.get(), options_.staging_bytes},
                   {read_slots_.get(), options_.read_slot_bytes * read_slot_count_}};
  const int reg = io_uring_register_buffers(&ring_, bufs, 2);
  registered_ = reg == 0;
  if (!registered_) {
    LogWarn("flash buffers not registered; using plain I/O",
            LogFields().Add("path", options_.path).Add("error", ErrnoText(-reg)));
  }
  io_thread_ = std::thread([this] { IoLoop(); });
  LogInfo("flash tier open", LogFields()
                                 .Add("path", options_.path)
                                 .Add("device_bytes", device_bytes_)
                                 .Add("capacity_bytes", capacity_bytes_)
                                 .Add("regions", regions_.size())
                                 .Add("blocks", map_.size())
                                 .Add("discarded_records", discarded_records_));
  return Status::Ok();
}

Status FlashTier::RecoverLog() {
  struct Found {
    BlockKey key;
    Location loc;
    uint32_t flags;
  };
  std::vector<std::vector<Found>> found(regions_.size());
  uint64_t max_epoch = 0, max_seq = 0;
  std::byte* page = header_page_.get();
  for (uint32_t r = 0; r < regions_.size(); ++r) {
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
      found[r].push_back({BlockKey{h->key_hi, h->key_lo}, loc, h->flags});
      max_seq = std::max(max_seq, h->seq);
      off += rb;
    }
    regions_[r].epoch = epoch.value_or(0);
    regions_[r].write_end = off;
    max_epoch = std::max(max_epoch, regions_[r].epoch);
  }
  next_epoch_ = max_epoch + 1;
  next_seq_ = max_seq + 1;

  // A crash can catch mid-write only the records still in staging: at most
  // staging_bytes at the end of the log, which span the newest
  // staging_bytes / region_bytes + 2 regions. Verify their payloads.
  const size_t verified = options_.staging_bytes / region_bytes_ + 2;
  std::vector<uint32_t> by_epoch;
  for (uint32_t r = 0; r < regions_.size(); ++r) {
    if (!found[r].empty()) by_epoch.push_back(r);
  }
  std::sort(by_epoch.begin(), by_epoch.end(),
            [&](uint32_t a, uint32_t b) { return regions_[a].epoch > regions_[b].epoch; });
  for (size_t i = 0; i < std::min(by_epoch.size(), verified); ++i) {
    for (Found& f : found[by_epoch[i]]) {
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

  // The newest live, unexpired record of each key wins; older ones are marked
  // erased so that erasing the winner later cannot bring them back.
  const int64_t now = options_.clock->NowMs();
  for (uint32_t r = 0; r < regions_.size(); ++r) {
    for (const Found& f : found[r]) {
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
  return Status::Ok();
}

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

Status FlashTier::CompactLocked(uint64_t record_bytes) {
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
  const auto v = static_cast<uint32_t>(victim);
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

void FlashTier::RemoveLocked(std::unordered_map<BlockKey, Location, BlockKeyHash>::iterator it,
                             bool invalidate) {
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

void FlashTier::FinishLocked(const std::shared_ptr<Batch>& b, size_t i, IoResult r,
                             std::vector<std::shared_ptr<Batch>>* ready) {
  b->results[i] = std::move(r);
  if (--b->remaining == 0) ready->push_back(b);
}

void FlashTier::Write(std::span<const WriteOp> ops, IoCallback done) {
  auto batch = std::make_shared<Batch>(ops.size(), std::move(done));
  std::vector<std::shared_ptr<Batch>> ready;
  const bool on_io_thread = std::this_thread::get_id() == io_thread_.get_id();
  for (size_t i = 0; i < ops.size(); ++i) {
    const WriteOp& op = ops[i];
    const uint64_t rb = RecordBytes(op.payload.size());
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
    const uint64_t checksum =
        CopyAndChecksum64(op.payload, std::span(record + kPage, op.payload.size()));
    std::memset(record + kPage + op.payload.size(), 0, rb - kPage - op.payload.size());
    Location written = loc;
    written.bytes = op.payload.size();
    written.expiry_ms = op.expiry_ms;
    written.checksum = checksum;
    EncodeHeader(MakeHeader(op.key, written, epoch), record);
    lock.lock();
    PendingWrite& w = writes_[pos - writes_front_pos_];
    w.loc.checksum = checksum;
    w.ready = true;
    lock.unlock();
    Wake();
  }
  for (auto& b : ready) b->done(std::move(b->results));
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
    budget_.Refund(rb);
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

void FlashTier::ArmWake() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  io_uring_prep_read(sqe, wake_fd_, &wake_value_, sizeof wake_value_, 0);
  io_uring_sqe_set_data64(sqe, kWakeTag);
}

void FlashTier::SubmitLocked() {
  const int depth = options_.queue_depth;
  while (inflight_ < depth && unsubmitted_ < writes_.size() && writes_[unsubmitted_].ready) {
    // Coalesce records adjacent both in staging and on the device.
    const size_t first = unsubmitted_;
    const PendingWrite& w = writes_[first];
    uint64_t len = w.loc.record_bytes();
    size_t end = first + 1;
    while (end < writes_.size()) {
      const PendingWrite& n = writes_[end];
      const uint64_t rb = n.loc.record_bytes();
      if (!n.ready || n.loc.offset != w.loc.offset + len ||
          n.staging_offset != w.staging_offset + len || len + rb > options_.max_write_bytes) {
        break;
      }
      len += rb;
      ++end;
    }
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) break;
    std::byte* src = staging_.get() + w.staging_offset;
    if (registered_) {
      io_uring_prep_write_fixed(sqe, fd_, src, static_cast<unsigned>(len), w.loc.offset, 0);
    } else {
      io_uring_prep_write(sqe, fd_, src, static_cast<unsigned>(len), w.loc.offset);
    }
    auto* task = new IoTask;
    task->kind = IoTask::Kind::kWrite;
    task->first_pos = writes_front_pos_ + first;
    task->count = static_cast<uint32_t>(end - first);
    task->bytes = len;
    io_uring_sqe_set_data(sqe, task);
    for (size_t i = first; i < end; ++i) writes_[i].submitted = true;
    unsubmitted_ = end;
    ++inflight_;
  }
  while (inflight_ < depth && !read_queue_.empty()) {
    PendingRead& r = *read_queue_.front();
    const uint64_t rb = r.loc.record_bytes();
    std::byte* dst = nullptr;
    if (rb <= options_.read_slot_bytes) {
      if (free_slots_.empty()) break;
      r.slot = free_slots_.back();
      free_slots_.pop_back();
      dst = read_slots_.get() + static_cast<uint64_t>(r.slot) * options_.read_slot_bytes;
    } else {
      r.own = AllocAligned(rb);
      dst = r.own.get();
    }
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) {
      if (r.slot >= 0) free_slots_.push_back(r.slot);
      r.slot = -1;
      break;
    }
    if (registered_ && r.slot >= 0) {
      io_uring_prep_read_fixed(sqe, fd_, dst, static_cast<unsigned>(rb), r.loc.offset, 1);
    } else {
      io_uring_prep_read(sqe, fd_, dst, static_cast<unsigned>(rb), r.loc.offset);
    }
    auto* task = new IoTask;
    task->kind = IoTask::Kind::kRead;
    task->bytes = rb;
    task->read = std::move(read_queue_.front());
    read_queue_.pop_front();
    io_uring_sqe_set_data(sqe, task);
    ++inflight_;
  }
}

void FlashTier::IoLoop() {
  ArmWake();
  std::vector<std::pair<IoTask*, int>> completions;
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      SubmitLocked();
      if (stop_ && inflight_ == 0 && writes_.empty() && read_queue_.empty()) break;
    }
    int err = io_uring_submit_and_wait(&ring_, 1);
    if (err < 0 && err != -EINTR && err != -EAGAIN && err != -EBUSY) {
      LogError("flash io_uring submit failed", LogFields().Add("error", ErrnoText(-err)));
    }
    completions.clear();
    io_uring_cqe* cqe = nullptr;
    unsigned head = 0, seen = 0;
    bool rearm = false;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      ++seen;
      if (cqe->user_data == kWakeTag) {
        rearm = true;
      } else {
        completions.emplace_back(reinterpret_cast<IoTask*>(cqe->user_data), cqe->res);
      }
    }
    io_uring_cq_advance(&ring_, seen);
    if (rearm) ArmWake();

    std::vector<std::shared_ptr<Batch>> ready;
    std::vector<std::pair<std::unique_ptr<PendingRead>, int>> reads;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& [task, res] : completions) {
        --inflight_;
        if (task->kind == IoTask::Kind::kRead) {
          reads.emplace_back(std::move(task->read), res);
        } else {
          CompleteWriteLocked(*task, res);
        }
        delete task;
      }
      AckWritesLocked(&ready);
      // Refill the queue before verifying the reads: the device stays busy
      // while their bytes are checked and copied out.
      SubmitLocked();
    }
    if (!reads.empty()) (void)io_uring_submit(&ring_);
    for (auto& [r, res] : reads) CompleteRead(std::move(r), res, &ready);
    for (auto& b : ready) b->done(std::move(b->results));
  }
}

void FlashTier::CompleteWriteLocked(const IoTask& task, int res) {
  Status s;
  if (res < 0 || static_cast<uint64_t>(res) != task.bytes) {
    ++io_errors_;
    const std::string why = res < 0 ? ErrnoText(-res) : "short write";
    s = Status::IOError("flash write failed: " + why);
    LogError("flash write failed", LogFields().Add("path", options_.path).Add("error", why));
  } else {
    bytes_written_ += task.bytes;
  }
  for (uint64_t p = task.first_pos; p < task.first_pos + task.count; ++p) {
    PendingWrite& w = writes_[p - writes_front_pos_];
    w.completed = true;
    w.status = s;
    // A hole in the open region would cut its chain at recovery: later
    // records go to a fresh region.
    if (!s.ok() && head_ == static_cast<int64_t>(w.loc.region)) SealHeadLocked();
  }
}

void FlashTier::CompleteRead(std::unique_ptr<PendingRead> r, int res,
                             std::vector<std::shared_ptr<Batch>>* ready) {
  const uint64_t rb = r->loc.record_bytes();
  const std::byte* buf =
      r->slot >= 0 ? read_slots_.get() + static_cast<uint64_t>(r->slot) * options_.read_slot_bytes
                   : r->own.get();
  enum class Outcome { kOk, kMismatch, kIoError } outcome = Outcome::kOk;
  if (res < 0 || static_cast<uint64_t>(res) != rb) {
    outcome = Outcome::kIoError;
  } else {
    // Verify before copying: a refused read leaves the destination as it was.
    // The payload must match the checksum the index held when the read was
    // issued, and a valid header must name that record. A header marked
    // erased since then still names it (the block was replaced or erased
    // after the read began, and these are its bytes); a header that fails its
    // own checksum was caught mid-rewrite and is no evidence either way.
    std::optional<RecordHeader> h = DecodeHeader(buf, region_bytes_);
    const std::span<const std::byte> payload(buf + kPage, r->loc.bytes);
    const bool other_record = h && (h->key_hi != r->op.key.hi || h->key_lo != r->op.key.lo ||
                                    h->seq != r->loc.seq || h->payload_bytes != r->loc.bytes);
    if (other_record || Checksum64(payload) != r->loc.checksum) {
      outcome = Outcome::kMismatch;
    } else {
      std::memcpy(r->op.dest.data(), payload.data(), payload.size());
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (r->slot >= 0) free_slots_.push_back(r->slot);
  r->slot = -1;
  r->own.reset();
  IoResult result;
  auto it = map_.find(r->op.key);
  if (outcome == Outcome::kOk) {
    result = {Status::Ok(), r->loc.bytes};
  } else if (outcome == Outcome::kIoError) {
    ++io_errors_;
    result = {Status::IOError("flash read failed: " +
                              (res < 0 ? ErrnoText(-res) : std::string("short read"))),
              0};
  } else if (it == map_.end()) {
    result = {Status::NotFound("block " + r->op.key.ToHex() + " was erased while read"), 0};
  } else if (it->second.seq != r->loc.seq) {
    // Moved by compaction or replaced while the read was in flight: read the
    // current record.
    if (++r->attempts < kReadAttempts) {
      r->loc = it->second;
      read_queue_.push_back(std::move(r));
      return;
    }
    result = {Status::NotFound("block " + r->op.key.ToHex() + " kept moving while read"), 0};
  } else {
    ++corruption_errors_;
    LogWarn("flash checksum mismatch",
            LogFields().Add("key", r->op.key.ToHex()).Add("offset", r->loc.offset));
    RemoveLocked(it, /*invalidate=*/true);
    std::memset(r->op.dest.data(), 0, r->op.dest.size());
    result = {Status::Corruption("block " + r->op.key.ToHex() + " failed its checksum in flash"),
              0};
  }
  FinishLocked(r->batch, r->op_index, std::move(result), ready);
}

void FlashTier::AckWritesLocked(std::vector<std::shared_ptr<Batch>>* ready) {
  bool freed = false;
  while (!writes_.empty() && writes_.front().completed) {
    PendingWrite& w = writes_.front();
    Region& region = regions_[w.loc.region];
    --region.unacked;
    const uint64_t rb = w.loc.record_bytes();
    if (w.status.ok() && !w.canceled) {
      if (auto old = map_.find(w.key); old != map_.end()) RemoveLocked(old, /*invalidate=*/true);
      map_[w.key] = w.loc;
      region.live_bytes += rb;
      used_bytes_ += w.loc.bytes;
      if (w.loc.expiry_ms != w.written_expiry_ms) RewriteHeaderLocked(w.key, w.loc, 0);
    } else {
      committed_bytes_ -= rb;
      if (w.status.ok()) RewriteHeaderLocked(w.key, w.loc, kErasedFlag);  // erased in flight
    }
    FinishLocked(w.batch, w.op_index, {w.status, w.status.ok() ? w.loc.bytes : 0}, ready);
    const uint32_t r = w.loc.region;
    writes_.pop_front();
    ++writes_front_pos_;
    --unsubmitted_;
    MaybeFreeLocked(r);
    freed = true;
  }
  if (freed) staging_freed_.notify_all();
}

FlashTier* AsFlash(const Tier& tier) { return dynamic_cast<FlashTier*>(const_cast<Tier*>(&tier)); }

}  // namespace

Result<std::unique_ptr<Tier>> OpenFlashTier(const FlashTierOptions& options) {
  const FlashTierOptions& o = options;
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
  std::error_code ec;
  const bool existed = std::filesystem::exists(o.path, ec);
  auto tier = std::make_unique<FlashTier>(o);
  if (Status s = tier->Open(); !s.ok()) {
    tier.reset();
    if (!existed) std::filesystem::remove(o.path, ec);  // a failed open leaves nothing behind
    return s;
  }
  tier->set_bandwidth(ConfiguredOrMeasured(*tier, o.read_bytes_per_s, o.write_bytes_per_s));
  return std::unique_ptr<Tier>(std::move(tier));
}

Result<FlashTierStats> GetFlashTierStats(const Tier& tier) {
  FlashTier* f = AsFlash(tier);
  if (f == nullptr) return Status::InvalidArgument("not a flash tier");
  return f->Stats();
}

Result<std::pair<uint64_t, uint64_t>> FlashRecordExtentForTesting(Tier& tier, const BlockKey& key) {
  FlashTier* f = AsFlash(tier);
  if (f == nullptr) return Status::InvalidArgument("not a flash tier");
  return f->Extent(key);
}

Status CorruptFlashBlockForTesting(Tier& tier, const BlockKey& key) {
  FlashTier* f = AsFlash(tier);
  if (f == nullptr) return Status::InvalidArgument("not a flash tier");
  return f->Corrupt(key);
}

}  // namespace kvtier
