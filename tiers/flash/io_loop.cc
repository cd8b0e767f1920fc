// The flash tier's I/O thread: it owns the io_uring ring, submits queued
// record writes (coalescing neighbours) and block reads up to queue_depth,
// and handles their completions: reads are verified and copied out, writes
// acknowledged in log order. FlashTier members (flash_tier_impl.h).
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/checksum.h"
#include "common/log.h"
#include "tiers/flash/flash_tier_impl.h"

namespace kvtier::flash {
namespace {

constexpr uint64_t kWakeTag = 0;  // user_data of the eventfd read that wakes the I/O thread
constexpr int kReadAttempts = 8;  // a read that raced with compaction is retried

enum class ReadOutcome { kOk, kMismatch, kIoError };

// Checks a finished read of `r`'s record, now in `buf`, and copies the
// payload to the caller in the same pass as its checksum (one pass over
// memory, as the DRAM and RocksDB tiers read). The payload must match the
// checksum the index held when the read was issued, and a valid header must
// name that record; a header that names another record is refused before
// anything is copied. On a checksum mismatch the copied bytes are zeroed, so
// no byte of a refused read is left in the destination. A header marked
// erased since the read began still names it (the block was replaced or
// erased after the read began, and these are its bytes); a header that fails
// its own checksum was caught mid-rewrite and is no evidence either way.
ReadOutcome VerifyAndCopyOut(const PendingRead& r, const std::byte* buf, int res,
                             uint64_t region_bytes) {
  if (res < 0 || static_cast<uint64_t>(res) != r.loc.record_bytes()) return ReadOutcome::kIoError;
  std::optional<RecordHeader> h = DecodeHeader(buf, region_bytes);
  const std::span<const std::byte> payload(buf + kPage, r.loc.bytes);
  const bool other_record = h && (h->key_hi != r.op.key.hi || h->key_lo != r.op.key.lo ||
                                  h->seq != r.loc.seq || h->payload_bytes != r.loc.bytes);
  if (other_record || r.loc.bytes > r.op.dest.size()) return ReadOutcome::kMismatch;
  const std::span<std::byte> dest = r.op.dest.first(payload.size());
  if (CopyAndChecksum64(payload, dest) != r.loc.checksum) {
    std::memset(dest.data(), 0, dest.size());
    return ReadOutcome::kMismatch;
  }
  return ReadOutcome::kOk;
}

}  // namespace

Status FlashTier::StartIoThread() {
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
  return Status::Ok();
}

void FlashTier::Wake() {
  if (wake_fd_ >= 0) (void)eventfd_write(wake_fd_, 1);
}

void FlashTier::ArmWake() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  io_uring_prep_read(sqe, wake_fd_, &wake_value_, sizeof wake_value_, 0);
  io_uring_sqe_set_data64(sqe, kWakeTag);
}

void FlashTier::SubmitLocked() {
  SubmitWritesLocked();
  SubmitReadsLocked();
}

void FlashTier::SubmitWritesLocked() {
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
}

void FlashTier::SubmitReadsLocked() {
  const int depth = options_.queue_depth;
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
    ReapCompletions(&completions);

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

// Replaces `completions` with the I/Os the ring has completed (task, result),
// and re-arms the wake-up read if it fired.
void FlashTier::ReapCompletions(std::vector<std::pair<IoTask*, int>>* completions) {
  completions->clear();
  io_uring_cqe* cqe = nullptr;
  unsigned head = 0, seen = 0;
  bool rearm = false;
  io_uring_for_each_cqe(&ring_, head, cqe) {
    ++seen;
    if (cqe->user_data == kWakeTag) {
      rearm = true;
    } else {
      completions->emplace_back(reinterpret_cast<IoTask*>(cqe->user_data), cqe->res);
    }
  }
  io_uring_cq_advance(&ring_, seen);
  if (rearm) ArmWake();
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
  const std::byte* buf =
      r->slot >= 0 ? read_slots_.get() + static_cast<uint64_t>(r->slot) * options_.read_slot_bytes
                   : r->own.get();
  const ReadOutcome outcome = VerifyAndCopyOut(*r, buf, res, region_bytes_);
  std::lock_guard<std::mutex> lock(mu_);
  if (r->slot >= 0) free_slots_.push_back(r->slot);
  r->slot = -1;
  r->own.reset();
  IoResult result;
  auto it = map_.find(r->op.key);
  if (outcome == ReadOutcome::kOk) {
    result = {Status::Ok(), r->loc.bytes};
  } else if (outcome == ReadOutcome::kIoError) {
    ++io_errors_;
    result = {Status::IOError("flash read failed: " +
                              (res < 0 ? ErrnoText(-res) : std::string("short read"))),
              0};
  } else if (it == map_.end()) {
    result = {Status::NotFound("block " + r->op.key.ToHex() + " was erased while read"), 0};
  } else if (it->second.seq != r->loc.seq && it->second.bytes > r->op.dest.size()) {
    // Replaced while the read was in flight by a block larger than the
    // destination: as Read answers such a block, nothing copied.
    result = {Status::ResourceExhausted("read buffer too small"), it->second.bytes};
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

// Acknowledges, in log order, the completed writes at the front of the queue:
// a successful one enters the index (replacing the key's older record); a
// failed or canceled one gives its space back.
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

void FlashTier::FinishLocked(const std::shared_ptr<Batch>& b, size_t i, IoResult r,
                             std::vector<std::shared_ptr<Batch>>* ready) {
  b->results[i] = std::move(r);
  if (--b->remaining == 0) ready->push_back(b);
}

}  // namespace kvtier::flash
