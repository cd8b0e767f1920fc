// StagingPool: pinned host buffers through which the HBM tier copies blocks
// that live in pageable memory (docs/hbm.md, "Streams, staging and events").
// Internal to tiers/hbm; the tier keeps one pool per copy direction.
//
// A buffer is held by one thread at a time, through a Lease. A buffer may be
// handed back while a copy that reads it is still in flight on the GPU: the
// holder then leaves that copy's event in the lease, and the next holder
// waits for it before writing. Holders wait for nothing but the GPU and
// memcpy, so a full pool cannot deadlock.
//
// Thread-safe. Destruction waits for the buffers' last copies, then frees them.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "common/status.h"
#include "tiers/hbm/hbm_backend.h"
#include "tiers/hbm/stream_events.h"

namespace kvtier {

class StagingPool {
 private:
  struct Buffer {
    std::byte* data = nullptr;
    EventRef last_use;  // the last copy that reads it; null when none is in flight
  };

 public:
  // One buffer, held until the lease goes (move-only).
  class Lease {
   public:
    Lease(Lease&& other) noexcept : pool_(other.pool_), buffer_(other.buffer_) {
      other.buffer_ = nullptr;
    }
    Lease& operator=(Lease&&) = delete;
    Lease(const Lease&) = delete;
    ~Lease() {
      if (buffer_ != nullptr) pool_->Release(*buffer_);
    }

    std::byte* data() const { return buffer_->data; }
    // Marks the buffer busy until `copy` completes: a copy, still in flight,
    // that reads it (null: none).
    void set_last_use(EventRef copy) { buffer_->last_use = std::move(copy); }

   private:
    friend class StagingPool;
    Lease(StagingPool* pool, Buffer* buffer) : pool_(pool), buffer_(buffer) {}

    StagingPool* pool_;
    Buffer* buffer_;
  };

  StagingPool(HbmBackend& backend, uint64_t buffer_bytes)
      : backend_(backend), buffer_bytes_(buffer_bytes) {}
  ~StagingPool();
  StagingPool(const StagingPool&) = delete;
  StagingPool& operator=(const StagingPool&) = delete;

  // Allocates `count` buffers of buffer_bytes() each. Once, before use.
  Status Init(int count);

  uint64_t buffer_bytes() const { return buffer_bytes_; }

  // Blocks until a buffer is free and the last copy that read it is done. An
  // error when that copy cannot be waited for (the buffer goes back).
  Result<Lease> Acquire();

 private:
  void Release(Buffer& b);

  HbmBackend& backend_;
  const uint64_t buffer_bytes_;
  std::vector<Buffer> buffers_;  // fixed after Init; a Buffer belongs to its holder
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<size_t> free_;  // guarded by mu_
};

}  // namespace kvtier
