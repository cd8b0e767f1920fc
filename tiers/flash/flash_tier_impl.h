// FlashTier: the Tier implementation behind OpenFlashTier (flash_tier.h has
// the design). Private to tiers/flash: callers get a Tier from the factory.
// Its members are defined by concept, one file each:
//   flash_tier.cc  opening the device, the Tier methods, the index
//   regions.cc     allocating regions, sealing, freeing and compacting them
//   recovery.cc    rebuilding the index from the log at open
//   io_loop.cc     the io_uring thread: submission, completion, acknowledgement
// Thread-safe: one mutex guards the index, the regions and the queues;
// callbacks run on the I/O thread and must not block on this tier.
#pragma once

#include <liburing.h>

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/block_key.h"
#include "common/status.h"
#include "tiers/calibration.h"
#include "tiers/flash/direct_io.h"
#include "tiers/flash/flash_tier.h"
#include "tiers/flash/io_loop.h"
#include "tiers/flash/record_format.h"
#include "tiers/flash/regions.h"
#include "tiers/tier.h"

namespace kvtier::flash {

// A record found walking a region's chain at open (recovery.cc).
struct RecoveredRecord;
using RecoveredLog = std::vector<std::vector<RecoveredRecord>>;  // by region

class FlashTier final : public Tier {
 public:
  explicit FlashTier(const FlashTierOptions& o);
  ~FlashTier() override;

  // Opens, sizes and recovers the log and starts the I/O thread. Once only.
  Status Open();
  void set_bandwidth(Bandwidth bw);

  TierInfo Info() const override;
  FlashTierStats Stats() const;

  void Write(std::span<const WriteOp> ops, IoCallback done) override;
  void Read(std::span<const ReadOp> ops, IoCallback done) override;
  Status Erase(std::span<const BlockKey> keys) override;
  Status SetExpiry(std::span<const BlockKey> keys, int64_t expiry_ms) override;
  Status Recover(IndexSink& sink) override;

  // Test hooks (flash_tier.h): where `key`'s record lies; flip a payload byte.
  Result<std::pair<uint64_t, uint64_t>> Extent(const BlockKey& key) const;
  Status Corrupt(const BlockKey& key);

 private:
  using Index = std::unordered_map<BlockKey, Location, BlockKeyHash>;

  // flash_tier.cc: the device. OpenDevice opens, locks and sizes it and
  // settles the geometry (device_bytes_, capacity_bytes_).
  Status OpenDevice();
  Status OpenAndLockLog();
  Result<uint64_t> LogBytes();
  Result<uint64_t> SizeLogFile(uint64_t file_bytes);
  Status SetGeometry(uint64_t log_bytes);

  // recovery.cc: RecoverLog walks each region's chain (ScanRegions), drops
  // torn records of the newest regions, and indexes the newest live record
  // of each key. Runs in Open, before the I/O thread starts.
  Status RecoverLog();
  Status ScanRegions(RecoveredLog& found);
  Status ScanRegion(uint32_t r, std::vector<RecoveredRecord>& found);
  Status DiscardTornRecords(RecoveredLog& found);
  void IndexNewestRecords(const RecoveredLog& found);
  void AccountRecoveredRegions();

  // io_loop.cc: the I/O thread and what it calls.
  Status StartIoThread();
  void IoLoop();
  void Wake();
  void ArmWake();
  void ReapCompletions(std::vector<std::pair<IoTask*, int>>* completions);
  // All *Locked methods require mu_.
  void SubmitLocked();
  void SubmitWritesLocked();
  void SubmitReadsLocked();
  void CompleteWriteLocked(const IoTask& task, int res);
  void CompleteRead(std::unique_ptr<PendingRead> r, int res,
                    std::vector<std::shared_ptr<Batch>>* ready);
  void AckWritesLocked(std::vector<std::shared_ptr<Batch>>* ready);
  void FinishLocked(const std::shared_ptr<Batch>& b, size_t i, IoResult r,
                    std::vector<std::shared_ptr<Batch>>* ready);

  // flash_tier.cc: the write path and the index.
  std::optional<uint64_t> TryStagingLocked(uint64_t bytes) const;
  // Validates a write and reserves its staging and log space, queueing it
  // (not yet ready); may wait for staging with `lock` released.
  Status ReserveLocked(const WriteOp& op, bool on_io_thread, std::unique_lock<std::mutex>& lock);
  // Lays out `op` as a record at `loc` (reserved, in a region of `epoch`) in
  // `record`, its staging space; returns the payload checksum. Needs no lock.
  uint64_t StageRecord(const WriteOp& op, const Location& loc, uint64_t epoch,
                       std::byte* record) const;
  void RemoveLocked(Index::iterator it, bool invalidate);
  void RewriteHeaderLocked(const BlockKey& key, const Location& loc, uint32_t flags);
  RecordHeader MakeHeader(const BlockKey& key, const Location& loc, uint64_t epoch,
                          uint32_t flags = 0) const;

  // regions.cc: space on the log.
  Result<Location> AllocateLocked(uint64_t record_bytes);
  void OpenRegionLocked(uint32_t r);
  void SealHeadLocked();
  void MaybeFreeLocked(uint32_t r);
  Status CompactLocked(uint64_t record_bytes);
  Result<uint32_t> CompactionVictimLocked(uint64_t record_bytes) const;
  uint64_t RegionStart(uint32_t r) const { return uint64_t{r} * region_bytes_; }

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
  Index map_;  // acknowledged blocks
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

}  // namespace kvtier::flash
