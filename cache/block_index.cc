#include "cache/block_index.h"

namespace kvtier {

PinHandle& PinHandle::operator=(PinHandle&& o) noexcept {
  if (this != &o) {
    Reset();
    index_ = o.index_;
    key_ = o.key_;
    o.index_ = nullptr;
  }
  return *this;
}

void PinHandle::Reset() {
  if (index_ != nullptr) {
    index_->Unpin(key_);
    index_ = nullptr;
  }
}

BlockIndex::BlockIndex(Clock* clock) : clock_(clock) {}

const char* DecisionKindName(DecisionKind kind) {
  switch (kind) {
    case DecisionKind::kNone:
      return "none";
    case DecisionKind::kPlaced:
      return "placed";
    case DecisionKind::kPromoted:
      return "promoted";
    case DecisionKind::kDemoted:
      return "demoted";
    case DecisionKind::kRecovered:
      return "recovered";
    case DecisionKind::kShared:
      return "shared";
  }
  return "unknown";
}

std::optional<uint32_t> BlockIndex::Upsert(const BlockKey& key,
                                           const std::optional<BlockKey>& parent, uint32_t tier,
                                           uint64_t bytes, int64_t expiry_ms) {
  IndexEntry fields;
  fields.parent = parent;
  fields.tier = tier;
  fields.bytes = bytes;
  fields.expiry_ms = expiry_ms;
  return Upsert(key, fields);
}

std::optional<uint32_t> BlockIndex::Upsert(const BlockKey& key, const IndexEntry& fields) {
  const int64_t now = clock_->NowMs();
  bool inserted;
  std::optional<uint32_t> previous_tier;
  {
    Shard& s = ShardOf(key);
    std::lock_guard<std::mutex> lock(s.mu);
    auto [it, is_new] = s.map.try_emplace(key);
    inserted = is_new;
    IndexEntry& e = it->second;
    if (!is_new) previous_tier = e.tier;
    const uint32_t pins = e.pins, children = e.cached_children;
    const std::optional<BlockKey> parent = is_new ? fields.parent : e.parent;
    const uint32_t depth = is_new ? (fields.parent ? 1 : 0) : e.depth;
    const uint32_t uses = is_new ? 0 : e.uses;
    e = fields;
    e.pins = pins;
    e.cached_children = children;
    e.parent = parent;
    e.depth = depth;
    e.uses = uses;
    e.last_access_ms = now;
  }
  if (inserted && fields.parent) {
    const std::optional<uint32_t> parent_depth = AdjustChildren(*fields.parent, +1);
    if (parent_depth && *parent_depth > 0) {
      WithEntry(key, [&](IndexEntry* e) {
        if (e != nullptr) e->depth = *parent_depth + 1;
      });
    }
  }
  return previous_tier;
}

bool BlockIndex::Modify(const BlockKey& key, const std::function<void(IndexEntry&)>& fn) {
  return WithEntry(key, [&](IndexEntry* e) {
    if (e == nullptr) return false;
    fn(*e);
    return true;
  });
}

bool BlockIndex::SetExpiry(const BlockKey& key, int64_t expiry_ms) {
  return WithEntry(key, [&](IndexEntry* e) {
    if (e == nullptr) return false;
    e->expiry_ms = expiry_ms;
    return true;
  });
}

bool BlockIndex::SetTier(const BlockKey& key, uint32_t tier) {
  return WithEntry(key, [&](IndexEntry* e) {
    if (e == nullptr) return false;
    e->tier = tier;
    return true;
  });
}

Result<IndexEntry> BlockIndex::Remove(const BlockKey& key) { return RemoveIf(key, nullptr); }

Result<IndexEntry> BlockIndex::RemoveIf(const BlockKey& key,
                                        const std::function<bool(const IndexEntry&)>& only_if) {
  IndexEntry removed;
  {
    Shard& s = ShardOf(key);
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.map.find(key);
    if (it == s.map.end() || (only_if && !only_if(it->second))) {
      return Status::NotFound("block " + key.ToHex() + " is not indexed");
    }
    if (it->second.pins > 0) {
      return Status::Retry("block " + key.ToHex() + " is pinned by " +
                           std::to_string(it->second.pins) + " request(s)");
    }
    removed = it->second;
    s.map.erase(it);
  }
  if (removed.parent) AdjustChildren(*removed.parent, -1);
  return removed;
}

std::optional<IndexEntry> BlockIndex::Get(const BlockKey& key) const {
  return WithEntry(key, [](const IndexEntry* e) { return e ? std::optional(*e) : std::nullopt; });
}

size_t BlockIndex::LongestPrefix(std::span<const BlockKey> keys, std::vector<IndexEntry>* entries) {
  const int64_t now = clock_->NowMs();
  size_t n = 0;
  for (const BlockKey& key : keys) {
    Shard& s = ShardOf(key);
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.map.find(key);
    if (it == s.map.end() || it->second.expiry_ms <= now) break;
    if (entries) entries->push_back(it->second);
    it->second.last_access_ms = now;
    ++n;
  }
  return n;
}

void BlockIndex::Touch(const BlockKey& key) {
  const int64_t now = clock_->NowMs();
  WithEntry(key, [&](IndexEntry* e) {
    if (e) e->last_access_ms = now;
  });
}

PinHandle BlockIndex::Pin(const BlockKey& key) {
  const int64_t now = clock_->NowMs();
  const bool pinned = WithEntry(key, [&](IndexEntry* e) {
    if (e == nullptr || e->expiry_ms <= now) return false;
    ++e->pins;
    return true;
  });
  return pinned ? PinHandle(this, key) : PinHandle();
}

void BlockIndex::Unpin(const BlockKey& key) {
  WithEntry(key, [](IndexEntry* e) {
    if (e && e->pins > 0) --e->pins;
  });
}

bool BlockIndex::Evictable(const BlockKey& key, bool leaves_only) const {
  return WithEntry(key, [&](const IndexEntry* e) {
    return e != nullptr && e->pins == 0 && (!leaves_only || e->cached_children == 0);
  });
}

std::vector<BlockKey> BlockIndex::Expired(size_t limit) const {
  const int64_t now = clock_->NowMs();
  std::vector<BlockKey> out;
  for (const Shard& s : shards_) {
    std::lock_guard<std::mutex> lock(s.mu);
    for (const auto& [key, e] : s.map) {
      if (out.size() >= limit) return out;
      if (e.expiry_ms <= now && e.pins == 0) out.push_back(key);
    }
  }
  return out;
}

size_t BlockIndex::size() const {
  size_t n = 0;
  for (const Shard& s : shards_) {
    std::lock_guard<std::mutex> lock(s.mu);
    n += s.map.size();
  }
  return n;
}

std::optional<uint32_t> BlockIndex::AdjustChildren(const BlockKey& parent, int delta) {
  std::optional<uint32_t> depth;
  WithEntry(parent, [&](IndexEntry* e) {
    if (e == nullptr) return;
    depth = e->depth;
    if (delta > 0) {
      ++e->cached_children;
    } else if (e->cached_children > 0) {
      --e->cached_children;
    }
  });
  return depth;
}

}  // namespace kvtier
