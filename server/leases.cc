#include "server/leases.h"

#include <algorithm>
#include <chrono>
#include <iterator>

#include "server/random_id.h"

namespace kvtier {

LeaseTable::LeaseTable(const LeaseLimits& limits, Clock* clock, int64_t reap_period_ms)
    : limits_(limits), clock_(clock) {
  if (reap_period_ms > 0) reaper_ = std::thread([this, reap_period_ms] { Reap(reap_period_ms); });
}

LeaseTable::~LeaseTable() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (reaper_.joinable()) reaper_.join();
}

Status LeaseTable::CheckDuration(int64_t ms) const {
  if (ms <= 0 || ms > limits_.max_lease_ms) {
    return Status::InvalidArgument("lease_ms " + std::to_string(ms) + " is outside 1.." +
                                   std::to_string(limits_.max_lease_ms));
  }
  return Status::Ok();
}

Result<Lease> LeaseTable::Grant(const std::string& tenant, std::vector<PinHandle> pins,
                                uint64_t bytes, int64_t ms) {
  KVTIER_RETURN_IF_ERROR(CheckDuration(ms));
  Sweep();
  std::lock_guard<std::mutex> lock(mu_);
  TenantUse& use = tenants_[tenant];
  std::string limit;
  if (use.leases + 1 > limits_.max_leases_per_tenant) {
    limit = std::to_string(limits_.max_leases_per_tenant) + " open leases";
  } else if (use.blocks + pins.size() > limits_.max_blocks_per_tenant) {
    limit = std::to_string(limits_.max_blocks_per_tenant) + " leased blocks";
  } else if (bytes >
             limits_.max_bytes_per_tenant - std::min(use.bytes, limits_.max_bytes_per_tenant)) {
    limit = std::to_string(limits_.max_bytes_per_tenant) + " leased bytes";
  }
  if (!limit.empty()) {
    ++stats_.refused;
    if (use.leases == 0) tenants_.erase(tenant);
    return Status::ResourceExhausted("tenant " + tenant + " would pass its limit of " + limit +
                                     "; release some or wait for them to expire");
  }
  Lease lease{NewRandomId(), clock_->NowMs() + ms};
  ++use.leases;
  use.blocks += pins.size();
  use.bytes += bytes;
  ++stats_.granted;
  ++stats_.open;
  stats_.leased_blocks += pins.size();
  stats_.leased_bytes += bytes;
  leases_.emplace(lease.id, Entry{tenant, std::move(pins), bytes, lease.expire_time_ms});
  return lease;
}

void LeaseTable::Forget(std::unordered_map<std::string, Entry>::iterator it) {
  auto use = tenants_.find(it->second.tenant);
  if (use != tenants_.end()) {
    --use->second.leases;
    use->second.blocks -= it->second.pins.size();
    use->second.bytes -= it->second.bytes;
    if (use->second.leases == 0) tenants_.erase(use);
  }
  --stats_.open;
  stats_.leased_blocks -= it->second.pins.size();
  stats_.leased_bytes -= it->second.bytes;
  leases_.erase(it);  // unpins
}

Result<size_t> LeaseTable::Release(const std::string& tenant, const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = leases_.find(id);
  if (it == leases_.end() || it->second.tenant != tenant ||
      it->second.expire_ms <= clock_->NowMs()) {
    return Status::NotFound("no open lease " + id);
  }
  const size_t blocks = it->second.pins.size();
  Forget(it);
  ++stats_.released;
  return blocks;
}

size_t LeaseTable::Sweep() {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = clock_->NowMs();
  size_t n = 0;
  for (auto it = leases_.begin(); it != leases_.end();) {
    auto next = std::next(it);
    if (it->second.expire_ms <= now) {
      Forget(it);
      ++stats_.expired;
      ++n;
    }
    it = next;
  }
  return n;
}

LeaseStats LeaseTable::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void LeaseTable::Reap(int64_t period_ms) {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    wake_.wait_for(lock, std::chrono::milliseconds(period_ms));
    if (stopping_) break;
    lock.unlock();
    Sweep();
    lock.lock();
  }
}

}  // namespace kvtier
