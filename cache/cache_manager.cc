#include "cache/cache_manager.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <string>

#include "common/checksum.h"
#include "common/log.h"

namespace kvtier {
namespace {

// Collects the blocks a persistent tier announces when it opens.
class RecoverySink final : public IndexSink {
 public:
  void Announce(const BlockKey& key, uint64_t bytes, int64_t expiry_ms) override {
    blocks.push_back({key, bytes, expiry_ms});
  }
  struct Block {
    BlockKey key;
    uint64_t bytes;
    int64_t expiry_ms;
  };
  std::vector<Block> blocks;
};

// Expiry refreshes move in whole seconds: a burst of reads costs one tier
// update, and the index and the tier always agree on the expiry.
constexpr int64_t kRefreshGranularityMs = 1000;
// A pinned block that has expired is looked at again this much later.
constexpr int64_t kPinnedExpiryRetryMs = 1000;
// ReviewIdle's first look at a block: a second after its last use (younger
// blocks are the engine's working set, placed for their expected wait).
constexpr int64_t kFirstReviewAgeMs = 1000;
// A block the review left where it was without its crossing having moved
// (pinned, busy, a parent) is looked at again this much later.
constexpr int64_t kReviewRetryMs = 1000;
// Blocks a victim search steps over looking for a leaf of the size needed,
// and then for any leaf, before it takes any unpinned block (MakeRoom).
constexpr size_t kSameSizeScan = 64;
constexpr size_t kLeafScan = 64;

int64_t AddSaturating(int64_t a, int64_t b) { return a > kNoExpiry - b ? kNoExpiry : a + b; }

// The key locks this thread holds, innermost last. An operation holding one
// key's lock (an insert making room, a move) may have to free another key of
// the same stripe: the thread owns that stripe already, so it goes ahead
// instead of finding the key busy. (Before, such victims were skipped, which
// also made eviction depend on the process's random hash seed, the thing that
// decides which keys share a stripe, and replays differ run to run.)
thread_local std::vector<std::pair<const std::mutex*, BlockKey>> t_held_key_locks;

// Registers a key lock the caller has just taken (or owns through its stripe).
class HeldKeyLock {
 public:
  HeldKeyLock(const std::mutex& stripe, const BlockKey& key) {
    t_held_key_locks.emplace_back(&stripe, key);
  }
  ~HeldKeyLock() { t_held_key_locks.pop_back(); }
  HeldKeyLock(const HeldKeyLock&) = delete;
  HeldKeyLock& operator=(const HeldKeyLock&) = delete;
};

// Takes `key`'s lock without waiting. True when this thread may now work on
// the key: it took the lock, or it holds the stripe already for another key.
// False when the key is busy: another thread holds its stripe, or this
// thread's outer operation is working on that very key.
bool TryKeyLock(std::mutex& stripe, const BlockKey& key, std::unique_lock<std::mutex>* lock) {
  bool owned = false;
  for (const auto& [held, held_key] : t_held_key_locks) {
    if (held_key == key) return false;
    owned = owned || held == &stripe;
  }
  if (owned) return true;
  *lock = std::unique_lock<std::mutex>(stripe, std::try_to_lock);
  return lock->owns_lock();
}

}  // namespace

CacheManager::CacheManager(std::vector<TierSlot> tiers, const CacheManagerOptions& options)
    : options_(options),
      tiers_(std::move(tiers)),
      reuse_(options.placement.reuse_smoothing, options.placement.max_streams),
      index_(options.clock),
      mrc_(options.mrc),
      tier_counters_(tiers_.size()) {
  std::vector<TierEconomics> economics;
  for (const TierSlot& slot : tiers_) {
    const TierInfo info = slot.tier->Info();
    tier_names_.push_back(info.name);
    max_block_bytes_.push_back(info.max_block_bytes);
    capacity_bytes_.push_back(info.capacity_bytes);
    if (info.shared) shared_tiers_.push_back(tier_names_.size() - 1);
    accepts_placements_.push_back(info.accepts_placements);
    economics.push_back(TierEconomics{info.name, static_cast<double>(info.capacity_bytes),
                                      info.read_bytes_per_s, slot.cost_per_s});
  }
  model_ = CostModel(std::move(economics), options.placement.remat);
}

CacheManager::~CacheManager() { StopBackground(); }

Result<std::unique_ptr<CacheManager>> CacheManager::Open(std::vector<TierSlot> tiers,
                                                         const CacheManagerOptions& options) {
  if (tiers.empty()) return Status::InvalidArgument("a cache needs at least one tier");
  for (const TierSlot& slot : tiers) {
    if (!slot.tier || !slot.policy) {
      return Status::InvalidArgument("every tier needs a storage and an eviction policy");
    }
    if (!(slot.cost_per_s >= 0) || !std::isfinite(slot.cost_per_s)) {
      return Status::InvalidArgument("a tier's cost rate must be a finite number >= 0");
    }
  }
  if (options.clock == nullptr) return Status::InvalidArgument("the cache needs a clock");
  const PlacementOptions& p = options.placement;
  if (!(p.fetch_budget_s > 0) || !(p.default_idle_s > 0) || !(p.reuse_smoothing > 0) ||
      p.reuse_smoothing > 1 || !(p.remat.flops_per_s > 0) || !(p.remat.cost_per_s >= 0) ||
      !(p.remat.wait_cost_per_s >= 0)) {
    return Status::InvalidArgument(
        "placement options: fetch budget, default idle time, FLOP/s must be > 0, smoothing in "
        "(0, 1], GPU cost >= 0");
  }
  std::unique_ptr<CacheManager> m(new CacheManager(std::move(tiers), options));
  const int64_t now = options.clock->NowMs();
  for (size_t t = 0; t < m->tiers_.size(); ++t) {
    RecoverySink sink;
    KVTIER_RETURN_IF_ERROR(m->tiers_[t].tier->Recover(sink));
    for (const RecoverySink::Block& b : sink.blocks) {
      m->Adopt(t, b.key, b.bytes, b.expiry_ms, DecisionKind::kRecovered, now);
    }
    if (!sink.blocks.empty()) {
      LogInfo("tier_recovered",
              LogFields().Add("tier", m->tier_names_[t]).Add("blocks", sink.blocks.size()));
    }
  }
  m->StartBackground();
  return m;
}

void CacheManager::StartBackground() {
  if (options_.sweep_interval_ms > 0) {
    sweeper_ = std::thread([this] {
      std::unique_lock<std::mutex> lock(bg_mu_);
      while (!stop_) {
        bg_cv_.wait_for(lock, std::chrono::milliseconds(options_.sweep_interval_ms));
        if (stop_) break;
        lock.unlock();
        constexpr size_t kBatch = 1024;
        while (!stop_ && SweepExpired(kBatch) == kBatch) {
        }
        for (size_t looked = kBatch; !stop_ && looked == kBatch;) ReviewIdle(kBatch, &looked);
        lock.lock();
      }
    });
  }
  if (options_.background_shared_writes && !shared_tiers_.empty()) {
    sharer_ = std::thread([this] {
      for (;;) {
        {
          std::unique_lock<std::mutex> lock(share_mu_);
          share_cv_.wait(lock, [this] { return stop_ || !shared_writes_.empty(); });
          if (stop_) return;
        }
        RunSharedWrites();
      }
    });
  }
  if (options_.background_promotion) {
    promoter_ = std::thread([this] {
      for (;;) {
        {
          std::unique_lock<std::mutex> lock(promote_mu_);
          promote_cv_.wait(lock, [this] { return stop_ || !promotions_.empty(); });
          if (stop_) return;
        }
        RunPromotions();
      }
    });
  }
}

void CacheManager::StopBackground() {
  {
    std::lock_guard<std::mutex> lock(bg_mu_);
    stop_ = true;
  }
  bg_cv_.notify_all();
  { std::lock_guard<std::mutex> lock(promote_mu_); }
  promote_cv_.notify_all();
  { std::lock_guard<std::mutex> lock(share_mu_); }
  share_cv_.notify_all();
  if (sweeper_.joinable()) sweeper_.join();
  if (promoter_.joinable()) promoter_.join();
  if (sharer_.joinable()) sharer_.join();
}

// --- Shared copies ----------------------------------------------------------------

void CacheManager::QueueSharedWrite(const BlockKey& key, std::span<const std::byte> payload,
                                    int64_t expiry_ms) {
  const int64_t now = options_.clock->NowMs();
  if (options_.shared_max_ttl_ms > 0) {
    expiry_ms = std::min(expiry_ms, AddSaturating(now, options_.shared_max_ttl_ms));
  }
  {
    std::lock_guard<std::mutex> lock(share_mu_);
    if (shared_writes_.size() >= options_.max_queued_shared_writes) {
      ++counters_.shared_write_skips;
      return;
    }
    shared_writes_.push_back(
        SharedWrite{key, std::vector<std::byte>(payload.begin(), payload.end()), expiry_ms});
  }
  share_cv_.notify_one();
}

size_t CacheManager::RunSharedWrites() {
  size_t stored = 0;
  for (;;) {
    std::vector<SharedWrite> batch;
    {
      std::lock_guard<std::mutex> lock(share_mu_);
      // A batch per round trip: up to 64 blocks.
      while (!shared_writes_.empty() && batch.size() < 64) {
        batch.push_back(std::move(shared_writes_.front()));
        shared_writes_.pop_front();
      }
    }
    if (batch.empty()) return stored;
    std::vector<WriteOp> ops;
    for (const SharedWrite& w : batch) ops.push_back({w.key, w.payload, w.expiry_ms});
    for (size_t t : shared_tiers_) {
      for (const IoResult& r : WriteSync(*tiers_[t].tier, ops)) {
        if (r.status.ok()) {
          ++counters_.shared_writes;
          ++stored;
        } else {
          ++counters_.shared_write_failures;
        }
      }
    }
  }
}

// --- Placement -------------------------------------------------------------

bool CacheManager::TierTakes(size_t t, uint64_t bytes) const {
  if (!accepts_placements_[t]) return false;
  if (bytes > max_block_bytes_[t] || bytes > capacity_bytes_[t]) return false;
  // A tier whose bandwidth is unknown is not held to the budget.
  const double fetch_s = model_.FetchTimeS(t, static_cast<double>(bytes));
  return !std::isfinite(fetch_s) || fetch_s <= options_.placement.fetch_budget_s;
}

double CacheManager::IdleFor(const IndexEntry& e, int64_t now_ms) const {
  double idle_s = ExpectedIdleS(e.ttl_ms, reuse_.EstimateS(ReuseClassOf(e.stream, e.depth)),
                                options_.placement.default_idle_s);
  if (e.expiry_ms != kNoExpiry) {
    // Nothing is held past its expiry.
    idle_s = std::min(idle_s, std::max(0.0, static_cast<double>(e.expiry_ms - now_ms) / 1000.0));
  }
  return idle_s;
}

PlacementCosts CacheManager::CostsFor(const IndexEntry& e, double idle_s, size_t first,
                                      size_t last) const {
  return model_.Costs(
      static_cast<double>(e.bytes), idle_s, e.remat_flops,
      [&](size_t t) { return t >= first && t < last && TierTakes(t, e.bytes); },
      ReuseProbabilityOf(e));
}

double CacheManager::ReuseProbabilityOf(const IndexEntry& e) const {
  return reuse_.ReuseProbability(ReuseClassOf(e.stream, e.depth), e.uses > 0);
}

std::vector<size_t> CacheManager::Candidates(const PlacementCosts& costs, uint64_t bytes,
                                             size_t first, size_t last) const {
  std::vector<size_t> allowed;
  bool all_costed = true;
  for (size_t t = first; t < last; ++t) {
    if (!TierTakes(t, bytes)) continue;
    allowed.push_back(t);
    all_costed = all_costed && std::isfinite(costs.tier_costs[t]);
  }
  // Costs decide only when every candidate has one: a tier whose bandwidth
  // is unknown (too small to calibrate) cannot be compared, and then the
  // stack order decides, as it did before the cost model.
  return all_costed ? TiersByCost(costs) : allowed;
}

PolicyBlock CacheManager::ChainBlockOf(const IndexEntry& e) {
  PolicyBlock b;
  b.bytes = std::max<uint64_t>(1, e.bytes);
  b.parent = e.parent;
  b.depth = e.depth;
  return b;
}

PolicyBlock CacheManager::PolicyBlockFor(size_t t, const IndexEntry& e, int64_t now_ms) const {
  PolicyBlock b = ChainBlockOf(e);
  b.expiry_ms = e.expiry_ms;
  const double idle_s = IdleFor(e, now_ms);
  const PlacementCosts below = CostsFor(e, idle_s, t + 1, tiers_.size());
  double miss = below.remat_cost;
  for (double c : below.tier_costs) miss = std::min(miss, c);
  if (!std::isfinite(miss) || miss <= 0) {
    // Nothing cheaper to fall back on is known: losing it costs what
    // keeping it here does (or one unit where that is unknown too).
    const double here =
        model_.HoldCost(t, static_cast<double>(e.bytes), idle_s, ReuseProbabilityOf(e));
    miss = std::isfinite(here) && here > 0 ? here : 1.0;
  }
  b.miss_cost = miss;
  return b;
}

// --- Lookup, insert, read --------------------------------------------------

void CacheManager::Adopt(size_t t, const BlockKey& key, uint64_t bytes, int64_t expiry_ms,
                         DecisionKind kind, int64_t now) {
  IndexEntry f;
  f.tier = static_cast<uint32_t>(t);
  f.bytes = bytes;
  f.expiry_ms = expiry_ms;
  f.queued_expiry_ms = expiry_ms;
  f.decision = Decision{kind, static_cast<uint8_t>(t), 0, now};
  index_.Upsert(key, f);
  {
    std::lock_guard<std::mutex> lock(mu_);
    tiers_[t].policy->Insert(key, PolicyBlockFor(t, f, now));
  }
  QueueExpiry(key, expiry_ms);
  f.last_access_ms = now;
  QueueReview(key, f, now);
}

size_t CacheManager::AdoptShared(std::span<const BlockKey> keys) {
  if (shared_tiers_.empty() || keys.empty()) return 0;
  keys = keys.first(std::min(keys.size(), kMaxSharedStat));
  const int64_t now = options_.clock->NowMs();
  size_t adopted = 0, start = 0;
  // Each shared tier is asked for what the ones before it did not have.
  for (size_t t : shared_tiers_) {
    if (start == keys.size()) break;
    const std::span<const BlockKey> rest = keys.subspan(start);
    const std::vector<std::optional<BlockStat>> found = tiers_[t].tier->Stat(rest);
    ++counters_.shared_stats;
    // The run goes on through blocks this node holds itself (a shared tier
    // need not report those: the peer tier does not ask about its own keys).
    size_t i = 0;
    for (; i < rest.size() && i < found.size(); ++i) {
      std::lock_guard<std::mutex> key_lock(KeyLock(rest[i]));
      if (index_.Get(rest[i])) continue;  // known already (held here, or written since)
      if (!found[i]) break;
      Adopt(t, rest[i], found[i]->bytes, found[i]->expiry_ms, DecisionKind::kShared, now);
      ++adopted;
    }
    start += i;
  }
  counters_.shared_adopted += adopted;
  return adopted;
}

PrefixHit CacheManager::Lookup(std::span<const BlockKey> keys, bool pin) {
  PrefixHit hit;
  hit.blocks = index_.LongestPrefix(keys, &hit.entries);
  // Past what this node knows, a shared tier may hold the rest of the
  // prefix (another node wrote it): those blocks join the index, and the
  // prefix is looked up again.
  if (hit.blocks < keys.size() && AdoptShared(keys.subspan(hit.blocks)) > 0) {
    hit.entries.clear();
    hit.blocks = index_.LongestPrefix(keys, &hit.entries);
  }
  if (pin) {
    for (size_t i = 0; i < hit.blocks; ++i) {
      PinHandle h = index_.Pin(keys[i]);
      if (!h.valid()) {  // removed since we looked: the run ends here
        hit.blocks = i;
        hit.entries.resize(i);
        break;
      }
      hit.pins.push_back(std::move(h));
    }
  }
  const int64_t now = options_.clock->NowMs();
  // Deepest first: the root of the prefix ends up the most recently used.
  for (size_t i = hit.blocks; i-- > 0;) OnUse(keys[i], hit.entries[i], now, /*observe=*/true);
  for (size_t i = hit.blocks; i-- > 0;) mrc_.Use(BlockKeyHashValue(keys[i]), hit.entries[i].bytes);
  // The run may have stopped at an expired block: free it now rather than
  // waiting for the sweep to reach it.
  if (hit.blocks < keys.size()) {
    std::lock_guard<std::mutex> key_lock(KeyLock(keys[hit.blocks]));
    Result<IndexEntry> gone = index_.RemoveIf(
        keys[hit.blocks], [now](const IndexEntry& e) { return e.expiry_ms <= now; });
    if (gone.ok()) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        ForgetLocked(gone->tier, keys[hit.blocks]);
      }
      (void)tiers_[gone->tier].tier->Erase(std::span(&keys[hit.blocks], 1));
      CountExpired(*gone);
    }
  }
  ++counters_.lookups;
  counters_.lookup_blocks += keys.size();
  counters_.lookup_hit_blocks += hit.blocks;
  for (const IndexEntry& e : hit.entries) {
    ++tier_counters_[e.tier].hit_blocks;
    tier_counters_[e.tier].hit_tokens += e.tokens;
  }
  return hit;
}

Result<IndexEntry> CacheManager::FindAnywhere(const BlockKey& key) {
  Result<IndexEntry> e = Find(key);
  if (e.ok() || shared_tiers_.empty() || AdoptShared(std::span(&key, 1)) == 0) return e;
  return Find(key);
}

PrefixHit CacheManager::Probe(std::span<const BlockKey> keys, bool pin) {
  PrefixHit hit;
  bool asked_shared = false;
  for (size_t i = 0; i < keys.size(); ++i) {
    const BlockKey& key = keys[i];
    // Past what this node knows, once: the shared tiers' run.
    if (!asked_shared && !shared_tiers_.empty() && !Find(key).ok()) {
      asked_shared = true;
      AdoptShared(keys.subspan(i));
    }
    // Pinned first, then read: a block pinned cannot be evicted between the two.
    PinHandle h;
    if (pin) {
      h = index_.Pin(key);
      if (!h.valid()) break;
    }
    Result<IndexEntry> e = Find(key);
    if (!e.ok()) break;
    hit.entries.push_back(*e);
    if (pin) hit.pins.push_back(std::move(h));
    ++hit.blocks;
  }
  return hit;
}

void CacheManager::OnUse(const BlockKey& key, const IndexEntry& before, int64_t now_ms,
                         bool observe) {
  IndexEntry e = before;
  if (observe) {
    if (before.last_access_ms > 0 && now_ms >= before.last_access_ms) {
      reuse_.Observe(ReuseClassOf(before.stream, before.depth),
                     static_cast<double>(now_ms - before.last_access_ms) / 1000.0, now_ms,
                     /*first=*/before.uses == 0);
    }
    index_.Modify(key, [](IndexEntry& x) { x.uses += x.uses < UINT32_MAX; });
    e.uses += e.uses < UINT32_MAX;
  }
  const int64_t refreshed = before.ttl_ms > 0 ? AddSaturating(now_ms, before.ttl_ms) : 0;
  bool touched = false;
  if (before.ttl_ms > 0 && refreshed >= AddSaturating(before.expiry_ms, kRefreshGranularityMs)) {
    std::lock_guard<std::mutex> key_lock(KeyLock(key));
    // Where it is now, under the key's lock: a move may have finished since.
    std::optional<IndexEntry> current = index_.Get(key);
    if (current && current->expiry_ms > now_ms && refreshed > current->expiry_ms) {
      Refresh(key, *current, refreshed);
      e = *current;
      e.expiry_ms = refreshed;
      touched = true;
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!touched) tiers_[e.tier].policy->Touch(key);
    if (observe) RecordReferenceLocked(BlockRef{key, ChainBlockOf(e)}, e.tier);
  }
  if (e.tier == 0) return;
  // Promote when a higher tier is now the cheaper home for its next wait.
  // Like every decision, only on known costs.
  const double idle_s = IdleFor(e, now_ms);
  const PlacementCosts above = CostsFor(e, idle_s, 0, e.tier);
  const double here =
      model_.HoldCost(e.tier, static_cast<double>(e.bytes), idle_s, ReuseProbabilityOf(e));
  const std::vector<size_t> order = Candidates(above, e.bytes, 0, e.tier);
  if (!order.empty() && std::isfinite(here) && std::isfinite(above.tier_costs[order[0]]) &&
      TiersByCost(above).size() == order.size() && above.tier_costs[order[0]] < here) {
    QueuePromotion(key, order[0]);
  }
}

Status CacheManager::Insert(const BlockKey& key, const std::optional<BlockKey>& parent,
                            std::span<const std::byte> payload, int64_t expiry_ms) {
  BlockMeta meta;
  meta.parent = parent;
  meta.expiry_ms = expiry_ms;
  return Insert(key, payload, meta);
}

Status CacheManager::Insert(const BlockKey& key, std::span<const std::byte> payload,
                            const BlockMeta& meta) {
  if (payload.empty()) return Status::InvalidArgument("a block payload may not be empty");
  if (meta.ttl_ms < 0) return Status::InvalidArgument("a TTL may not be negative");
  if (meta.parent == key) {
    return Status::InvalidArgument("block " + key.ToHex() + " names itself as its own parent");
  }
  const int64_t now = options_.clock->NowMs();
  // A TTL runs from now, unless the writer dates its start (a request's
  // lifetime counts from the request's start): then expiry_ms gives its end.
  const int64_t expiry = meta.ttl_ms > 0 && meta.expiry_ms == kNoExpiry
                             ? AddSaturating(now, meta.ttl_ms)
                             : meta.expiry_ms;
  if (expiry <= now) {
    return Status::InvalidArgument("block " + key.ToHex() + " would already be expired");
  }
  std::lock_guard<std::mutex> key_lock(KeyLock(key));
  const HeldKeyLock held(KeyLock(key), key);
  if (std::optional<IndexEntry> e = index_.Get(key)) {
    if (e->expiry_ms > now) {
      // A longer TTL class wins: a 5m block rewritten under a 1h breakpoint
      // is refreshed by reads for an hour from then on.
      if (meta.ttl_ms > e->ttl_ms && e->ttl_ms > 0) {
        index_.Modify(key, [&](IndexEntry& x) { x.ttl_ms = meta.ttl_ms; });
      }
      if (expiry > e->expiry_ms) {
        Refresh(key, *e, expiry);
      } else {
        index_.Touch(key);
        std::lock_guard<std::mutex> lock(mu_);
        tiers_[e->tier].policy->Touch(key);
      }
      ++counters_.refreshes;
      mrc_.Use(BlockKeyHashValue(key), e->bytes);
      return Status::Ok();
    }
    if (Status s = DropLocked(key); !s.ok() && !s.IsNotFound()) return s;  // expired but pinned
  }
  IndexEntry f;
  f.parent = meta.parent;
  f.bytes = payload.size();
  f.expiry_ms = expiry;
  f.ttl_ms = meta.ttl_ms;
  f.tokens = meta.tokens;
  f.stream = meta.stream;
  f.remat_flops = meta.remat_flops;
  f.queued_expiry_ms = expiry;
  // Its depth as the index will record it: the parent's + 1 (1 when the
  // parent is not cached), for its reuse class.
  if (meta.parent) {
    const std::optional<IndexEntry> parent = index_.Get(*meta.parent);
    f.depth = parent ? parent->depth + 1 : 1;
  }
  // A block the age review dropped, written again: the use it would have
  // had ends its waiting period, and it comes back as a reused block.
  const std::optional<AgedGhost> ghost = TakeAgedGhost(key);
  if (ghost) {
    reuse_.Observe(ghost->reuse_class,
                   static_cast<double>(std::max<int64_t>(0, now - ghost->last_access_ms)) / 1000.0,
                   now, /*first=*/!ghost->reused);
    f.uses = 1;
  } else {
    reuse_.ObserveInsert(ReuseClassOf(f.stream, f.depth), now);
  }
  const double idle_s = IdleFor(f, now);
  const PlacementCosts costs = CostsFor(f, idle_s, 0, tiers_.size());
  const std::vector<size_t> order = Candidates(costs, f.bytes, 0, tiers_.size());
  if (order.empty()) {
    ++counters_.insert_failures;
    uint64_t largest = 0;
    for (size_t t = 0; t < tiers_.size(); ++t) {
      largest = std::max(largest, std::min(max_block_bytes_[t], capacity_bytes_[t]));
    }
    return Status::ResourceExhausted("a block of " + std::to_string(f.bytes) +
                                     " bytes is larger than any tier accepts (at most " +
                                     std::to_string(largest) + ")");
  }
  const PolicyBlock ref_block = ChainBlockOf(f);
  const BlockRef ref{key, ref_block};
  {
    std::lock_guard<std::mutex> lock(mu_);
    RecordReferenceLocked(ref, SIZE_MAX);  // a new block: its writer missed it
  }
  Status s;
  size_t chosen = order[0];
  size_t refusals = 0;
  for (size_t t : order) {
    // A full tier (everything pinned), an unavailable one (its disk is
    // full: it takes writes again by itself later) or one whose admission
    // filter refuses the block passes it to the next cheapest; a failing
    // one fails the insert, so its error reaches the caller.
    bool refused = false;
    s = StoreInTier(t, key, payload, expiry, &ref, &refused);
    chosen = t;
    refusals += refused;
    if (!refused && !s.IsResourceExhausted() && s.code() != StatusCode::kUnavailable) break;
  }
  if (refusals == order.size()) {
    ++counters_.admission_refusals;  // a cache may decline a block: not an error
    return Status::Ok();
  }
  if (!s.ok()) {
    ++counters_.insert_failures;
    return s;
  }
  f.tier = static_cast<uint32_t>(chosen);
  f.decision = Decision{DecisionKind::kPlaced, static_cast<uint8_t>(chosen),
                        static_cast<float>(idle_s), now};
  const PolicyBlock pb = PolicyBlockFor(chosen, f, now);
  index_.Upsert(key, f);
  if (f.uses > 0) index_.Modify(key, [&](IndexEntry& x) { x.uses = f.uses; });  // a ghost's return
  {
    std::lock_guard<std::mutex> lock(mu_);
    tiers_[chosen].policy->Insert(key, pb);
    if (tiers_[chosen].admission) tiers_[chosen].admission->Inserted(ref);
  }
  QueueExpiry(key, expiry);
  f.last_access_ms = now;  // as the index recorded it
  QueueReview(key, f, now);
  ++counters_.inserts;
  ++counters_.placed;
  if (!shared_tiers_.empty() &&
      std::find(shared_tiers_.begin(), shared_tiers_.end(), chosen) == shared_tiers_.end()) {
    QueueSharedWrite(key, payload, expiry);
  }
  mrc_.Use(BlockKeyHashValue(key), payload.size());
  counters_.insert_bytes += payload.size();
  return Status::Ok();
}

void CacheManager::Refresh(const BlockKey& key, const IndexEntry& e, int64_t expiry_ms) {
  if (expiry_ms > e.expiry_ms) {
    // The tier first: it enforces expiry on read, and must not expire a block
    // the index still promises. The sweep queue keeps the old time and finds
    // the new one when it gets there.
    (void)tiers_[e.tier].tier->SetExpiry(std::span(&key, 1), expiry_ms);
    index_.SetExpiry(key, expiry_ms);
  }
  index_.Touch(key);
  IndexEntry now_entry = e;
  now_entry.expiry_ms = std::max(e.expiry_ms, expiry_ms);
  const PolicyBlock pb = PolicyBlockFor(e.tier, now_entry, options_.clock->NowMs());
  std::lock_guard<std::mutex> lock(mu_);
  tiers_[e.tier].policy->Insert(key, pb);  // a touch that takes the new expiry
}

Result<IndexEntry> CacheManager::Find(const BlockKey& key) const {
  std::optional<IndexEntry> e = index_.Get(key);
  if (!e || e->expiry_ms <= options_.clock->NowMs()) {
    return Status::NotFound("block " + key.ToHex() + " is not cached");
  }
  return *e;
}

Result<uint64_t> CacheManager::Read(const BlockKey& key, std::span<std::byte> dest, bool is_use,
                                    uint64_t* payload_xxh3) {
  ++counters_.reads;
  // Two attempts: a block moved between the index look-up and the read is
  // found in its new tier on the second.
  for (int attempt = 0; attempt < 2; ++attempt) {
    Result<IndexEntry> e = Find(key);
    if (!e.ok()) break;
    if (Status s = FitsIn(key, *e, dest); !s.ok()) return s;
    std::optional<uint64_t> verified;
    Result<uint64_t> n = ReadOne(*tiers_[e->tier].tier, key, dest, &verified);
    if (std::optional<Result<uint64_t>> done = FinishRead(key, *e, n, is_use)) {
      if (done->ok() && payload_xxh3 != nullptr)
        *payload_xxh3 = verified ? *verified : Checksum64(dest.first(**done));
      return *done;
    }
  }
  ++counters_.read_misses;
  return Status::NotFound("block " + key.ToHex() + " is not cached");
}

Status CacheManager::FitsIn(const BlockKey& key, const IndexEntry& e,
                            std::span<const std::byte> dest) {
  if (dest.size() >= e.bytes) return Status::Ok();
  return Status::ResourceExhausted("the buffer holds " + std::to_string(dest.size()) +
                                   " bytes but block " + key.ToHex() + " has " +
                                   std::to_string(e.bytes));
}

std::optional<Result<uint64_t>> CacheManager::FinishRead(const BlockKey& key, const IndexEntry& e,
                                                         const Result<uint64_t>& n, bool is_use) {
  if (n.ok()) {
    const int64_t now = options_.clock->NowMs();
    index_.Touch(key);
    // A read is data movement, not a new use, unless the caller says so: a
    // lookup observed the reuse.
    OnUse(key, e, now, /*observe=*/is_use);
    if (is_use) mrc_.Use(BlockKeyHashValue(key), e.bytes);
    ++counters_.read_hits;
    TierCounters& tc = tier_counters_[e.tier];
    ++tc.read_blocks;
    tc.read_bytes += *n;
    tc.read_tokens += e.tokens;
    return n;
  }
  if (n.status().IsCorruption()) {
    ++counters_.corruption_misses;
    (void)Drop(key);
    ++counters_.read_misses;
    return Status::NotFound("block " + key.ToHex() +
                            " failed its checksum and was dropped (a miss)");
  }
  std::optional<IndexEntry> now = index_.Get(key);
  if (!n.status().IsNotFound() || !now || now->tier == e.tier) {
    if (n.status().IsNotFound()) (void)Drop(key);  // the index was stale
    ++counters_.read_misses;
    return n.status();
  }
  return std::nullopt;  // moved to another tier since the look-up: try there
}

std::vector<Result<uint64_t>> CacheManager::ReadBatch(std::span<const BlockKey> keys,
                                                      std::span<const std::span<std::byte>> dests,
                                                      bool is_use) {
  std::vector<Result<uint64_t>> out(keys.size(), Status::InvalidArgument("no buffer"));
  const size_t n = std::min(keys.size(), dests.size());
  // Each tier's blocks, and where each came from.
  std::vector<std::vector<ReadOp>> ops(tiers_.size());
  std::vector<std::vector<std::pair<size_t, IndexEntry>>> from(tiers_.size());
  for (size_t i = 0; i < n; ++i) {
    Result<IndexEntry> e = Find(keys[i]);
    if (!e.ok()) {
      ++counters_.reads;
      ++counters_.read_misses;
      out[i] = Status::NotFound("block " + keys[i].ToHex() + " is not cached");
      continue;
    }
    if (Status s = FitsIn(keys[i], *e, dests[i]); !s.ok()) {
      ++counters_.reads;
      out[i] = s;
      continue;
    }
    ops[e->tier].push_back({keys[i], dests[i]});
    from[e->tier].emplace_back(i, *e);
  }
  for (size_t t = 0; t < tiers_.size(); ++t) {
    if (ops[t].empty()) continue;
    const std::vector<IoResult> results = ReadSync(*tiers_[t].tier, ops[t]);
    for (size_t j = 0; j < results.size(); ++j) {
      const auto& [i, e] = from[t][j];
      ++counters_.reads;
      const Result<uint64_t> r = results[j].status.ok() ? Result<uint64_t>(results[j].bytes)
                                                        : Result<uint64_t>(results[j].status);
      std::optional<Result<uint64_t>> done = FinishRead(keys[i], e, r, is_use);
      if (done) {
        out[i] = *done;
      } else {
        --counters_.reads;  // Read counts it again
        out[i] = Read(keys[i], dests[i], is_use);
      }
    }
  }
  return out;
}

Status CacheManager::Erase(const BlockKey& key) { return Drop(key); }

Status CacheManager::Drop(const BlockKey& key) {
  std::lock_guard<std::mutex> key_lock(KeyLock(key));
  return DropLocked(key);
}

Status CacheManager::DropLocked(const BlockKey& key) {
  KVTIER_ASSIGN_OR_RETURN(const IndexEntry e, index_.Remove(key));
  {
    std::lock_guard<std::mutex> lock(mu_);
    ForgetLocked(e.tier, key);
  }
  return tiers_[e.tier].tier->Erase(std::span(&key, 1));
}

// --- Room, victims and moves ------------------------------------------------

void CacheManager::RecordReferenceLocked(const BlockRef& ref, size_t in_tier) {
  for (size_t t = 0; t < tiers_.size(); ++t) {
    if (tiers_[t].admission) tiers_[t].admission->Record(ref, t == in_tier);
  }
}

void CacheManager::ForgetLocked(size_t t, const BlockKey& key) {
  tiers_[t].policy->Erase(key);
  if (tiers_[t].admission) tiers_[t].admission->Evicted(key);
}

Status CacheManager::StoreInTier(size_t t, const BlockKey& key, std::span<const std::byte> payload,
                                 int64_t expiry_ms, const BlockRef* admit, bool* refused) {
  Tier& tier = *tiers_[t].tier;
  if (payload.size() > max_block_bytes_[t] || payload.size() > capacity_bytes_[t]) {
    return Status::ResourceExhausted("a block of " + std::to_string(payload.size()) +
                                     " bytes is larger than tier '" + tier_names_[t] +
                                     "' accepts (" + std::to_string(max_block_bytes_[t]) + ")");
  }
  for (int round = 0;; ++round) {
    Status s = WriteOne(tier, key, payload, expiry_ms);
    if (s.ok() || !s.IsResourceExhausted()) return s;
    if (round == 0 && admit != nullptr && tiers_[t].admission) {
      // Full: the block would take the place of the policy's next victim.
      std::lock_guard<std::mutex> lock(mu_);
      AdmissionFilter& filter = *tiers_[t].admission;
      const std::optional<BlockKey> victim =
          filter.ComparesVictim() ? PeekVictim(*tiers_[t].policy, key) : std::nullopt;
      if (!filter.Admit(*admit, victim ? &*victim : nullptr)) {
        if (refused != nullptr) *refused = true;
        return Status::ResourceExhausted("tier '" + tier_names_[t] +
                                         "' is full and its admission filter refused the block");
      }
    }
    if (round == options_.max_eviction_rounds || MakeRoom(t, payload.size(), key) == 0) {
      return Status::ResourceExhausted("tier '" + tier_names_[t] + "' is full and no block in " +
                                       "it can be evicted (all pinned or in use)");
    }
  }
}

uint64_t CacheManager::MakeRoom(size_t t, uint64_t bytes, const BlockKey& incoming) {
  // Expired blocks are the first victims, wherever they are; the caller
  // retries its write and comes back if that was not enough.
  if (SweepExpired(256) > 0) return 1;
  enum class Pass { kSameSizeLeaves, kLeaves, kAny };
  uint64_t freed = 0;
  const int64_t now = options_.clock->NowMs();
  // Victims that could not be taken this time (busy: another operation holds
  // their key); the policy keeps them, and they are not offered again here.
  std::unordered_set<BlockKey, BlockKeyHash> busy;
  // The block `eligible` accepted last and its key lock (none where this
  // thread owns the stripe already). A busy key is refused there, like a
  // pinned one: the policy steps over it and it keeps its place and state.
  // (Handed out and put back, it came back as a block inserted anew: the
  // most recent, or a ghost's return, a reuse.)
  std::optional<BlockKey> locked_key;
  std::unique_lock<std::mutex> key_lock;
  for (Pass pass : {Pass::kSameSizeLeaves, Pass::kLeaves, Pass::kAny}) {
    VictimQuery q;
    q.n = 1;
    q.now_ms = now;
    q.incoming = &incoming;
    // The preferences bound their search: when the policy's next blocks are
    // mostly not leaves of the size (prefix roots, partial last blocks), a
    // pass gives up after stepping over that many and the next pass relaxes.
    q.max_refused = pass == Pass::kSameSizeLeaves ? kSameSizeScan
                    : pass == Pass::kLeaves       ? kLeafScan
                                                  : SIZE_MAX;
    q.eligible = [&](const BlockKey& k) {
      if (busy.count(k) > 0) return false;
      if (!index_.Evictable(k, /*leaves_only=*/pass != Pass::kAny)) return false;
      if (pass == Pass::kSameSizeLeaves) {
        std::optional<IndexEntry> e = index_.Get(k);
        if (!e || e->bytes != bytes) return false;
      }
      // Last, the key's lock, without waiting (the policy's mutex is held).
      // A block accepted before and not taken (S3-FIFO moves it to its main
      // queue) lets its lock go first, so its stripe's keys are not busy.
      key_lock = {};
      locked_key.reset();
      if (!TryKeyLock(KeyLock(k), k, &key_lock)) {
        busy.insert(k);
        return false;
      }
      locked_key = k;
      return true;
    };
    while (freed < bytes) {
      std::vector<BlockKey> victims;
      key_lock = {};
      locked_key.reset();
      {
        std::lock_guard<std::mutex> lock(mu_);
        tiers_[t].policy->Victims(q, &victims);
      }
      if (victims.empty()) break;
      // The victim is the block `eligible` accepted last; its lock is held
      // (or this thread owns its stripe already). A policy that asked about
      // another block after the one it took has its victim's lock tried here.
      if (locked_key != victims[0]) {
        key_lock = {};
        if (!TryKeyLock(KeyLock(victims[0]), victims[0], &key_lock)) {
          ReinstateVictim(t, victims[0], now);
          busy.insert(victims[0]);
          continue;
        }
      }
      const std::optional<IndexEntry> e = index_.Get(victims[0]);
      if (e && e->tier == t) {  // else gone or moved since: nothing to free here
        if (Evict(t, victims[0])) {
          freed += e->bytes;
        } else {
          busy.insert(victims[0]);
        }
      }
      key_lock = {};
    }
  }
  return freed;
}

void CacheManager::ReinstateVictim(size_t t, const BlockKey& key, int64_t now_ms) {
  const std::optional<IndexEntry> e = index_.Get(key);
  if (!e || e->tier != t) return;
  const PolicyBlock pb = PolicyBlockFor(t, *e, now_ms);
  std::lock_guard<std::mutex> lock(mu_);
  tiers_[t].policy->Insert(key, pb);
}

bool CacheManager::Evict(size_t t, const BlockKey& key) {
  const int64_t now = options_.clock->NowMs();
  const std::optional<IndexEntry> e = index_.Get(key);
  if (!e) return false;
  const HeldKeyLock held(KeyLock(key), key);  // a demotion may make room below
  enum class Fate { kExpired, kRemat, kNoHome } fate = Fate::kNoHome;
  if (e->expiry_ms <= now) {
    fate = Fate::kExpired;
  } else {
    const double idle_s = IdleFor(*e, now);
    const PlacementCosts costs = CostsFor(*e, idle_s, t + 1, tiers_.size());
    const std::vector<size_t> order = Candidates(costs, e->bytes, t + 1, tiers_.size());
    // Dropping is decided on known costs only: with a tier below whose cost
    // is unknown, the block is kept.
    const bool all_costed = !order.empty() && TiersByCost(costs).size() == order.size();
    if (all_costed && DropIsCheapest(costs)) {
      fate = Fate::kRemat;
    } else {
      for (size_t d : order) {
        if (Move(key, *e, d, DecisionKind::kDemoted, idle_s)) {
          ++counters_.demotions;
          ++tier_counters_[t].demoted;
          return true;
        }
      }
      if (!order.empty()) ++counters_.demotion_failures;
    }
  }
  Result<IndexEntry> removed = index_.Remove(key);
  if (!removed.ok()) {
    if (removed.status().IsNotFound()) return true;  // someone else removed it
    // Pinned since it was chosen: a look-up took it, and it stays, back in
    // the policy as just used (the look-up's Touch found it handed out).
    ReinstateVictim(t, key, now);
    return false;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    ForgetLocked(removed->tier, key);
  }
  (void)tiers_[removed->tier].tier->Erase(std::span(&key, 1));
  switch (fate) {
    case Fate::kExpired:
      CountExpired(*removed);
      break;
    case Fate::kRemat:
      ++counters_.remat_drops;
      ++tier_counters_[removed->tier].dropped_for_remat;
      break;
    case Fate::kNoHome:
      ++counters_.drops;
      ++tier_counters_[removed->tier].dropped;
      break;
  }
  return true;
}

bool CacheManager::Move(const BlockKey& key, const IndexEntry& e, size_t to, DecisionKind kind,
                        double idle_s) {
  const size_t from = e.tier;
  std::vector<std::byte> payload(e.bytes);
  Result<uint64_t> n = ReadOne(*tiers_[from].tier, key, payload);
  if (!n.ok()) {
    if (n.status().IsCorruption()) {
      ++counters_.corruption_misses;
      (void)DropLocked(key);
    }
    return false;
  }
  if (!StoreInTier(to, key, std::span(payload).first(*n), e.expiry_ms).ok()) return false;
  const int64_t now = options_.clock->NowMs();
  bool switched = false;
  IndexEntry moved;
  const bool present = index_.Modify(key, [&](IndexEntry& x) {
    if (x.tier != from) return;
    x.tier = static_cast<uint32_t>(to);
    x.decision = Decision{kind, static_cast<uint8_t>(from), static_cast<float>(idle_s), now};
    moved = x;
    switched = true;
  });
  if (!switched) {
    // Cannot happen while the caller holds the key's lock; be safe anyway:
    // our copy is unindexed.
    (void)tiers_[to].tier->Erase(std::span(&key, 1));
    return !present;
  }
  // A refresh that landed while the block moved went to the old tier: the new
  // copy takes the later expiry too.
  if (moved.expiry_ms > e.expiry_ms) {
    (void)tiers_[to].tier->SetExpiry(std::span(&key, 1), moved.expiry_ms);
  }
  const PolicyBlock pb = PolicyBlockFor(to, moved, now);
  {
    std::lock_guard<std::mutex> lock(mu_);
    ForgetLocked(from, key);
    tiers_[to].policy->Insert(key, pb);
    if (tiers_[to].admission) tiers_[to].admission->Inserted(BlockRef{key, pb});
  }
  (void)tiers_[from].tier->Erase(std::span(&key, 1));
  return true;
}

// --- Expiry -------------------------------------------------------------------

void CacheManager::QueueExpiry(const BlockKey& key, int64_t expiry_ms) {
  if (expiry_ms == kNoExpiry) return;
  std::lock_guard<std::mutex> lock(expiry_mu_);
  expiry_queue_.push(TimedKey{expiry_ms, key});
  KeepLiveItems(expiry_queue_, [&](const TimedKey& item) {
    std::optional<IndexEntry> e = index_.Get(item.key);
    return e && e->queued_expiry_ms == item.at_ms;
  });
}

void CacheManager::KeepLiveItems(TimedKeyQueue& queue,
                                 const std::function<bool(const TimedKey&)>& live) const {
  if (queue.size() <= 4096 || queue.size() <= 2 * index_.size()) return;
  std::vector<TimedKey> kept;
  while (!queue.empty()) {
    if (live(queue.top())) kept.push_back(queue.top());
    queue.pop();
  }
  queue = TimedKeyQueue(std::greater<>(), std::move(kept));
}

size_t CacheManager::SweepExpired(size_t limit) {
  const int64_t now = options_.clock->NowMs();
  size_t freed = 0;
  while (freed < limit) {
    std::vector<TimedKey> due;
    {
      std::lock_guard<std::mutex> lock(expiry_mu_);
      while (!expiry_queue_.empty() && expiry_queue_.top().at_ms <= now && due.size() < 256) {
        due.push_back(expiry_queue_.top());
        expiry_queue_.pop();
      }
    }
    if (due.empty()) break;
    for (const TimedKey& item : due) {
      std::optional<IndexEntry> e = index_.Get(item.key);
      if (!e || e->queued_expiry_ms != item.at_ms) continue;  // stale
      if (e->expiry_ms > now) {                               // refreshed since: look again then
        int64_t next = e->expiry_ms;
        index_.Modify(item.key, [&](IndexEntry& x) {
          next = x.expiry_ms;
          x.queued_expiry_ms = next;
        });
        QueueExpiry(item.key, next);
        continue;
      }
      std::unique_lock<std::mutex> key_lock;
      if (!TryKeyLock(KeyLock(item.key), item.key, &key_lock)) {  // busy: later
        const int64_t again = now + kPinnedExpiryRetryMs;
        index_.Modify(item.key, [&](IndexEntry& x) { x.queued_expiry_ms = again; });
        QueueExpiry(item.key, again);
        continue;
      }
      Result<IndexEntry> removed =
          index_.RemoveIf(item.key, [now](const IndexEntry& x) { return x.expiry_ms <= now; });
      if (!removed.ok()) {
        if (removed.status().code() ==
            StatusCode::kRetry) {  // pinned: a running request still reads it
          const int64_t again = now + kPinnedExpiryRetryMs;
          index_.Modify(item.key, [&](IndexEntry& x) { x.queued_expiry_ms = again; });
          QueueExpiry(item.key, again);
        }
        continue;
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        ForgetLocked(removed->tier, item.key);
      }
      (void)tiers_[removed->tier].tier->Erase(std::span(&item.key, 1));
      CountExpired(*removed);
      if (++freed == limit) break;
    }
  }
  return freed;
}

// --- Age --------------------------------------------------------------------

// A block written with a TTL or an expiry (the context-caching API's 5m and
// 1h classes, named caches, a Put's ttl_seconds) carries its writer's word
// on how long it is worth keeping, which a user has paid a cache write for:
// age moves it down but never drops it; its expiry ends it.
bool CacheManager::AgingMayDrop(const IndexEntry& e) { return e.expiry_ms == kNoExpiry; }

double CacheManager::DropFloorS(const IndexEntry& e) const {
  return std::max(IdleFor(e, e.last_access_ms), options_.placement.default_idle_s);
}

double CacheManager::ReviewProbability(const IndexEntry& e) const {
  return reuse_.SettledReuseProbability(ReuseClassOf(e.stream, e.depth), e.uses > 0).value_or(1);
}

void CacheManager::RememberAgedOut(const BlockKey& key, const IndexEntry& e) {
  std::lock_guard<std::mutex> lock(ghost_mu_);
  if (!aged_ghosts_
           .insert_or_assign(
               key, AgedGhost{e.last_access_ms, ReuseClassOf(e.stream, e.depth), e.uses > 0})
           .second) {
    return;  // already remembered: its place in the order stands
  }
  aged_ghost_order_.push_back(key);
  while (aged_ghost_order_.size() > kMaxAgedGhosts) {
    aged_ghosts_.erase(aged_ghost_order_.front());
    aged_ghost_order_.pop_front();
  }
}

std::optional<CacheManager::AgedGhost> CacheManager::TakeAgedGhost(const BlockKey& key) {
  std::lock_guard<std::mutex> lock(ghost_mu_);
  auto it = aged_ghosts_.find(key);
  if (it == aged_ghosts_.end()) return std::nullopt;
  const AgedGhost g = it->second;
  aged_ghosts_.erase(it);  // its key stays in the order until it ages out
  return g;
}

double CacheManager::NextReviewAgeS(const IndexEntry& e, double from_s) const {
  // Every option's cost is a line in the wait T: rent x T + p x fetch.
  const double p = ReviewProbability(e);
  const auto line = [&](size_t d) {
    const double fetch = model_.HoldCost(d, static_cast<double>(e.bytes), 0, p);
    return std::pair{model_.HoldCost(d, static_cast<double>(e.bytes), 1, p) - fetch, fetch};
  };
  // Plain copies: clang 14 cannot capture structured bindings in a lambda.
  const std::pair<double, double> own = line(e.tier);
  const double rent = own.first, fetch = own.second;
  if (!std::isfinite(rent) || !std::isfinite(fetch)) return kInfiniteCost;
  // The wait past which an option of rent r and fetch f is the cheaper.
  const auto crossing = [&](double r, double f) {
    if (!std::isfinite(r) || !std::isfinite(f) || !(r < rent)) return kInfiniteCost;
    return std::max(from_s, (f - fetch) / (rent - r));
  };
  double next = kInfiniteCost;
  for (size_t d = e.tier + 1; d < tiers_.size(); ++d) {
    if (!TierTakes(d, e.bytes)) continue;
    const auto [r, f] = line(d);
    next = std::min(next, crossing(r, f));
  }
  if (AgingMayDrop(e)) {
    // Not before its expected idle time either (ReviewOne).
    const double drop = crossing(0, p * model_.RematCost(e.remat_flops));
    next = std::min(next, std::max(drop, DropFloorS(e)));
  }
  return next;
}

void CacheManager::QueueReview(const BlockKey& key, const IndexEntry& e, int64_t not_before_ms) {
  const double from_s =
      static_cast<double>(std::max(not_before_ms - e.last_access_ms, kFirstReviewAgeMs)) / 1000.0;
  const double age_s = NextReviewAgeS(e, from_s);
  if (!std::isfinite(age_s) || age_s > 1e12) return;  // nothing below is ever cheaper
  // Just past the crossing: at it, staying and moving cost the same.
  const int64_t due =
      AddSaturating(e.last_access_ms, static_cast<int64_t>(std::ceil(age_s * 1000.0)) + 1);
  std::lock_guard<std::mutex> lock(review_mu_);
  review_queue_.push(TimedKey{due, key});
  std::unordered_set<BlockKey, BlockKeyHash> seen;  // one item per block still indexed
  KeepLiveItems(review_queue_, [&](const TimedKey& item) {
    return index_.Get(item.key) && seen.insert(item.key).second;
  });
}

size_t CacheManager::ReviewIdle(size_t limit, size_t* looked_at) {
  const int64_t now = options_.clock->NowMs();
  size_t looked = 0, moved = 0;
  while (looked < limit) {
    std::vector<BlockKey> due;
    {
      std::lock_guard<std::mutex> lock(review_mu_);
      while (!review_queue_.empty() && review_queue_.top().at_ms <= now &&
             looked + due.size() < limit) {
        due.push_back(review_queue_.top().key);
        review_queue_.pop();
      }
    }
    if (due.empty()) break;
    looked += due.size();
    for (const BlockKey& key : due) {
      const bool went = ReviewOne(key, now);
      moved += went;
      // Still cached: look again at its next crossing, counted from its last
      // use (which a use since has moved); one that stayed (used since,
      // pinned, busy, a parent) not before a second from now.
      if (const std::optional<IndexEntry> e = index_.Get(key)) {
        QueueReview(key, *e, went ? now : now + kReviewRetryMs);
      }
    }
  }
  if (looked_at != nullptr) *looked_at = looked;
  return moved;
}

bool CacheManager::ReviewOne(const BlockKey& key, int64_t now) {
  std::unique_lock<std::mutex> key_lock;
  if (!TryKeyLock(KeyLock(key), key, &key_lock)) return false;
  const HeldKeyLock held(KeyLock(key), key);  // a demotion may make room below
  const std::optional<IndexEntry> e = index_.Get(key);
  if (!e || e->pins > 0 || e->expiry_ms <= now) return false;  // the expiry sweep's
  // Rent or buy (the ski-rental rule): a block that has waited `age` since
  // its last use is priced as if it will wait as long again (at least its
  // class's expected idle time) and then come back with its class's
  // probability p (1 until the class has seen enough reuses; blocks the
  // review drops and that are written again count as reused, so the review
  // cannot talk p down). Each move happens once waiting longer in the
  // current tier has cost as much as the move saves in expectation.
  const double age_s = static_cast<double>(now - e->last_access_ms) / 1000.0;
  const double idle_s = std::max(IdleFor(*e, now), age_s);
  const size_t t = e->tier;
  const PlacementCosts costs = model_.Costs(
      static_cast<double>(e->bytes), idle_s, e->remat_flops,
      [&](size_t d) { return d >= t && TierTakes(d, e->bytes); }, ReviewProbability(*e));
  const std::vector<size_t> order = Candidates(costs, e->bytes, t, tiers_.size());
  // Like every decision, on known costs only.
  if (order.empty() || TiersByCost(costs).size() != order.size()) return false;
  // Dropped only as a leaf (a block with cached children keeps its chain
  // reachable; it may still move down) and only without an expiry.
  // A block is not given up before it has waited as long as the blocks of
  // its class that do come back usually wait (its expected idle time: the
  // default idle time without history): young blocks are the working set
  // however cheap they are to recompute.
  if (DropIsCheapest(costs) && e->cached_children == 0 && AgingMayDrop(*e) &&
      age_s >= DropFloorS(*e)) {
    if (!DropLocked(key).ok()) return false;  // pinned since
    RememberAgedOut(key, *e);
    ++counters_.remat_drops;
    ++counters_.aged_out;
    ++tier_counters_[t].dropped_for_remat;
    return true;
  }
  for (size_t d : order) {
    if (d == t) return false;  // where it is is still the cheapest it can have
    if (Move(key, *e, d, DecisionKind::kDemoted, idle_s)) {
      ++counters_.demotions;
      ++counters_.aged_out;
      ++tier_counters_[t].demoted;
      return true;
    }
  }
  return false;
}

// --- Promotion ----------------------------------------------------------------

void CacheManager::QueuePromotion(const BlockKey& key, size_t to) {
  {
    std::lock_guard<std::mutex> lock(promote_mu_);
    if (promoting_.count(key) > 0) return;
    if (promotions_.size() >= options_.max_queued_promotions) {
      ++counters_.promotion_skips;
      return;
    }
    promotions_.push_back(Promotion{key, to});
    promoting_.insert(key);
  }
  promote_cv_.notify_one();
}

size_t CacheManager::RunPromotions() {
  size_t moved = 0;
  for (;;) {
    Promotion p;
    {
      std::lock_guard<std::mutex> lock(promote_mu_);
      if (promotions_.empty()) break;
      p = promotions_.front();
      promotions_.pop_front();
      promoting_.erase(p.key);
    }
    std::lock_guard<std::mutex> key_lock(KeyLock(p.key));
    const HeldKeyLock held(KeyLock(p.key), p.key);
    const int64_t now = options_.clock->NowMs();
    std::optional<IndexEntry> e = index_.Get(p.key);
    if (!e || e->tier <= p.to || e->expiry_ms <= now ||
        !Move(p.key, *e, p.to, DecisionKind::kPromoted, IdleFor(*e, now))) {
      ++counters_.promotion_skips;
      continue;
    }
    ++counters_.promotions;
    ++moved;
  }
  return moved;
}

// --- Explain and stats ----------------------------------------------------------

Result<BlockExplanation> CacheManager::Explain(const BlockKey& key) const {
  std::optional<IndexEntry> e = index_.Get(key);
  if (!e) return Status::NotFound("block " + key.ToHex() + " is not cached");
  const int64_t now = options_.clock->NowMs();
  BlockExplanation x;
  x.entry = *e;
  x.tier_name = tier_names_[e->tier];
  x.tier_names = tier_names_;
  x.decision_costs = CostsFor(*e, e->decision.idle_s, 0, tiers_.size());
  x.reuse_estimate_s = reuse_.EstimateS(ReuseClassOf(e->stream, e->depth));
  x.reuse_probability = ReuseProbabilityOf(*e);
  x.expected_idle_s = IdleFor(*e, now);
  x.costs_now = CostsFor(*e, x.expected_idle_s, 0, tiers_.size());
  for (size_t t = 0; t < tiers_.size(); ++t) x.drain_time_s.push_back(model_.DrainTimeS(t));
  return x;
}

ExpiryClass ExpiryClassOf(int64_t ttl_ms) {
  if (ttl_ms <= 0) return ExpiryClass::kFixed;
  if (ttl_ms == 5 * 60 * 1000) return ExpiryClass::k5m;
  if (ttl_ms == 60 * 60 * 1000) return ExpiryClass::k1h;
  return ExpiryClass::kOther;
}

std::string_view ExpiryClassName(ExpiryClass c) {
  switch (c) {
    case ExpiryClass::k5m:
      return "5m";
    case ExpiryClass::k1h:
      return "1h";
    case ExpiryClass::kOther:
      return "other";
    case ExpiryClass::kFixed:
      return "fixed";
  }
  return "other";
}

void CacheManager::CountExpired(const IndexEntry& e) {
  ++counters_.expired;
  ++tier_counters_[e.tier].expired;
  ++expired_by_ttl_[static_cast<size_t>(ExpiryClassOf(e.ttl_ms))];
}

CacheStats CacheManager::Stats() const {
  CacheStats s;
  for (const TierSlot& slot : tiers_) s.tiers.push_back(slot.tier->Info());
  for (const TierCounters& t : tier_counters_) {
    s.traffic.push_back(TierTraffic{t.hit_blocks, t.hit_tokens, t.read_blocks, t.read_bytes,
                                    t.read_tokens, t.demoted, t.dropped_for_remat, t.dropped,
                                    t.expired});
  }
  for (size_t i = 0; i < kNumExpiryClasses; ++i) s.expired_by_ttl[i] = expired_by_ttl_[i];
  s.indexed_blocks = index_.size();
  const Counters& c = counters_;
  s.lookups = c.lookups;
  s.lookup_blocks = c.lookup_blocks;
  s.lookup_hit_blocks = c.lookup_hit_blocks;
  s.reads = c.reads;
  s.read_hits = c.read_hits;
  s.read_misses = c.read_misses;
  s.inserts = c.inserts;
  s.refreshes = c.refreshes;
  s.insert_bytes = c.insert_bytes;
  s.insert_failures = c.insert_failures;
  s.admission_refusals = c.admission_refusals;
  s.placed = c.placed;
  s.promotions = c.promotions;
  s.promotion_skips = c.promotion_skips;
  s.demotions = c.demotions;
  s.demotion_failures = c.demotion_failures;
  s.drops = c.drops;
  s.remat_drops = c.remat_drops;
  s.aged_out = c.aged_out;
  s.expired = c.expired;
  s.corruption_misses = c.corruption_misses;
  s.shared_stats = c.shared_stats;
  s.shared_adopted = c.shared_adopted;
  s.shared_writes = c.shared_writes;
  s.shared_write_failures = c.shared_write_failures;
  s.shared_write_skips = c.shared_write_skips;
  return s;
}

}  // namespace kvtier
