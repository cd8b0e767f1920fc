#include "cache/cache_manager.h"

#include <string>

#include "common/log.h"

namespace kvtier {
namespace {

// Announces recovered blocks into the index and the tier's policy.
class RecoverySink final : public IndexSink {
 public:
  RecoverySink(BlockIndex& index, EvictionPolicy& policy, uint32_t tier)
      : index_(index), policy_(policy), tier_(tier) {}
  void Announce(const BlockKey& key, uint64_t bytes, int64_t expiry_ms) override {
    index_.Upsert(key, std::nullopt, tier_, bytes, expiry_ms);
    policy_.Insert(key, bytes);
    ++count;
  }
  uint64_t count = 0;

 private:
  BlockIndex& index_;
  EvictionPolicy& policy_;
  uint32_t tier_;
};

}  // namespace

CacheManager::CacheManager(std::vector<TierSlot> tiers, const CacheManagerOptions& options)
    : options_(options), tiers_(std::move(tiers)), index_(options.clock) {
  for (const TierSlot& slot : tiers_) tier_names_.push_back(slot.tier->Info().name);
}

Result<std::unique_ptr<CacheManager>> CacheManager::Open(std::vector<TierSlot> tiers,
                                                         const CacheManagerOptions& options) {
  if (tiers.empty()) return Status::InvalidArgument("a cache needs at least one tier");
  for (const TierSlot& slot : tiers) {
    if (!slot.tier || !slot.policy) {
      return Status::InvalidArgument("every tier needs a storage and an eviction policy");
    }
  }
  if (options.clock == nullptr) return Status::InvalidArgument("the cache needs a clock");
  std::unique_ptr<CacheManager> m(new CacheManager(std::move(tiers), options));
  for (size_t t = 0; t < m->tiers_.size(); ++t) {
    TierSlot& slot = m->tiers_[t];
    RecoverySink sink(m->index_, *slot.policy, static_cast<uint32_t>(t));
    KVTIER_RETURN_IF_ERROR(slot.tier->Recover(sink));
    if (sink.count > 0) {
      LogInfo("tier_recovered",
              LogFields().Add("tier", slot.tier->Info().name).Add("blocks", sink.count));
    }
  }
  return m;
}

PrefixHit CacheManager::Lookup(std::span<const BlockKey> keys, bool pin) {
  PrefixHit hit;
  hit.blocks = index_.LongestPrefix(keys, &hit.entries);
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
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = hit.blocks; i-- > 0;) tiers_[hit.entries[i].tier].policy->Touch(keys[i]);
  }
  // The run may have stopped at an expired block: free it now rather than
  // waiting for eviction to reach it.
  if (hit.blocks < keys.size()) {
    std::optional<IndexEntry> next = index_.Get(keys[hit.blocks]);
    if (next && next->expiry_ms <= options_.clock->NowMs() && Drop(keys[hit.blocks]).ok()) {
      ++counters_.expired;
    }
  }
  ++counters_.lookups;
  counters_.lookup_blocks += keys.size();
  counters_.lookup_hit_blocks += hit.blocks;
  return hit;
}

Status CacheManager::Insert(const BlockKey& key, const std::optional<BlockKey>& parent,
                            std::span<const std::byte> payload, int64_t expiry_ms) {
  if (payload.empty()) return Status::InvalidArgument("a block payload may not be empty");
  if (expiry_ms <= options_.clock->NowMs()) {
    return Status::InvalidArgument("block " + key.ToHex() + " would already be expired");
  }
  if (std::optional<IndexEntry> e = index_.Get(key)) {
    if (e->expiry_ms > options_.clock->NowMs()) {
      Refresh(key, *e, expiry_ms);
      ++counters_.refreshes;
      return Status::Ok();
    }
    if (Status s = Drop(key); !s.ok() && !s.IsNotFound()) return s;  // expired but pinned
  }
  Status s = StoreInTier(0, key, payload, expiry_ms);
  if (!s.ok()) {
    ++counters_.insert_failures;
    return s;
  }
  const std::optional<uint32_t> previous = index_.Upsert(key, parent, 0, payload.size(), expiry_ms);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (previous && *previous != 0) tiers_[*previous].policy->Erase(key);
    tiers_[0].policy->Insert(key, payload.size());
  }
  // A concurrent insert of the same key may have been demoted meanwhile: its
  // copy below is now unindexed and goes.
  if (previous && *previous != 0) (void)tiers_[*previous].tier->Erase(std::span(&key, 1));
  ++counters_.inserts;
  counters_.insert_bytes += payload.size();
  return Status::Ok();
}

void CacheManager::Refresh(const BlockKey& key, const IndexEntry& e, int64_t expiry_ms) {
  if (expiry_ms > e.expiry_ms) {
    // The tier first: it enforces expiry on read, and must not expire a block
    // the index still promises.
    (void)tiers_[e.tier].tier->SetExpiry(std::span(&key, 1), expiry_ms);
    index_.SetExpiry(key, expiry_ms);
  }
  index_.Touch(key);
  std::lock_guard<std::mutex> lock(mu_);
  tiers_[e.tier].policy->Touch(key);
}

Status CacheManager::StoreInTier(size_t t, const BlockKey& key, std::span<const std::byte> payload,
                                 int64_t expiry_ms) {
  Tier& tier = *tiers_[t].tier;
  const TierInfo info = tier.Info();
  if (payload.size() > info.max_block_bytes || payload.size() > info.capacity_bytes) {
    return Status::ResourceExhausted("a block of " + std::to_string(payload.size()) +
                                     " bytes is larger than tier '" + info.name + "' accepts (" +
                                     std::to_string(info.max_block_bytes) + ")");
  }
  for (int round = 0;; ++round) {
    Status s = WriteOne(tier, key, payload, expiry_ms);
    if (s.ok() || !s.IsResourceExhausted()) return s;
    if (round == options_.max_eviction_rounds || MakeRoom(t, payload.size()) == 0) {
      return Status::ResourceExhausted("tier '" + info.name + "' is full and no block in it " +
                                       "can be evicted (all pinned or in use)");
    }
  }
}

uint64_t CacheManager::MakeRoom(size_t t, uint64_t bytes) {
  enum class Pass { kSameSizeLeaves, kLeaves, kAny };
  uint64_t freed = 0;
  for (Pass pass : {Pass::kSameSizeLeaves, Pass::kLeaves, Pass::kAny}) {
    auto eligible = [&](const BlockKey& k) {
      if (!index_.Evictable(k, /*leaves_only=*/pass != Pass::kAny)) return false;
      if (pass != Pass::kSameSizeLeaves) return true;
      std::optional<IndexEntry> e = index_.Get(k);
      return e && e->bytes == bytes;
    };
    while (freed < bytes) {
      std::vector<BlockKey> victims;
      {
        std::lock_guard<std::mutex> lock(mu_);
        tiers_[t].policy->Victims(1, eligible, &victims);
      }
      if (victims.empty()) break;
      const std::optional<IndexEntry> e = index_.Get(victims[0]);
      if (e && e->tier == t && Evict(t, victims[0])) freed += e->bytes;
    }
  }
  return freed;
}

std::optional<size_t> CacheManager::TierBelowFor(size_t t, uint64_t bytes) const {
  for (size_t below = t + 1; below < tiers_.size(); ++below) {
    const TierInfo info = tiers_[below].tier->Info();
    if (bytes <= info.max_block_bytes && bytes <= info.capacity_bytes) return below;
  }
  return std::nullopt;
}

bool CacheManager::Evict(size_t t, const BlockKey& key) {
  const std::optional<IndexEntry> e = index_.Get(key);
  if (!e) return false;
  const std::optional<size_t> below = TierBelowFor(t, e->bytes);
  if (below && e->expiry_ms > options_.clock->NowMs()) {
    const size_t d = *below;
    std::vector<std::byte> payload(e->bytes);
    Result<uint64_t> n = ReadOne(*tiers_[t].tier, key, payload);
    if (n.ok() && StoreInTier(d, key, std::span(payload).first(*n), e->expiry_ms).ok()) {
      if (!index_.SetTier(key, static_cast<uint32_t>(d))) {
        // Erased while it moved: the copy below is unindexed and goes too.
        (void)tiers_[d].tier->Erase(std::span(&key, 1));
        return true;
      }
      // A refresh that landed while the block moved went to the old tier: the
      // new copy takes the later expiry too.
      if (std::optional<IndexEntry> now = index_.Get(key); now && now->expiry_ms > e->expiry_ms) {
        (void)tiers_[d].tier->SetExpiry(std::span(&key, 1), now->expiry_ms);
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        tiers_[d].policy->Insert(key, *n);
      }
      (void)tiers_[t].tier->Erase(std::span(&key, 1));
      ++counters_.demotions;
      return true;
    }
    ++counters_.demotion_failures;  // unreadable, or refused below: drop it instead
  }
  Result<IndexEntry> removed = index_.Remove(key);
  if (!removed.ok()) {  // pinned since it was chosen: it stays
    std::lock_guard<std::mutex> lock(mu_);
    tiers_[t].policy->Insert(key, e->bytes);
    return false;
  }
  (void)tiers_[t].tier->Erase(std::span(&key, 1));
  ++counters_.drops;
  return true;
}

Result<IndexEntry> CacheManager::Find(const BlockKey& key) const {
  std::optional<IndexEntry> e = index_.Get(key);
  if (!e || e->expiry_ms <= options_.clock->NowMs()) {
    return Status::NotFound("block " + key.ToHex() + " is not cached");
  }
  return *e;
}

Result<uint64_t> CacheManager::Read(const BlockKey& key, std::span<std::byte> dest) {
  ++counters_.reads;
  // Two attempts: a block demoted between the index look-up and the read is
  // found in its new tier on the second.
  for (int attempt = 0; attempt < 2; ++attempt) {
    Result<IndexEntry> e = Find(key);
    if (!e.ok()) break;
    if (dest.size() < e->bytes) {
      return Status::ResourceExhausted("the buffer holds " + std::to_string(dest.size()) +
                                       " bytes but block " + key.ToHex() + " has " +
                                       std::to_string(e->bytes));
    }
    Result<uint64_t> n = ReadOne(*tiers_[e->tier].tier, key, dest);
    if (n.ok()) {
      index_.Touch(key);
      {
        std::lock_guard<std::mutex> lock(mu_);
        tiers_[e->tier].policy->Touch(key);
      }
      ++counters_.read_hits;
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
    if (!n.status().IsNotFound() || !now || now->tier == e->tier) {
      if (n.status().IsNotFound()) (void)Drop(key);  // the index was stale
      ++counters_.read_misses;
      return n.status();
    }
  }
  ++counters_.read_misses;
  return Status::NotFound("block " + key.ToHex() + " is not cached");
}

Status CacheManager::Erase(const BlockKey& key) { return Drop(key); }

Status CacheManager::Drop(const BlockKey& key) {
  // The tier the block was in when it left the index: a demotion may have
  // moved it since anyone looked.
  Result<IndexEntry> e = index_.Remove(key);
  if (!e.ok()) return e.status();
  {
    std::lock_guard<std::mutex> lock(mu_);
    tiers_[e->tier].policy->Erase(key);
  }
  return tiers_[e->tier].tier->Erase(std::span(&key, 1));
}

CacheStats CacheManager::Stats() const {
  CacheStats s;
  for (const TierSlot& slot : tiers_) s.tiers.push_back(slot.tier->Info());
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
  s.demotions = c.demotions;
  s.demotion_failures = c.demotion_failures;
  s.drops = c.drops;
  s.expired = c.expired;
  s.corruption_misses = c.corruption_misses;
  return s;
}

}  // namespace kvtier
