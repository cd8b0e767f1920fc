#include "server/payload_budget.h"

#include <algorithm>

namespace kvtier {

PayloadBudget::PayloadBudget(uint64_t total_bytes, uint64_t tenant_bytes)
    : total_limit_(total_bytes), tenant_limit_(std::min(tenant_bytes, total_bytes)) {}

PayloadBudget::Hold& PayloadBudget::Hold::operator=(Hold&& other) noexcept {
  if (this != &other) {
    Release();
    budget_ = other.budget_;
    tenant_ = std::move(other.tenant_);
    bytes_ = other.bytes_;
    other.budget_ = nullptr;
    other.bytes_ = 0;
  }
  return *this;
}

bool PayloadBudget::Hold::GrowTo(uint64_t bytes) {
  if (bytes <= bytes_) return true;
  if (budget_ == nullptr || !budget_->Take(tenant_, bytes - bytes_)) return false;
  bytes_ = bytes;
  return true;
}

void PayloadBudget::Hold::Release() {
  if (budget_ != nullptr && bytes_ > 0) budget_->Give(tenant_, bytes_);
  bytes_ = 0;
}

bool PayloadBudget::Take(const std::string& tenant, uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t& mine = tenants_[tenant];
  if (held_ + bytes > total_limit_ || mine + bytes > tenant_limit_) {
    if (mine == 0) tenants_.erase(tenant);
    return false;
  }
  held_ += bytes;
  mine += bytes;
  return true;
}

void PayloadBudget::Give(const std::string& tenant, uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  held_ -= bytes;
  auto it = tenants_.find(tenant);
  it->second -= bytes;
  if (it->second == 0) tenants_.erase(it);
}

uint64_t PayloadBudget::held_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return held_;
}

uint64_t PayloadBudget::held_bytes(const std::string& tenant) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = tenants_.find(tenant);
  return it == tenants_.end() ? 0 : it->second;
}

}  // namespace kvtier
