#include "context/named_caches.h"

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <string_view>
#include <tuple>
#include <utility>

#include "context/record_codec.h"

namespace kvtier {
namespace {

const char kCachesFamily[] = "caches";
const char kIdsFamily[] = "ids";

// Cache values, format version 1. Integers are fixed-width little-endian,
// strings a u16 length then the bytes:
//   u8  version (1)
//   str tenant          str name          str model          str display_name
//   i64 create_time_ms  i64 expire_time_ms                   i64 ttl_ms
//   u32 token count n   n x i32 token id
//   u64 XXH3-64 of every byte before it
// The tokens come last so that the index can be read without copying them. A
// reader refuses any other version, a short or long value, or a checksum
// mismatch; a new field means a new version, and readers keep decoding the
// old ones.
constexpr uint8_t kFormatVersion = 1;
constexpr size_t kNameHexDigits = 16;
constexpr size_t kMaxTokensLimit = size_t{1} << 26;

std::string EncodeCache(const NamedCache& c) {
  RecordWriter e(64 + c.tenant.size() + c.name.size() + c.model.size() + c.display_name.size() +
                 4 * c.tokens.size());
  e.PutU8(kFormatVersion);
  e.PutString(c.tenant);
  e.PutString(c.name);
  e.PutString(c.model);
  e.PutString(c.display_name);
  e.PutI64(c.create_time_ms);
  e.PutI64(c.expire_time_ms);
  e.PutI64(c.ttl_ms);
  e.PutU32(static_cast<uint32_t>(c.tokens.size()));
  for (int32_t t : c.tokens) e.PutU32(static_cast<uint32_t>(t));
  return std::move(e).Finish();
}

// Why `v` is not a cache, or nullopt and *out filled (its tokens only when
// `with_tokens`; token_count always).
std::optional<std::string> DecodeCache(std::string_view v, bool with_tokens, NamedCache* out) {
  std::string_view body;
  if (std::optional<std::string> why = VerifyRecordChecksum(v, &body)) return why;
  RecordReader d(body);
  const uint8_t version = d.ReadU8();
  if (version != kFormatVersion) return "unknown format version " + std::to_string(version);
  NamedCache c;
  c.tenant = d.ReadString();
  c.name = d.ReadString();
  c.model = d.ReadString();
  c.display_name = d.ReadString();
  c.create_time_ms = d.ReadI64();
  c.expire_time_ms = d.ReadI64();
  c.ttl_ms = d.ReadI64();
  c.token_count = d.ReadU32();
  if (!d.ok()) return "value is truncated";
  if (d.remaining_bytes() != 4 * c.token_count) {
    return "value holds " + std::to_string(d.remaining_bytes()) + " bytes of tokens, not 4 x " +
           std::to_string(c.token_count);
  }
  if (with_tokens) {
    c.tokens.resize(c.token_count);
    for (int32_t& t : c.tokens) {
      t = static_cast<int32_t>(d.ReadU32());
      if (t < 0) return "negative token id " + std::to_string(t);
    }
  }
  *out = std::move(c);
  return std::nullopt;
}

std::string CacheKey(std::string_view tenant, std::string_view name) {
  std::string k(tenant);
  k.push_back('\0');
  k.append(name);
  return k;
}

Status CheckNamedCacheField(const char* name, const std::string& value, bool required) {
  return CheckPrintableField(name, value, kMaxNamedCacheFieldBytes, required);
}

bool IsWellFormedName(std::string_view name) {
  const std::string_view prefix(kNamedCachePrefix);
  if (name.size() != prefix.size() + kNameHexDigits || !name.starts_with(prefix)) return false;
  return std::all_of(name.begin() + prefix.size(), name.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// Checks what every call naming a cache requires of its tenant and name.
Status CheckTenantAndName(const std::string& tenant, const std::string& name) {
  // A tenant with a '\0' would name keys of another tenant.
  KVTIER_RETURN_IF_ERROR(CheckNamedCacheField("tenant", tenant, true));
  if (!IsWellFormedName(name)) {
    return Status::InvalidArgument("cache name '" + EscapeForMessage(name) +
                                   "' is not of the form " + kNamedCachePrefix +
                                   "<16 lowercase hex digits>");
  }
  return Status::Ok();
}

// The one answer for a cache that does not exist, has expired or is another
// tenant's: nothing in it tells them apart.
Status NotFoundStatus(const std::string& name) {
  return Status::NotFound("named cache " + name + " not found");
}

Status CorruptionStatus(std::string_view key, const std::string& why) {
  return Status::Corruption("named cache " + EscapeForMessage(key) + ": " + why);
}

bool Expired(const NamedCache& c, int64_t now_ms) { return now_ms >= c.expire_time_ms; }

// The expiry time `expiry` asks for at `now_ms`, or kInvalidArgument naming
// the problem.
Result<int64_t> ExpiryTime(const NamedCacheExpiry& expiry, int64_t now_ms) {
  if (expiry.ttl_ms.has_value() == expiry.expire_time_ms.has_value()) {
    return Status::InvalidArgument(expiry.ttl_ms ? "both ttl_ms and expire_time_ms are set; "
                                                   "exactly one of them must be"
                                                 : "neither ttl_ms nor expire_time_ms is set; "
                                                   "exactly one of them must be");
  }
  if (expiry.ttl_ms) {
    const int64_t ttl = *expiry.ttl_ms;
    if (ttl < kMinNamedCacheTtlMs) {
      return Status::InvalidArgument("ttl_ms " + std::to_string(ttl) +
                                     " is shorter than the minimum " +
                                     std::to_string(kMinNamedCacheTtlMs) + " (1 minute)");
    }
    if (ttl > kMaxNamedCacheTtlMs) {
      return Status::InvalidArgument("ttl_ms " + std::to_string(ttl) +
                                     " is longer than the maximum " +
                                     std::to_string(kMaxNamedCacheTtlMs) + " (7 days)");
    }
    return now_ms + ttl;
  }
  const int64_t at = *expiry.expire_time_ms;
  if (at <= now_ms) {
    return Status::InvalidArgument("expire_time_ms " + std::to_string(at) +
                                   " is not in the future (now " + std::to_string(now_ms) + ")");
  }
  if (at - now_ms > kMaxNamedCacheTtlMs) {
    return Status::InvalidArgument("expire_time_ms " + std::to_string(at) +
                                   " is more than 7 days ahead (now " + std::to_string(now_ms) +
                                   ")");
  }
  return at;
}

}  // namespace

NamedCacheRegistry::NamedCacheRegistry(const NamedCacheOptions& options) : options_(options) {}

Result<std::unique_ptr<NamedCacheRegistry>> NamedCacheRegistry::Open(
    const NamedCacheOptions& options) {
  if (options.path.empty()) return Status::InvalidArgument("named cache registry path is empty");
  if (options.clock == nullptr)
    return Status::InvalidArgument("named cache registry clock is null");
  if (options.max_caches_per_tenant == 0) {
    return Status::InvalidArgument("max_caches_per_tenant is 0");
  }
  if (options.max_tokens == 0 || options.max_tokens > kMaxTokensLimit) {
    return Status::InvalidArgument("max_tokens " + std::to_string(options.max_tokens) +
                                   " is not in [1, " + std::to_string(kMaxTokensLimit) + "]");
  }
  std::unique_ptr<NamedCacheRegistry> registry(new NamedCacheRegistry(options));
  KVTIER_RETURN_IF_ERROR(registry->OpenDb());
  KVTIER_RETURN_IF_ERROR(registry->LoadIndex());
  return registry;
}

// What Open answers for a registry RocksDB finds damaged (see the header).
Status RefuseDamagedRegistry(const Status& s, const std::string& path) {
  return Status::Corruption(
      s.message() +
      ". The named cache registry is damaged and kvtierd will not start on it: restore the "
      "directory " +
      path +
      " from a backup, or move it aside to start with no named caches "
      "(their clients then get NOT_FOUND)");
}

Status NamedCacheRegistry::OpenDb() {
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  guard_ = std::make_unique<RocksWriteGuard>(
      RocksWriteGuardOptions{.store = "named cache registry",
                             .path = options_.path,
                             .min_free_bytes = options_.min_free_bytes,
                             .essential = true,
                             .clock = options_.clock});
  Status s = OpenGuardedRocksStore(options_.path, "named cache registry",
                                   {{kCachesFamily, rocksdb::ColumnFamilyOptions()},
                                    {kIdsFamily, rocksdb::ColumnFamilyOptions()}},
                                   *guard_, &db_, &handles);
  if (s.IsCorruption()) return RefuseDamagedRegistry(s, options_.path);
  KVTIER_RETURN_IF_ERROR(s);
  caches_ = handles[0];
  ids_ = handles[1];
  return Status::Ok();
}

Status NamedCacheRegistry::LoadIndex() {
  Status s = ReadIndex();
  return s.IsCorruption() ? RefuseDamagedRegistry(s, options_.path) : s;
}

Status NamedCacheRegistry::ReadIndex() {
  std::lock_guard<std::mutex> lock(mu_);
  rocksdb::ReadOptions ro;
  ro.fill_cache = false;  // read once; the index keeps what is needed
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, caches_));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    const std::string key = it->key().ToString();
    IndexEntry entry;
    if (std::optional<std::string> why =
            DecodeCache(it->value().ToStringView(), /*with_tokens=*/false, &entry.meta)) {
      entry.corruption = *why;
    } else if (CacheKey(entry.meta.tenant, entry.meta.name) != key) {
      entry.corruption = "its value belongs to another key";
    }
    if (!entry.corruption.empty()) {
      entry.meta = NamedCache{};
      // Keep its name taken even so: a new cache must not share its key.
      if (const size_t nul = key.find('\0'); nul != std::string::npos) {
        names_.insert(key.substr(nul + 1));
      }
    } else {
      names_.insert(entry.meta.name);
    }
    index_.emplace(key, std::move(entry));
  }
  KVTIER_RETURN_IF_ERROR(
      FromRocksStatus(it->status(), "reading the named cache registry at " + options_.path));
  // The request ids, each next to the cache it created.
  std::unique_ptr<rocksdb::Iterator> ids(db_->NewIterator(ro, ids_));
  for (ids->SeekToFirst(); ids->Valid(); ids->Next()) {
    const std::string id_key = ids->key().ToString();
    const std::string name = ids->value().ToString();
    const size_t nul = id_key.find('\0');
    if (nul == std::string::npos) continue;
    auto entry = index_.find(CacheKey(std::string_view(id_key).substr(0, nul), name));
    if (entry == index_.end()) continue;  // its cache is gone: the id is free again
    entry->second.request_id = id_key.substr(nul + 1);
    request_ids_[id_key] = name;
  }
  return FromRocksStatus(ids->status(),
                         "reading the request ids of the named cache registry at " + options_.path);
}

NamedCacheRegistry::~NamedCacheRegistry() {
  if (db_ == nullptr) return;
  if (!options_.sync) (void)db_->FlushWAL(/*sync=*/true);
  for (auto* h : {caches_, ids_}) {
    if (h != nullptr) (void)db_->DestroyColumnFamilyHandle(h);
  }
  (void)db_->Close();
  delete db_;
}

Result<NamedCache> NamedCacheRegistry::ReadCache(const std::string& key) const {
  rocksdb::PinnableSlice value;
  const rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), caches_, key, &value);
  if (s.IsNotFound())
    return Status::NotFound("named cache " + EscapeForMessage(key) + " not stored");
  KVTIER_RETURN_IF_ERROR(FromRocksStatus(s, "reading named cache " + EscapeForMessage(key)));
  NamedCache c;
  if (std::optional<std::string> why = DecodeCache(value.ToStringView(), true, &c)) {
    return CorruptionStatus(key, *why);
  }
  if (CacheKey(c.tenant, c.name) != key) {
    return CorruptionStatus(key, "its value belongs to another key");
  }
  return c;
}

std::string NamedCacheRegistry::NewNameLocked() {
  static const char kHex[] = "0123456789abcdef";
  for (;;) {
    const uint64_t bits = (uint64_t{random_()} << 32) ^ uint64_t { random_() };
    std::string name(kNamedCachePrefix);
    for (size_t i = 0; i < kNameHexDigits; ++i) name.push_back(kHex[(bits >> (4 * i)) & 15]);
    if (!names_.contains(name)) return name;
  }
}

Result<NamedCache> NamedCacheRegistry::Create(const std::string& tenant, const std::string& model,
                                              std::span<const int32_t> tokens,
                                              const NamedCacheExpiry& expiry,
                                              const std::string& display_name,
                                              const std::string& request_id) {
  KVTIER_RETURN_IF_ERROR(CheckNamedCacheField("tenant", tenant, true));
  KVTIER_RETURN_IF_ERROR(CheckNamedCacheField("model", model, true));
  KVTIER_RETURN_IF_ERROR(CheckNamedCacheField("display_name", display_name, false));
  KVTIER_RETURN_IF_ERROR(CheckNamedCacheField("request_id", request_id, false));
  if (tokens.empty()) return Status::InvalidArgument("tokens is empty");
  if (tokens.size() > options_.max_tokens) {
    return Status::InvalidArgument(std::to_string(tokens.size()) + " tokens, more than the " +
                                   std::to_string(options_.max_tokens) + " of max_tokens");
  }
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0) {
      return Status::InvalidArgument("token " + std::to_string(i) + " has the negative id " +
                                     std::to_string(tokens[i]));
    }
  }

  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = options_.clock->NowMs();
  KVTIER_ASSIGN_OR_RETURN(const int64_t expire, ExpiryTime(expiry, now));
  // A retry of a Create that succeeded gets the cache it made.
  const std::string id_key = request_id.empty() ? std::string() : CacheKey(tenant, request_id);
  if (!id_key.empty()) {
    if (auto id = request_ids_.find(id_key); id != request_ids_.end()) {
      const std::string key = CacheKey(tenant, id->second);
      auto entry = index_.find(key);
      if (entry != index_.end()) {
        if (!entry->second.corruption.empty()) {
          return CorruptionStatus(key, entry->second.corruption);
        }
        if (!Expired(entry->second.meta, now)) {
          Result<NamedCache> first = ReadCache(key);
          if (!first.ok() && first.status().IsNotFound()) return NotFoundStatus(id->second);
          return first;
        }
      }
    }
  }
  // Unexpired caches count against the limit, and corrupt ones (their expiry
  // is unknown); expired ones wait for Sweep but no longer count.
  const std::string prefix = CacheKey(tenant, "");
  size_t held = 0;
  for (auto it = index_.lower_bound(prefix); it != index_.end() && it->first.starts_with(prefix);
       ++it) {
    if (!it->second.corruption.empty() || !Expired(it->second.meta, now)) ++held;
  }
  if (held >= options_.max_caches_per_tenant) {
    return Status::ResourceExhausted("tenant " + tenant + " holds " + std::to_string(held) +
                                     " named caches, the most allowed (max_caches_per_tenant)");
  }

  NamedCache cache;
  cache.name = NewNameLocked();
  cache.tenant = tenant;
  cache.model = model;
  cache.tokens.assign(tokens.begin(), tokens.end());
  cache.token_count = tokens.size();
  cache.create_time_ms = now;
  cache.expire_time_ms = expire;
  cache.ttl_ms = expiry.ttl_ms.value_or(0);
  cache.display_name = display_name;

  const std::string key = CacheKey(tenant, cache.name);
  rocksdb::WriteBatch batch;
  KVTIER_RETURN_IF_ERROR(FromRocksStatus(batch.Put(caches_, key, EncodeCache(cache)),
                                         "storing named cache " + cache.name));
  if (!id_key.empty()) {
    // Replaces a mapping to a cache that has expired or was deleted.
    KVTIER_RETURN_IF_ERROR(
        FromRocksStatus(batch.Put(ids_, id_key, cache.name), "storing named cache " + cache.name));
  }
  rocksdb::WriteOptions wo;
  wo.sync = options_.sync;
  KVTIER_RETURN_IF_ERROR(guard_->BeforeWrite(batch.GetDataSize()));
  KVTIER_RETURN_IF_ERROR(
      guard_->AfterWrite(db_->Write(wo, &batch), "storing named cache " + cache.name));
  IndexEntry entry;
  entry.meta = cache;
  entry.meta.tokens.clear();
  entry.meta.tokens.shrink_to_fit();
  if (!id_key.empty()) {
    // The expired cache the id named, if any, no longer owns it.
    if (auto old = request_ids_.find(id_key); old != request_ids_.end()) {
      if (auto e = index_.find(CacheKey(tenant, old->second)); e != index_.end()) {
        e->second.request_id.clear();
      }
    }
    entry.request_id = request_id;
    request_ids_[id_key] = cache.name;
  }
  index_.emplace(key, std::move(entry));
  names_.insert(cache.name);
  return cache;
}

Result<NamedCache> NamedCacheRegistry::Get(const std::string& tenant,
                                           const std::string& name) const {
  KVTIER_RETURN_IF_ERROR(CheckTenantAndName(tenant, name));
  Result<NamedCache> c = ReadCache(CacheKey(tenant, name));
  if (!c.ok()) return c.status().IsNotFound() ? NotFoundStatus(name) : c.status();
  if (Expired(*c, options_.clock->NowMs())) return NotFoundStatus(name);
  return c;
}

Result<std::vector<NamedCache>> NamedCacheRegistry::List(const std::string& tenant,
                                                         bool with_tokens) const {
  KVTIER_RETURN_IF_ERROR(CheckNamedCacheField("tenant", tenant, true));
  std::vector<NamedCache> out;
  std::vector<std::string> keys;  // with_tokens: what to read back
  const int64_t now = options_.clock->NowMs();
  {
    std::lock_guard<std::mutex> lock(mu_);
    const std::string prefix = CacheKey(tenant, "");
    for (auto it = index_.lower_bound(prefix); it != index_.end() && it->first.starts_with(prefix);
         ++it) {
      const IndexEntry& e = it->second;
      if (!e.corruption.empty()) return CorruptionStatus(it->first, e.corruption);
      if (Expired(e.meta, now)) continue;
      if (with_tokens) {
        keys.push_back(it->first);
      } else {
        out.push_back(e.meta);
      }
    }
  }
  // Read outside the lock: a cache deleted or expired meanwhile is left out.
  for (const std::string& key : keys) {
    Result<NamedCache> c = ReadCache(key);
    if (!c.ok()) {
      if (c.status().IsNotFound()) continue;
      return c.status();
    }
    if (!Expired(*c, now)) out.push_back(std::move(*c));
  }
  std::sort(out.begin(), out.end(), [](const NamedCache& a, const NamedCache& b) {
    return std::tie(a.create_time_ms, a.name) < std::tie(b.create_time_ms, b.name);
  });
  return out;
}

Result<int64_t> NamedCacheRegistry::UpdateTtl(const std::string& tenant, const std::string& name,
                                              const NamedCacheExpiry& expiry) {
  KVTIER_RETURN_IF_ERROR(CheckTenantAndName(tenant, name));
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = options_.clock->NowMs();
  KVTIER_ASSIGN_OR_RETURN(const int64_t expire, ExpiryTime(expiry, now));
  const std::string key = CacheKey(tenant, name);
  auto it = index_.find(key);
  if (it == index_.end()) return NotFoundStatus(name);
  if (!it->second.corruption.empty()) return CorruptionStatus(key, it->second.corruption);
  if (Expired(it->second.meta, now)) return NotFoundStatus(name);
  // The value holds the tokens too, so it is rewritten whole.
  Result<NamedCache> c = ReadCache(key);
  if (!c.ok()) return c.status().IsNotFound() ? NotFoundStatus(name) : c.status();
  c->expire_time_ms = expire;
  c->ttl_ms = expiry.ttl_ms.value_or(0);
  rocksdb::WriteOptions wo;
  wo.sync = options_.sync;
  const std::string value = EncodeCache(*c);
  KVTIER_RETURN_IF_ERROR(guard_->BeforeWrite(value.size()));
  KVTIER_RETURN_IF_ERROR(
      guard_->AfterWrite(db_->Put(wo, caches_, key, value), "updating named cache " + name));
  it->second.meta.expire_time_ms = c->expire_time_ms;
  it->second.meta.ttl_ms = c->ttl_ms;
  return c->expire_time_ms;
}

Status NamedCacheRegistry::Delete(const std::string& tenant, const std::string& name) {
  KVTIER_RETURN_IF_ERROR(CheckTenantAndName(tenant, name));
  std::lock_guard<std::mutex> lock(mu_);
  const std::string key = CacheKey(tenant, name);
  auto it = index_.find(key);
  if (it == index_.end()) return NotFoundStatus(name);
  if (it->second.corruption.empty() && Expired(it->second.meta, options_.clock->NowMs())) {
    return NotFoundStatus(name);
  }
  rocksdb::WriteBatch batch;
  KVTIER_RETURN_IF_ERROR(
      FromRocksStatus(batch.Delete(caches_, key), "deleting named cache " + name));
  std::vector<std::string> erased_ids;
  DeleteRequestIdLocked(tenant, it->second, &batch, &erased_ids);
  rocksdb::WriteOptions wo;
  wo.sync = options_.sync;
  KVTIER_RETURN_IF_ERROR(guard_->BeforeWrite(0, RocksWriteKind::kShrinks));
  KVTIER_RETURN_IF_ERROR(
      guard_->AfterWrite(db_->Write(wo, &batch), "deleting named cache " + name));
  for (const std::string& id : erased_ids) request_ids_.erase(id);
  index_.erase(it);
  names_.erase(name);
  return Status::Ok();
}

void NamedCacheRegistry::DeleteRequestIdLocked(const std::string& tenant, const IndexEntry& entry,
                                               rocksdb::WriteBatch* batch,
                                               std::vector<std::string>* erased_ids) {
  if (entry.request_id.empty()) return;
  const std::string id_key = CacheKey(tenant, entry.request_id);
  auto id = request_ids_.find(id_key);
  if (id == request_ids_.end() || id->second != entry.meta.name) return;
  (void)batch->Delete(ids_, id_key);
  erased_ids->push_back(id_key);
}

Result<size_t> NamedCacheRegistry::Sweep() {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = options_.clock->NowMs();
  rocksdb::WriteBatch batch;
  std::vector<std::map<std::string, IndexEntry>::iterator> expired;
  std::vector<std::string> erased_ids;
  for (auto it = index_.begin(); it != index_.end(); ++it) {
    if (it->second.corruption.empty() && Expired(it->second.meta, now)) {
      KVTIER_RETURN_IF_ERROR(
          FromRocksStatus(batch.Delete(caches_, it->first), "sweeping named caches"));
      DeleteRequestIdLocked(it->second.meta.tenant, it->second, &batch, &erased_ids);
      expired.push_back(it);
    }
  }
  if (expired.empty()) return size_t{0};
  rocksdb::WriteOptions wo;
  wo.sync = options_.sync;
  KVTIER_RETURN_IF_ERROR(guard_->BeforeWrite(0, RocksWriteKind::kShrinks));
  KVTIER_RETURN_IF_ERROR(guard_->AfterWrite(db_->Write(wo, &batch), "sweeping named caches"));
  for (const std::string& id : erased_ids) request_ids_.erase(id);
  for (auto it : expired) {
    names_.erase(it->second.meta.name);
    index_.erase(it);
  }
  return expired.size();
}

}  // namespace kvtier
