#include "replay/replay_tier.h"

#include <algorithm>
#include <cmath>
#include <mutex>
#include <utility>

#include "cache/admission.h"
#include "cache/eviction_policy.h"
#include "cache/placement.h"

namespace kvtier {
namespace {

class ReplayTier final : public Tier {
 public:
  ReplayTier(std::string name, uint64_t capacity, double read_per_s, size_t index,
             MoveLedger* ledger, const Clock* clock)
      : name_(std::move(name)),
        capacity_(capacity),
        read_per_s_(read_per_s),
        index_(index),
        ledger_(ledger),
        clock_(clock) {}

  TierInfo Info() const override {
    std::lock_guard<std::mutex> lock(mu_);
    TierInfo i;
    i.name = name_;
    i.capacity_bytes = capacity_;
    i.used_bytes = i.allocated_bytes = used_;
    i.blocks = blocks_.size();
    i.max_block_bytes = capacity_;
    i.read_bytes_per_s = i.write_bytes_per_s = read_per_s_;
    return i;
  }

  void Write(std::span<const WriteOp> ops, IoCallback done) override {
    CompleteInline(ops, done, [&](const WriteOp& op) -> IoResult {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = blocks_.find(op.key);
      const uint64_t old = it == blocks_.end() ? 0 : it->second.bytes;
      const uint64_t size = op.payload.size();
      if (used_ - old + size > capacity_) {
        return {Status::ResourceExhausted("replay tier '" + name_ + "' is full"), 0};
      }
      used_ = used_ - old + size;
      blocks_[op.key] = Block{size, op.expiry_ms};
      if (auto r = ledger_->read_from.find(op.key); r != ledger_->read_from.end()) {
        ledger_->moved[r->second][index_] += static_cast<double>(size);
        ledger_->read_from.erase(r);
      } else {
        ++ledger_->placed_blocks[index_];
        ledger_->placed_units[index_] += static_cast<double>(size);
      }
      return {Status::Ok(), size};
    });
  }

  void Read(std::span<const ReadOp> ops, IoCallback done) override {
    CompleteInline(ops, done, [&](const ReadOp& op) -> IoResult {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = blocks_.find(op.key);
      if (it == blocks_.end() || it->second.expiry_ms <= clock_->NowMs()) {
        return {Status::NotFound("not in replay tier '" + name_ + "'"), 0};
      }
      if (op.dest.size() < it->second.bytes) {
        return {Status::ResourceExhausted("destination too small"), it->second.bytes};
      }
      std::fill_n(op.dest.begin(), it->second.bytes, std::byte{0});
      ledger_->read_from[op.key] = index_;
      return {Status::Ok(), it->second.bytes};
    });
  }

  Status Erase(std::span<const BlockKey> keys) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (const BlockKey& k : keys) {
      if (auto it = blocks_.find(k); it != blocks_.end()) {
        used_ -= it->second.bytes;
        blocks_.erase(it);
      }
    }
    return Status::Ok();
  }

  Status SetExpiry(std::span<const BlockKey> keys, int64_t expiry_ms) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (const BlockKey& k : keys) {
      if (auto it = blocks_.find(k); it != blocks_.end()) it->second.expiry_ms = expiry_ms;
    }
    return Status::Ok();
  }

  Status Recover(IndexSink& sink) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [k, b] : blocks_) sink.Announce(k, b.bytes, b.expiry_ms);
    return Status::Ok();
  }

 private:
  struct Block {
    uint64_t bytes;
    int64_t expiry_ms;
  };
  const std::string name_;
  const uint64_t capacity_;
  const double read_per_s_;
  const size_t index_;
  MoveLedger* const ledger_;
  const Clock* const clock_;
  mutable std::mutex mu_;
  std::unordered_map<BlockKey, Block, BlockKeyHash> blocks_;  // guarded by mu_
  uint64_t used_ = 0;                                         // guarded by mu_
};

}  // namespace

// --- The shared tier -------------------------------------------------------------

std::optional<BlockStat> SharedReplayStore::Find(const BlockKey& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = blocks_.find(key);
  if (it == blocks_.end() || it->second.expiry_ms <= clock_->NowMs()) return std::nullopt;
  return it->second;
}

void SharedReplayStore::Put(const BlockKey& key, uint64_t units, int64_t expiry_ms) {
  std::lock_guard<std::mutex> lock(mu_);
  BlockStat& b = blocks_[key];
  used_ = used_ - b.bytes + units;
  b = BlockStat{units, expiry_ms};
  if (expiry_ms != kNoExpiry) expiries_.push({expiry_ms, key});
}

void SharedReplayStore::Remove(const BlockKey& key) {
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = blocks_.find(key); it != blocks_.end()) {
    used_ -= it->second.bytes;
    blocks_.erase(it);
  }
}

void SharedReplayStore::SetExpiry(const BlockKey& key, int64_t expiry_ms) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = blocks_.find(key);
  if (it == blocks_.end()) return;
  it->second.expiry_ms = expiry_ms;
  if (expiry_ms != kNoExpiry) expiries_.push({expiry_ms, key});
}

void SharedReplayStore::DropExpired() {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = clock_->NowMs();
  while (!expiries_.empty() && expiries_.top().at_ms <= now) {
    const BlockKey key = expiries_.top().key;
    expiries_.pop();
    if (auto it = blocks_.find(key); it != blocks_.end() && it->second.expiry_ms <= now) {
      used_ -= it->second.bytes;
      blocks_.erase(it);
    }
  }
}

uint64_t SharedReplayStore::used_units() const {
  std::lock_guard<std::mutex> lock(mu_);
  return used_;
}

namespace {

// A block due at a time, for a min-heap of expiries.
struct DueKey {
  int64_t at_ms;
  BlockKey key;
  bool operator>(const DueKey& o) const { return at_ms > o.at_ms; }
};

// The view NewSharedTierView returns (see the header).
class SharedTierView final : public Tier {
 public:
  SharedTierView(std::string name, SharedReplayStore* store, uint64_t share_units,
                 double read_units_per_s, size_t index, MoveLedger* ledger, SharedTraffic* traffic,
                 const Clock* clock)
      : name_(std::move(name)),
        store_(store),
        share_(share_units),
        read_per_s_(read_units_per_s),
        index_(index),
        ledger_(ledger),
        traffic_(traffic),
        clock_(clock) {}

  TierInfo Info() const override {
    std::lock_guard<std::mutex> lock(mu_);
    TierInfo i;
    i.name = name_;
    i.capacity_bytes = share_;
    i.used_bytes = i.allocated_bytes = used_;
    i.blocks = owned_.size();
    i.max_block_bytes = share_;
    i.read_bytes_per_s = i.write_bytes_per_s = read_per_s_;
    i.shared = true;
    return i;
  }

  void Write(std::span<const WriteOp> ops, IoCallback done) override {
    CompleteInline(ops, done, [&](const WriteOp& op) -> IoResult {
      std::lock_guard<std::mutex> lock(mu_);
      const uint64_t size = op.payload.size();
      const int64_t now = clock_->NowMs();
      if (op.expiry_ms <= now) return {Status::Ok(), size};  // expired already: nothing kept
      auto had = [&] {
        auto it = owned_.find(op.key);
        return it == owned_.end() ? uint64_t{0} : it->second.bytes;
      };
      if (used_ - had() + size > share_) ForgetExpiredLocked(now);
      if (used_ - had() + size > share_) {
        return {Status::ResourceExhausted("shared tier '" + name_ + "': this node's share is used"),
                0};
      }
      used_ = used_ - had() + size;
      OwnLocked(op.key, BlockStat{size, op.expiry_ms});
      store_->Put(op.key, size, op.expiry_ms);
      traffic_->write_units += static_cast<double>(size);
      if (traffic_->writing_through) {
        traffic_->write_through_units += static_cast<double>(size);
      } else if (auto r = ledger_->read_from.find(op.key); r != ledger_->read_from.end()) {
        ledger_->moved[r->second][index_] += static_cast<double>(size);
        ledger_->read_from.erase(r);
      } else {
        ++ledger_->placed_blocks[index_];
        ledger_->placed_units[index_] += static_cast<double>(size);
      }
      return {Status::Ok(), size};
    });
  }

  void Read(std::span<const ReadOp> ops, IoCallback done) override {
    CompleteInline(ops, done, [&](const ReadOp& op) -> IoResult {
      const std::optional<BlockStat> b = store_->Find(op.key);
      if (!b) return {Status::NotFound("not in shared tier '" + name_ + "'"), 0};
      if (op.dest.size() < b->bytes) {
        return {Status::ResourceExhausted("destination too small"), b->bytes};
      }
      std::fill_n(op.dest.begin(), b->bytes, std::byte{0});
      std::lock_guard<std::mutex> lock(mu_);
      ledger_->read_from[op.key] = index_;
      traffic_->read_units += static_cast<double>(b->bytes);
      return {Status::Ok(), b->bytes};
    });
  }

  Status Erase(std::span<const BlockKey> keys) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (const BlockKey& k : keys) {
      auto it = owned_.find(k);
      if (it == owned_.end()) continue;  // another node's: its writer manages it
      used_ -= it->second.bytes;
      owned_.erase(it);
      store_->Remove(k);
    }
    return Status::Ok();
  }

  Status SetExpiry(std::span<const BlockKey> keys, int64_t expiry_ms) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (const BlockKey& k : keys) {
      store_->SetExpiry(k, expiry_ms);
      if (auto it = owned_.find(k); it != owned_.end()) OwnLocked(k, {it->second.bytes, expiry_ms});
    }
    return Status::Ok();
  }

  // A replay's store starts empty: nothing to announce but this node's own.
  Status Recover(IndexSink& sink) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [k, b] : owned_) sink.Announce(k, b.bytes, b.expiry_ms);
    return Status::Ok();
  }

  std::vector<std::optional<BlockStat>> Stat(std::span<const BlockKey> keys) override {
    std::vector<std::optional<BlockStat>> out;
    out.reserve(keys.size());
    for (const BlockKey& k : keys) out.push_back(store_->Find(k));
    return out;
  }

 private:
  // Forgets every block this node wrote whose expiry has passed (the store
  // has dropped them), as the Redis tier does when its share is full; by
  // the earliest expiries first rather than a scan of every block, so a
  // full share does not cost a pass over all of them per write.
  void ForgetExpiredLocked(int64_t now) {
    while (!owned_expiries_.empty() && owned_expiries_.top().at_ms <= now) {
      const BlockKey key = owned_expiries_.top().key;
      owned_expiries_.pop();
      // An item of a block refreshed, rewritten or erased since is stale.
      if (auto it = owned_.find(key); it != owned_.end() && it->second.expiry_ms <= now) {
        used_ -= it->second.bytes;
        owned_.erase(it);
      }
    }
  }
  void OwnLocked(const BlockKey& key, const BlockStat& b) {
    owned_[key] = b;
    if (b.expiry_ms != kNoExpiry) owned_expiries_.push({b.expiry_ms, key});
  }

  const std::string name_;
  SharedReplayStore* const store_;
  const uint64_t share_;
  const double read_per_s_;
  const size_t index_;
  MoveLedger* const ledger_;
  SharedTraffic* const traffic_;
  const Clock* const clock_;
  mutable std::mutex mu_;
  std::unordered_map<BlockKey, BlockStat, BlockKeyHash> owned_;  // guarded by mu_
  // The owned blocks' expiries, earliest first. Guarded by mu_.
  std::priority_queue<DueKey, std::vector<DueKey>, std::greater<>> owned_expiries_;
  uint64_t used_ = 0;  // guarded by mu_
};

}  // namespace

std::unique_ptr<Tier> NewReplayTier(std::string name, uint64_t capacity_units,
                                    double read_units_per_s, size_t index, MoveLedger* ledger,
                                    const Clock* clock) {
  return std::make_unique<ReplayTier>(std::move(name), capacity_units, read_units_per_s, index,
                                      ledger, clock);
}

std::unique_ptr<Tier> NewSharedTierView(std::string name, SharedReplayStore* store,
                                        uint64_t share_units, double read_units_per_s, size_t index,
                                        MoveLedger* ledger, SharedTraffic* traffic,
                                        const Clock* clock) {
  return std::make_unique<SharedTierView>(std::move(name), store, share_units, read_units_per_s,
                                          index, ledger, traffic, clock);
}

Status InsertAfterHit(CacheManager& cache, MoveLedger& ledger, const Trace& trace,
                      const TierScenario& sc, const TraceRequest& req,
                      const std::vector<BlockKey>& keys, size_t hit_blocks,
                      std::span<const std::byte> payload) {
  for (size_t i = hit_blocks; i < keys.size(); ++i) {
    const uint32_t tokens = trace.BlockTokens(req, static_cast<uint32_t>(i));
    BlockMeta meta;
    if (i > 0) meta.parent = keys[i - 1];
    meta.ttl_ms = sc.ttl_ms;
    meta.tokens = tokens;
    meta.stream = req.tenant;
    meta.remat_flops = 2 * sc.active_params * tokens;
    // A request's own insert is a placement, even of a block that an
    // earlier move of this request read and then failed to write.
    ledger.read_from.erase(keys[i]);
    Status s = cache.Insert(keys[i], payload, meta);
    if (!s.ok() && !s.IsResourceExhausted()) return s;
  }
  ledger.read_from.clear();
  return Status::Ok();
}

CacheManagerOptions ReplayCacheOptions(const TierScenario& sc, Clock* clock) {
  CacheManagerOptions options;
  options.clock = clock;
  options.sweep_interval_ms = 0;  // the replay sweeps as its clock moves
  options.background_promotion = false;
  options.placement.remat.flops_per_s = sc.prefill_flops_per_s;
  options.placement.remat.cost_per_s = sc.gpu_usd_per_hour / 3600;
  options.placement.remat.wait_cost_per_s = options.placement.remat.cost_per_s;
  options.placement.fetch_budget_s = sc.fetch_budget_s;
  options.placement.default_idle_s = sc.default_idle_s;
  return options;
}

Result<std::vector<TierSlot>> ReplayTierSlots(const Trace& trace, const TierScenario& sc,
                                              MoveLedger* ledger, const Clock* clock) {
  const double bpt = sc.kv_bytes_per_token;
  std::vector<TierSlot> slots;
  for (size_t i = 0; i < sc.tiers.size(); ++i) {
    const ScenarioTier& st = sc.tiers[i];
    const double units = std::floor(st.capacity_bytes / bpt);
    if (units < trace.block_tokens) {
      return Status::InvalidArgument("tier '" + st.name + "' holds less than one block of " +
                                     std::to_string(trace.block_tokens) + " tokens");
    }
    TierSlot slot;
    slot.tier = NewReplayTier(st.name, static_cast<uint64_t>(units), st.read_bytes_per_s / bpt, i,
                              ledger, clock);
    PolicyOptions po;
    po.capacity_bytes = static_cast<uint64_t>(units);
    slot.policy = NewEvictionPolicy(st.policy, po);
    if (st.admission != "none") {
      AdmissionOptions ao;
      ao.capacity_blocks = std::max<uint64_t>(1, po.capacity_bytes / trace.block_tokens);
      slot.admission = NewAdmissionFilter(st.admission, ao);
    }
    slot.cost_per_s = CostPerSecond(st.capacity_bytes, st.usd_per_gib_month);
    slots.push_back(std::move(slot));
  }
  return slots;
}

}  // namespace kvtier
