#include "tiers/hbm/staging_pool.h"

namespace kvtier {

StagingPool::~StagingPool() {
  for (Buffer& b : buffers_) {
    if (b.last_use) (void)backend_.WaitEvent(b.last_use.get());
    b.last_use.reset();
    backend_.FreePinnedHost(b.data);
  }
}

Status StagingPool::Init(int count) {
  for (int i = 0; i < count; ++i) {
    KVTIER_ASSIGN_OR_RETURN(void* p, backend_.AllocatePinnedHost(buffer_bytes_));
    buffers_.push_back({static_cast<std::byte*>(p), nullptr});
    free_.push_back(buffers_.size() - 1);
  }
  return Status::Ok();
}

Result<StagingPool::Lease> StagingPool::Acquire() {
  Buffer* b = nullptr;
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !free_.empty(); });
    b = &buffers_[free_.back()];
    free_.pop_back();
  }
  Lease lease(this, b);
  if (b->last_use) {
    const Status waited = backend_.WaitEvent(b->last_use.get());
    b->last_use.reset();
    KVTIER_RETURN_IF_ERROR(waited);
  }
  return lease;
}

void StagingPool::Release(Buffer& b) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(static_cast<size_t>(&b - buffers_.data()));
  }
  cv_.notify_one();
}

}  // namespace kvtier
