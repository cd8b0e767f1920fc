#include "tiers/hbm/block_copier.h"

#include <algorithm>
#include <cstring>

#include "common/log.h"

namespace kvtier {
namespace {

// Cuts `blocks` (in op order) into runs that one copy can move: consecutive
// blocks of one memory kind that lie back to back in the arena and in the
// caller's memory. Pageable blocks need only the arena side: the staging
// memcpy gathers or scatters them wherever they are.
std::vector<std::span<const BlockCopy>> SplitIntoRuns(std::span<const BlockCopy> blocks) {
  std::vector<std::span<const BlockCopy>> runs;
  for (size_t i = 0; i < blocks.size();) {
    const bool gathered = blocks[i].kind == MemoryKind::kPageable;
    size_t j = i + 1;
    while (j < blocks.size() && blocks[j].kind == blocks[i].kind &&
           blocks[j].arena_offset == blocks[j - 1].arena_offset + blocks[j - 1].bytes &&
           (gathered || blocks[j].buffer == blocks[j - 1].buffer + blocks[j - 1].bytes)) {
      ++j;
    }
    runs.push_back(blocks.subspan(i, j - i));
    i = j;
  }
  return runs;
}

// Bytes a run covers in the arena, from its first block's start to its last
// block's end.
uint64_t ArenaSpan(std::span<const BlockCopy> run) {
  return run.back().arena_offset + run.back().bytes - run.front().arena_offset;
}

void LogCopyFailed(const Status& s) {
  LogError("hbm_copy_failed", LogFields().Add("error", s.ToString()));
}

}  // namespace

// Walks a staged run's blocks in order, a staging buffer-full at a time:
// gathers their bytes into a buffer (to HBM) or scatters a buffer over them
// (from HBM).
class BlockCopier::RunCursor {
 public:
  explicit RunCursor(std::span<const BlockCopy> run) : run_(run) {}

  void Gather(std::byte* buf, uint64_t n) {
    Walk(n,
         [buf](std::byte* block, uint64_t at, uint64_t len) { std::memcpy(buf + at, block, len); });
  }
  void Scatter(const std::byte* buf, uint64_t n) {
    Walk(n,
         [buf](std::byte* block, uint64_t at, uint64_t len) { std::memcpy(block, buf + at, len); });
  }

 private:
  // Calls move(block bytes, offset in the buffer, length) for the next n
  // bytes of the run, a block at a time.
  template <typename Move>
  void Walk(uint64_t n, Move move) {
    for (uint64_t moved = 0; moved < n;) {
      const BlockCopy& block = run_[block_];
      const uint64_t take = std::min(n - moved, block.bytes - block_done_);
      move(block.buffer + block_done_, moved, take);
      moved += take;
      block_done_ += take;
      if (block_done_ == block.bytes) {
        ++block_;
        block_done_ = 0;
      }
    }
  }

  const std::span<const BlockCopy> run_;
  size_t block_ = 0;         // the block the next byte belongs to
  uint64_t block_done_ = 0;  // bytes of it already moved
};

BlockCopier::BlockCopier(HbmBackend& backend, StreamEvents& events, uint64_t staging_buffer_bytes)
    : backend_(backend),
      events_(events),
      arena_(backend.arena()),
      to_hbm_staging_(backend, staging_buffer_bytes),
      from_hbm_staging_(backend, staging_buffer_bytes) {}

Status BlockCopier::Init(int staging_buffers) {
  KVTIER_RETURN_IF_ERROR(to_hbm_staging_.Init(staging_buffers));
  return from_hbm_staging_.Init(staging_buffers);
}

std::vector<Status> BlockCopier::CopyHost(CopyDirection direction,
                                          std::span<const BlockCopy> blocks) {
  std::vector<Status> status(blocks.size());
  for (std::span<const BlockCopy> run : SplitIntoRuns(blocks)) {
    Status s;
    if (run.front().kind == MemoryKind::kPageable) {
      s = CopyStaged(direction, run);
    } else {
      s = CopyDirect(direction, run, HostStream(direction));
      if (s.ok()) CountHostCopy(direction, ArenaSpan(run), /*staged=*/false);
    }
    if (s.ok()) continue;
    LogCopyFailed(s);
    const size_t first = static_cast<size_t>(run.data() - blocks.data());
    std::fill_n(status.begin() + first, run.size(), s);
  }
  return status;
}

Status BlockCopier::CopyDevice(CopyDirection direction, std::span<const BlockCopy> blocks,
                               GpuStream stream) {
  for (std::span<const BlockCopy> run : SplitIntoRuns(blocks)) {
    Status s = CopyDirect(direction, run, stream);
    if (!s.ok()) {
      LogCopyFailed(s);
      return s;
    }
    d2d_copies_.fetch_add(1, std::memory_order_relaxed);
  }
  return Status::Ok();
}

HbmTierStats BlockCopier::stats() const {
  HbmTierStats s;
  s.h2d_copies = h2d_copies_.load(std::memory_order_relaxed);
  s.d2h_copies = d2h_copies_.load(std::memory_order_relaxed);
  s.d2d_copies = d2d_copies_.load(std::memory_order_relaxed);
  s.copies_issued = s.h2d_copies + s.d2h_copies + s.d2d_copies;
  s.staged_bytes = staged_bytes_.load(std::memory_order_relaxed);
  s.direct_bytes = direct_bytes_.load(std::memory_order_relaxed);
  return s;
}

GpuStream BlockCopier::HostStream(CopyDirection direction) const {
  return direction == CopyDirection::kToHbm ? backend_.h2d_stream() : backend_.d2h_stream();
}

Status BlockCopier::CopyDirect(CopyDirection direction, std::span<const BlockCopy> run,
                               GpuStream stream) {
  std::byte* const dev = arena_ + run.front().arena_offset;
  std::byte* const buffer = run.front().buffer;
  return direction == CopyDirection::kToHbm
             ? backend_.CopyAsync(dev, buffer, ArenaSpan(run), stream)
             : backend_.CopyAsync(buffer, dev, ArenaSpan(run), stream);
}

Status BlockCopier::CopyStaged(CopyDirection direction, std::span<const BlockCopy> run) {
  const uint64_t total = ArenaSpan(run);
  std::byte* const dev = arena_ + run.front().arena_offset;
  const uint64_t buffer_bytes =
      (direction == CopyDirection::kToHbm ? to_hbm_staging_ : from_hbm_staging_).buffer_bytes();
  RunCursor cursor(run);
  for (uint64_t done = 0; done < total;) {
    const uint64_t n = std::min(buffer_bytes, total - done);
    KVTIER_RETURN_IF_ERROR(direction == CopyDirection::kToHbm
                               ? StageToHbm(cursor, dev + done, n)
                               : StageFromHbm(dev + done, n, cursor));
    CountHostCopy(direction, n, /*staged=*/true);
    done += n;
  }
  return Status::Ok();
}

// Asynchronous: the buffer goes back with this copy's event, which its next
// holder waits for before writing.
Status BlockCopier::StageToHbm(RunCursor& run, std::byte* dev, uint64_t bytes) {
  const GpuStream stream = backend_.h2d_stream();
  KVTIER_ASSIGN_OR_RETURN(StagingPool::Lease buf, to_hbm_staging_.Acquire());
  run.Gather(buf.data(), bytes);
  KVTIER_RETURN_IF_ERROR(backend_.CopyAsync(dev, buf.data(), bytes, stream));
  KVTIER_ASSIGN_OR_RETURN(EventRef copied, events_.Mark(stream));
  buf.set_last_use(std::move(copied));
  return Status::Ok();
}

// Synchronous: the bytes must be in the buffer before they can be scattered.
Status BlockCopier::StageFromHbm(const std::byte* dev, uint64_t bytes, RunCursor& run) {
  const GpuStream stream = backend_.d2h_stream();
  KVTIER_ASSIGN_OR_RETURN(StagingPool::Lease buf, from_hbm_staging_.Acquire());
  KVTIER_RETURN_IF_ERROR(backend_.CopyAsync(buf.data(), dev, bytes, stream));
  KVTIER_ASSIGN_OR_RETURN(EventRef copied, events_.Mark(stream));
  // A null event: Mark waited for the stream on the host already.
  if (copied) KVTIER_RETURN_IF_ERROR(backend_.WaitEvent(copied.get()));
  run.Scatter(buf.data(), bytes);
  return Status::Ok();
}

void BlockCopier::CountHostCopy(CopyDirection direction, uint64_t bytes, bool staged) {
  (direction == CopyDirection::kToHbm ? h2d_copies_ : d2h_copies_)
      .fetch_add(1, std::memory_order_relaxed);
  (staged ? staged_bytes_ : direct_bytes_).fetch_add(bytes, std::memory_order_relaxed);
}

}  // namespace kvtier
