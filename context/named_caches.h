// The registry of named context caches (DESIGN §6, "Named caches", like
// Gemini's explicit caching): a tenant creates a cache of a model and a token
// prefix with a TTL or an expiry time and gets back a name
// "cachedContents/<16 lowercase hex digits>"; it may then get, list, update
// the lifetime of and delete its caches until they expire.
//
// A named cache is a promise: once Create returns, the cache is durable and
// stays readable until it expires or is deleted, across restarts of the
// daemon. This registry keeps that promise for the cache's description and
// tokens; placing its KV blocks in a durable tier is the CacheManager's job.
//
// Tenants are isolated: another tenant's cache answers kNotFound with the
// same message as a name that never existed, so a name reveals nothing.
// An expired cache is never returned, whether or not Sweep has removed it yet.
//
// A NamedCacheRegistry owns a RocksDB database of its own (a directory nobody
// else opens) with two column families:
//   "caches"  tenant '\0' name        ->  the encoded cache (versioned, checksummed)
//   "ids"     tenant '\0' request_id  ->  the name of the cache that request created
// (a cache and its request id are written, and deleted, in one WriteBatch)
// and keeps in memory a small index of every cache (all but its tokens) and
// of the request ids, read once by Open, so that List without tokens, the
// per-tenant limit, a retried Create and Sweep never read token arrays back
// from disk.
//
// A full disk (docs/operations.md, "Disk full and corruption"): Create,
// UpdateTtl, Delete and Sweep fail with kUnavailable "device full: ..."
// and change nothing while free space is below options.min_free_bytes or
// RocksDB reports ENOSPC; Get and List keep working; changes work again by
// themselves once space is back. RocksDB's info log cannot abort the process.
//
// A damaged database (a bad block, found by Open's scan of every value) is
// refused: Open answers kCorruption naming the file and what the operator can
// do. The registry holds promises (a created cache stays readable until it
// expires); starting empty would break them silently, so only the operator
// may choose to (a single value that fails to decode does not fail Open; it
// is reported by whatever reads it, as before).
//
// Thread-safe: changes (Create, UpdateTtl, Delete, Sweep) are serialised by
// one mutex, under which the database and the index change together; Get and
// List with tokens read the database outside it.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "tiers/rocks/rocks_write_guard.h"

namespace rocksdb {
class DB;
class ColumnFamilyHandle;
class WriteBatch;
}  // namespace rocksdb

namespace kvtier {

// The most bytes of tenant, model and display_name.
inline constexpr size_t kMaxNamedCacheFieldBytes = 256;
// A TTL is at least a minute and at most 7 days; an explicit expiry time is in
// the future and at most 7 days ahead.
inline constexpr int64_t kMinNamedCacheTtlMs = 60 * 1000;
inline constexpr int64_t kMaxNamedCacheTtlMs = 7 * 24 * 3600 * int64_t{1000};
// Every name is this prefix then 16 lowercase hex digits.
inline constexpr char kNamedCachePrefix[] = "cachedContents/";

struct NamedCache {
  std::string name;    // "cachedContents/0123456789abcdef"
  std::string tenant;  // the owner
  std::string model;
  std::vector<int32_t> tokens;  // empty when read without tokens
  uint64_t token_count = 0;     // the number of tokens, also when read without them
  int64_t create_time_ms = 0;   // Unix epoch, from the registry's clock
  int64_t expire_time_ms = 0;   // Unix epoch; unreadable from then on
  int64_t ttl_ms = 0;           // the TTL last set; 0 when an explicit expire time was
  std::string display_name;     // free text, may be empty
};

// When a cache expires: exactly one of a TTL (counted from the call) or an
// absolute expiry time. Build one with Ttl() or At().
struct NamedCacheExpiry {
  std::optional<int64_t> ttl_ms;          // [kMinNamedCacheTtlMs, kMaxNamedCacheTtlMs]
  std::optional<int64_t> expire_time_ms;  // Unix epoch, in (now, now + kMaxNamedCacheTtlMs]
  static NamedCacheExpiry Ttl(int64_t ms) { return {ms, std::nullopt}; }
  static NamedCacheExpiry At(int64_t epoch_ms) { return {std::nullopt, epoch_ms}; }
};

struct NamedCacheOptions {
  std::string path;  // the registry's own RocksDB directory; created if missing
  // Where expiry is read; must outlive the registry. Tests pass a ManualClock.
  Clock* clock = SystemClock();
  // true: every change is durable (its WAL write fsync'd) before it returns,
  // so a cache survives a crash of the machine once Create returns. false: it
  // survives a crash of the process only, until the registry is destroyed.
  bool sync = true;
  // The most unexpired caches one tenant may hold; Create answers
  // kResourceExhausted beyond it. At least 1.
  size_t max_caches_per_tenant = 1000;
  // The most tokens in one cache (4 bytes each on disk). In [1, 1 << 26].
  size_t max_tokens = size_t{1} << 20;
  // Changes are refused below this many free bytes on the file system;
  // kAutoMinFreeBytes: a quarter of the cold tier's automatic floor.
  uint64_t min_free_bytes = kAutoMinFreeBytes;
};

class NamedCacheRegistry {
 public:
  // Opens (or creates) the registry at options.path and reads its index: a
  // scan of every stored cache, tokens included, so its cost grows with what
  // is stored. A value that fails to decode does not fail Open; it is
  // reported as kCorruption by whatever reads it. kInvalidArgument for bad
  // options, kIOError when RocksDB cannot open the directory, kCorruption
  // (naming the file and what to do) when RocksDB finds a damaged block.
  static Result<std::unique_ptr<NamedCacheRegistry>> Open(const NamedCacheOptions& options);

  // Closes the database; with options.sync false, makes every change durable
  // first.
  ~NamedCacheRegistry();
  NamedCacheRegistry(const NamedCacheRegistry&) = delete;
  NamedCacheRegistry& operator=(const NamedCacheRegistry&) = delete;

  // Creates a cache of `tokens` for `model`, owned by `tenant`, and returns it
  // (tokens included) once it is stored. kInvalidArgument naming the problem
  // when tenant or model is empty, longer than kMaxNamedCacheFieldBytes or not
  // printable ASCII (display_name likewise, but may be empty); when tokens is
  // empty, longer than options.max_tokens or holds a negative id; or when
  // `expiry` is not exactly one valid TTL or expiry time.
  // kResourceExhausted when the tenant already holds
  // options.max_caches_per_tenant unexpired caches; kUnavailable "device
  // full: ..." when the disk is full. Nothing is stored on error.
  //
  // A non-empty `request_id` (printable ASCII, at most
  // kMaxNamedCacheFieldBytes) makes Create idempotent: while the cache a
  // call with the same (tenant, request_id) created exists and has not
  // expired, a retry stores nothing and returns that cache (tokens included),
  // whatever else it carries, as the first call created it. Once that cache
  // is deleted or expires, the request id may create a new one.
  Result<NamedCache> Create(const std::string& tenant, const std::string& model,
                            std::span<const int32_t> tokens, const NamedCacheExpiry& expiry,
                            const std::string& display_name = "",
                            const std::string& request_id = "");

  // The tenant's cache `name`, tokens included. kNotFound when there is no
  // such unexpired cache of this tenant; kInvalidArgument for a tenant Create
  // would refuse or a name that is not of Create's form; kCorruption naming
  // the key when its stored value fails to decode.
  Result<NamedCache> Get(const std::string& tenant, const std::string& name) const;

  // The tenant's unexpired caches, oldest first (by create time, then name).
  // Tokens are read only when `with_tokens`; token_count is always set.
  // kCorruption naming the key when one of them fails to decode (without
  // tokens: failed when Open read it): none is ever skipped silently.
  // kInvalidArgument for a tenant Create would refuse.
  Result<std::vector<NamedCache>> List(const std::string& tenant, bool with_tokens = false) const;

  // Gives the cache a new lifetime (a TTL counts from now) and returns its new
  // expiry time. Errors as Get, and as Create for `expiry`; nothing changes on
  // error. A cache may be shortened as well as extended.
  Result<int64_t> UpdateTtl(const std::string& tenant, const std::string& name,
                            const NamedCacheExpiry& expiry);

  // Deletes the cache. Errors as Get, except that a cache whose stored value
  // is corrupt is deleted (it is how an operator gets rid of one).
  Status Delete(const std::string& tenant, const std::string& name);

  // Deletes every cache expired by now from the database and returns how
  // many; the daemon calls it periodically. Corrupt entries are kept (their
  // expiry is unknown). Get and List ignore expired caches with or without it.
  Result<size_t> Sweep();

  // Device-full and write-error counters, for metrics.
  RocksStoreStats Stats() const { return guard_->Stats(); }

 private:
  // What the index knows of one stored cache: all of it but the tokens, or
  // why its value failed to decode.
  struct IndexEntry {
    NamedCache meta;         // tokens empty
    std::string corruption;  // non-empty: the value is unreadable and meta is unset
    std::string request_id;  // the Create request that made it; may be empty
  };

  explicit NamedCacheRegistry(const NamedCacheOptions& options);
  Status OpenDb();
  Status LoadIndex();  // refuses a damaged database (see the header)
  Status ReadIndex();  // LoadIndex without the refusal message
  // Reads and decodes the value stored under `key`; kNotFound when absent.
  Result<NamedCache> ReadCache(const std::string& key) const;
  std::string NewNameLocked();
  // Adds to `batch` the deletion of the request id that created the cache
  // `entry` (of `tenant`), if it still points to that cache. Requires mu_.
  void DeleteRequestIdLocked(const std::string& tenant, const IndexEntry& entry,
                             rocksdb::WriteBatch* batch, std::vector<std::string>* erased_ids);

  const NamedCacheOptions options_;
  std::unique_ptr<RocksWriteGuard> guard_;  // outlives db_ (closed in the destructor)
  rocksdb::DB* db_ = nullptr;
  rocksdb::ColumnFamilyHandle* caches_ = nullptr;
  rocksdb::ColumnFamilyHandle* ids_ = nullptr;

  mutable std::mutex mu_;
  std::map<std::string, IndexEntry> index_;  // GUARDED_BY(mu_); by tenant '\0' name
  std::set<std::string> names_;              // GUARDED_BY(mu_); every stored name
  // GUARDED_BY(mu_); tenant '\0' request_id -> cache name, as in "ids".
  std::map<std::string, std::string> request_ids_;
  std::random_device random_;  // GUARDED_BY(mu_); draws names
};

}  // namespace kvtier
