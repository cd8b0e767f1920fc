#include "server/stream_guard.h"

#include <algorithm>
#include <chrono>

namespace kvtier {

StreamGuard::StreamGuard(const StreamLimits& limits, Clock* clock)
    : limits_(limits), clock_(clock) {
  watchdog_ = std::thread([this] { Watch(); });
}

StreamGuard::~StreamGuard() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  watchdog_.join();
}

Status StreamGuard::Configure(const StreamLimits& limits) {
  if (limits.max_streams < 1) return Status::InvalidArgument("max_streams must be at least 1");
  if (limits.max_tenant_streams < 1 || limits.max_tenant_streams > limits.max_streams) {
    return Status::InvalidArgument("max_tenant_streams must be in [1, max_streams]");
  }
  if (limits.idle_ms < 1) return Status::InvalidArgument("the stream idle time must be positive");
  {
    std::lock_guard<std::mutex> lock(mu_);
    limits_ = limits;
  }
  wake_.notify_all();  // the watchdog's period follows idle_ms
  return Status::Ok();
}

Result<StreamGuard::Slot> StreamGuard::Admit(const std::string& tenant,
                                             std::function<void()> cancel, Limit* refused_by) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stats_.open >= limits_.max_streams) {
    ++stats_.refused;
    if (refused_by) *refused_by = Limit::kDaemon;
    return Status::ResourceExhausted("kvtierd is serving its limit of " +
                                     std::to_string(limits_.max_streams) + " streams; retry later");
  }
  int& mine = tenants_[tenant];
  if (mine >= limits_.max_tenant_streams) {
    ++stats_.refused;
    if (refused_by) *refused_by = Limit::kTenant;
    return Status::ResourceExhausted("tenant " + tenant + " has its limit of " +
                                     std::to_string(limits_.max_tenant_streams) +
                                     " streams open; retry later");
  }
  ++mine;
  ++stats_.open;
  ++stats_.admitted;
  entries_.emplace_front();
  entries_.front().tenant = tenant;
  entries_.front().cancel = std::move(cancel);
  return Slot(this, entries_.begin());
}

StreamGuard::Slot::~Slot() {
  if (guard_ != nullptr) guard_->Release(entry_);
}

void StreamGuard::Release(std::list<Entry>::iterator entry) {
  std::lock_guard<std::mutex> lock(mu_);
  auto t = tenants_.find(entry->tenant);
  if (--t->second == 0) tenants_.erase(t);
  --stats_.open;
  entries_.erase(entry);
}

StreamStats StreamGuard::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void StreamGuard::CheckIdle() {
  // Under the lock: a slot cannot be released (and its call's context
  // destroyed) while its cancel runs. TryCancel does not call back into us.
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = clock_->NowMs();
  for (Entry& e : entries_) {
    const int64_t since = e.waiting_since_ms.load();
    if (since == 0 || now - since < limits_.idle_ms || e.cancelled.load()) continue;
    e.cancelled.store(true);
    ++stats_.idle_cancelled;
    if (e.cancel) e.cancel();
  }
}

void StreamGuard::Watch() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    const int64_t period = std::clamp<int64_t>(limits_.idle_ms / 4, 10, 1000);
    wake_.wait_for(lock, std::chrono::milliseconds(period));
    if (stop_) break;
    lock.unlock();
    CheckIdle();
    lock.lock();
  }
}

}  // namespace kvtier
