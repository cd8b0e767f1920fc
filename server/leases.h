// LeaseTable: leases on cached blocks, for the block API's BatchLookup
// (docs/block-api.md). A lease holds the pins of a run of blocks, so none of
// them is evicted, demoted or erased while an engine copies them; it ends at
// Release, or when its time is up (a reaper thread releases it, so a client
// that dies holds nothing for longer than its lease).
//
// Leases are bounded per tenant (count, pinned blocks and their bytes), so no
// tenant can pin the cache full. A lease id is 128 random bits, in hex, and only its
// tenant can release it. Thread-safe.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "cache/block_index.h"
#include "common/clock.h"
#include "common/status.h"

namespace kvtier {

struct LeaseLimits {
  int64_t max_lease_ms = 60'000;           // a longer lease is refused
  size_t max_leases_per_tenant = 1024;     // open at once
  size_t max_blocks_per_tenant = 1 << 16;  // pinned by its open leases
  // Payload bytes pinned by its open leases. Pinned blocks cannot be
  // evicted: a tenant pinning every tier full would make everyone's writes
  // fail (kvtierd's default: a quarter of the cache's capacity).
  uint64_t max_bytes_per_tenant = UINT64_MAX;
};

struct LeaseStats {
  uint64_t open = 0;           // leases open now
  uint64_t leased_blocks = 0;  // blocks they pin
  uint64_t leased_bytes = 0;   // those blocks' payload bytes
  uint64_t granted = 0;
  uint64_t released = 0;  // by Release
  uint64_t expired = 0;   // by their time running out
  uint64_t refused = 0;   // over a tenant's limits
};

struct Lease {
  std::string id;
  int64_t expire_time_ms = 0;  // Unix ms
};

class LeaseTable {
 public:
  // `reap_period_ms`: how often the reaper looks for expired leases (real
  // time; expiry itself is read from `clock`). 0: no reaper (tests call Sweep).
  LeaseTable(const LeaseLimits& limits, Clock* clock, int64_t reap_period_ms = 200);
  ~LeaseTable();
  LeaseTable(const LeaseTable&) = delete;
  LeaseTable& operator=(const LeaseTable&) = delete;

  // Checks a lease length against the limits: kInvalidArgument naming lease_ms.
  Status CheckDuration(int64_t ms) const;
  // Holds `pins` (of blocks of `bytes` in all) for `tenant` for `ms`.
  // kInvalidArgument for a bad length, kResourceExhausted over the tenant's
  // limits (the pins are dropped).
  Result<Lease> Grant(const std::string& tenant, std::vector<PinHandle> pins, uint64_t bytes,
                      int64_t ms);
  // Ends a lease of `tenant` now: how many blocks it held. kNotFound when no
  // such lease is open for that tenant (unknown, expired, released, another's).
  Result<size_t> Release(const std::string& tenant, const std::string& id);
  // Releases every expired lease; how many.
  size_t Sweep();

  LeaseStats stats() const;
  const LeaseLimits& limits() const { return limits_; }

 private:
  struct Entry {
    std::string tenant;
    std::vector<PinHandle> pins;
    uint64_t bytes = 0;
    int64_t expire_ms = 0;
  };
  struct TenantUse {
    size_t leases = 0;
    size_t blocks = 0;
    uint64_t bytes = 0;
  };
  void Forget(std::unordered_map<std::string, Entry>::iterator it);  // with mu_ held
  void Reap(int64_t period_ms);

  const LeaseLimits limits_;
  Clock* const clock_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Entry> leases_;       // guarded by mu_
  std::unordered_map<std::string, TenantUse> tenants_;  // guarded by mu_
  LeaseStats stats_;                                    // guarded by mu_
  std::condition_variable wake_;
  bool stopping_ = false;  // guarded by mu_
  std::thread reaper_;
};

}  // namespace kvtier
