// FaultInjectionTier: a Tier that wraps another and fails chosen operations,
// as a full device or a failing disk would. Used by fault tests (and usable
// for chaos runs): a wrapper that is itself a tier, so everything above it is
// exercised unchanged. Thread-safe.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>

#include "tiers/tier.h"

namespace kvtier {

class FaultInjectionTier final : public Tier {
 public:
  explicit FaultInjectionTier(std::unique_ptr<Tier> base) : base_(std::move(base)) {}

  // The next `count` writes (or reads) fail with `fault` (count < 0: every one
  // until cleared). A failed write stores nothing; a failed read copies nothing.
  void FailWrites(Status fault, int count = -1);
  void FailReads(Status fault, int count = -1);
  void Clear();

  TierInfo Info() const override;  // the base's, plus the errors injected here
  void Write(std::span<const WriteOp> ops, IoCallback done) override;
  void Read(std::span<const ReadOp> ops, IoCallback done) override;
  Status Erase(std::span<const BlockKey> keys) override { return base_->Erase(keys); }
  Status SetExpiry(std::span<const BlockKey> keys, int64_t expiry_ms) override {
    return base_->SetExpiry(keys, expiry_ms);
  }
  Status Recover(IndexSink& sink) override { return base_->Recover(sink); }

 private:
  struct Fault {
    Status status;
    int remaining = 0;  // < 0: forever
  };
  // The fault for the next op, if one is armed (and counts it down).
  std::optional<Status> Take(Fault& f);

  std::unique_ptr<Tier> base_;
  std::mutex mu_;
  Fault write_fault_;  // guarded by mu_
  Fault read_fault_;   // guarded by mu_
  std::atomic<uint64_t> injected_{0};
};

}  // namespace kvtier
