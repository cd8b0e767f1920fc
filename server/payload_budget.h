// PayloadBudget: the payload bytes that in-flight block calls (Put and Get
// buffers) may hold, daemon-wide and per tenant, so no tenant's slow or
// stalled streams can take the whole budget from the others (DESIGN §9,
// "Limits and backpressure").
//
// A call takes a Hold and grows it as its buffer grows (a Put reserves bytes
// as they arrive, not what its header declares); the Hold gives its bytes
// back when it is destroyed. Thread-safe.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

namespace kvtier {

class PayloadBudget {
 public:
  // total_bytes: what all calls together may hold; tenant_bytes: what one
  // tenant's calls may hold (at most total_bytes).
  PayloadBudget(uint64_t total_bytes, uint64_t tenant_bytes);
  PayloadBudget(const PayloadBudget&) = delete;
  PayloadBudget& operator=(const PayloadBudget&) = delete;

  // Bytes held by one call of one tenant. Move-only; releases on destruction.
  class Hold {
   public:
    Hold() = default;
    Hold(Hold&& other) noexcept { *this = std::move(other); }
    Hold& operator=(Hold&& other) noexcept;
    ~Hold() { Release(); }
    // Raises this call's bytes to `bytes` (no-op when it holds that much).
    // false, changing nothing, when the daemon's or the tenant's share would
    // be exceeded.
    bool GrowTo(uint64_t bytes);
    uint64_t bytes() const { return bytes_; }

   private:
    friend class PayloadBudget;
    Hold(PayloadBudget* budget, std::string tenant) : budget_(budget), tenant_(std::move(tenant)) {}
    void Release();
    PayloadBudget* budget_ = nullptr;
    std::string tenant_;
    uint64_t bytes_ = 0;
  };

  // An empty hold for `tenant`'s call.
  Hold Open(const std::string& tenant) { return Hold(this, tenant); }

  uint64_t total_bytes() const { return total_limit_; }
  uint64_t tenant_bytes() const { return tenant_limit_; }
  uint64_t held_bytes() const;
  uint64_t held_bytes(const std::string& tenant) const;

 private:
  bool Take(const std::string& tenant, uint64_t bytes);
  void Give(const std::string& tenant, uint64_t bytes);

  const uint64_t total_limit_;
  const uint64_t tenant_limit_;
  mutable std::mutex mu_;
  uint64_t held_ = 0;                                  // GUARDED_BY(mu_)
  std::unordered_map<std::string, uint64_t> tenants_;  // GUARDED_BY(mu_); no zero entries
};

}  // namespace kvtier
