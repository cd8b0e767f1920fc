// GatedTier: a Tier whose operations wait at a gate the test opens and
// closes: a slow device under the test's control. Reads (and, for a shared
// tier, Stat) wait at the gate; writes wait only when the test names the key
// whose write is held. Everything else goes straight through to the base.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>

#include "tiers/tier.h"

namespace kvtier::testing {

class GatedTier final : public Tier {
 public:
  // `shared`: it says it is a shared tier (another node's blocks, DESIGN
  // §10), and its Stat waits at the gate too.
  explicit GatedTier(std::unique_ptr<Tier> base, bool shared = false)
      : base_(std::move(base)), shared_(shared) {}
  void SetOpen(bool open) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      open_ = open;
    }
    cv_.notify_all();
  }
  // Writes of `key` wait at the gate too (nullopt: no write waits).
  void HoldWritesOf(std::optional<BlockKey> key) {
    std::lock_guard<std::mutex> lock(mu_);
    held_write_key_ = key;
  }
  // Waits until an operation is held at the (closed) gate.
  void AwaitHeld() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return held_ > 0; });
  }
  TierInfo Info() const override {
    TierInfo i = base_->Info();
    i.shared = shared_;
    return i;
  }
  std::vector<std::optional<BlockStat>> Stat(std::span<const BlockKey> keys) override {
    Hold();
    return base_->Stat(keys);
  }
  void Write(std::span<const WriteOp> ops, IoCallback done) override {
    bool hold = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const WriteOp& op : ops) hold = hold || (held_write_key_ && op.key == *held_write_key_);
    }
    if (hold) Hold();
    base_->Write(ops, std::move(done));
  }
  void Read(std::span<const ReadOp> ops, IoCallback done) override {
    Hold();
    base_->Read(ops, std::move(done));
  }
  Status Erase(std::span<const BlockKey> keys) override { return base_->Erase(keys); }
  Status SetExpiry(std::span<const BlockKey> keys, int64_t expiry_ms) override {
    return base_->SetExpiry(keys, expiry_ms);
  }
  Status Recover(IndexSink& sink) override { return base_->Recover(sink); }

 private:
  void Hold() {
    std::unique_lock<std::mutex> lock(mu_);
    ++held_;
    cv_.notify_all();
    cv_.wait(lock, [&] { return open_; });
    --held_;
  }

  std::unique_ptr<Tier> base_;
  const bool shared_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = true;
  int held_ = 0;
  std::optional<BlockKey> held_write_key_;
};

}  // namespace kvtier::testing
