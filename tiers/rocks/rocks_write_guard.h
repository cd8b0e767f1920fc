// Keeps one RocksDB database of kvtier (the cold tier, the ledger, the
// named-cache registry) alive and writable through a full disk.
//
// A RocksWriteGuard
//  - gives the database an info log that cannot abort the process
//    (NewRocksInfoLog);
//  - refuses a write before RocksDB sees it while the file system's free
//    space is below a floor (kUnavailable "device full: ..."), so that
//    flushes, compactions and the other stores keep some room;
//  - turns RocksDB's ENOSPC (Status::NoSpace, also the stopped database's
//    background error) into the same kUnavailable "device full: ..." and
//    counts it; every other write failure is counted as a write error;
//  - once free space is back above the floor, calls DB::Resume() on the next
//    write, so writes work again without a reopen. RocksDB's own automatic
//    recovery is switched off by the guard's listener: its SstFileManager
//    polls only every 5 s, and while it owns the recovery a manual Resume()
//    answers Busy (RocksDB 7.8 db/error_handler.cc; a try that fails with
//    another error can leave it "in progress" for good).
// Reads never pass through the guard: they keep working while writes fail.
//
// Device full is kUnavailable, not kResourceExhausted: it passes by itself
// (writes resume), and it is not a full tier that evicting blocks would cure
// (the CacheManager evicts on kResourceExhausted; RocksDB deletes free no
// space until a compaction, and on a full disk even they fail).
//
// Free space is read with statvfs at most once per second (of options.clock),
// or sooner once the bytes written since the last reading could have crossed
// the floor; and on every write while below the floor or after a failure.
//
// Use: construct, Configure(&db_options) before DB::Open, Attach(db) after it,
// then BeforeWrite/AfterWrite around each write. Thread-safe after Attach.
// The guard must outlive the database (its listener points to it).
#pragma once

#include <rocksdb/db.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/status.h"

namespace kvtier {

// The floor chosen for a file system of `total_bytes` when none is set:
// 1/16 of it, at most 1 GiB.
uint64_t DefaultMinFreeBytes(uint64_t total_bytes);

struct RocksWriteGuardOptions {
  std::string store;  // names the store in messages and logs ("rocks tier", "ledger")
  std::string path;   // the database directory; free space is read there
  // Writes that add data are refused below this many free bytes.
  // kAutoMinFreeBytes: DefaultMinFreeBytes of the file system, a quarter of
  // it for an `essential` store.
  uint64_t min_free_bytes = UINT64_MAX;
  // A store that is not a cache (the ledger, the registry): its automatic
  // floor is lower, so that on a shared disk the cold tier stops first.
  bool essential = false;
  Clock* clock = SystemClock();  // paces the free-space readings; not owned
};
inline constexpr uint64_t kAutoMinFreeBytes = UINT64_MAX;

// Counters of one store, for metrics. Monotonic.
struct RocksStoreStats {
  uint64_t no_space_errors = 0;  // writes refused or failed for want of disk space
  uint64_t write_errors = 0;     // writes failed for any other reason
  uint64_t recoveries = 0;       // times writes resumed after a device-full stop
};

// What a write does to the space the store takes.
enum class RocksWriteKind {
  kGrows,   // adds data: refused below the floor
  kShrinks  // a delete: allowed below the floor (it is how space comes back)
};

class RocksWriteGuard {
 public:
  explicit RocksWriteGuard(RocksWriteGuardOptions options);
  ~RocksWriteGuard();
  RocksWriteGuard(const RocksWriteGuard&) = delete;
  RocksWriteGuard& operator=(const RocksWriteGuard&) = delete;

  // Sets the info log (and its level) and the guard's listener in `options`.
  void Configure(rocksdb::DBOptions* options);
  // The database written through the guard (not owned); once, after Open.
  void Attach(rocksdb::DB* db);

  // Before a write of about `bytes`: resumes the database if a device-full
  // error stopped it and space is back; kUnavailable "device full: ..."
  // (counted) while free space is below the floor (kGrows) or the database
  // cannot resume yet.
  Status BeforeWrite(uint64_t bytes, RocksWriteKind kind = RocksWriteKind::kGrows);

  // Maps the result of a write, `what` naming it ("appending to the ledger"):
  // Ok; kUnavailable "device full: <what>: ..." for ENOSPC (counted;
  // the next write re-reads free space and resumes the database);
  // kCorruption or kIOError otherwise (counted as a write error).
  Status AfterWrite(const rocksdb::Status& s, const std::string& what);

  // Free bytes above the floor at the last reading (0 below it).
  uint64_t HeadroomBytes();
  uint64_t min_free_bytes() const { return floor_bytes_; }
  RocksStoreStats Stats() const;

 private:
  class Listener;
  // Free bytes now, from statvfs or the last reading (see the file comment).
  uint64_t FreeBytes(uint64_t bytes, bool force);
  Status DeviceFull(const std::string& why);

  const RocksWriteGuardOptions options_;
  uint64_t floor_bytes_ = 0;
  std::shared_ptr<Listener> listener_;
  rocksdb::DB* db_ = nullptr;

  std::mutex mu_;                          // guards the reading below and serialises Resume()
  uint64_t last_free_bytes_ = UINT64_MAX;  // GUARDED_BY(mu_); UINT64_MAX: unknown
  uint64_t written_since_reading_ = 0;     // GUARDED_BY(mu_); bytes
  int64_t last_reading_ms_ = 0;            // GUARDED_BY(mu_); by options.clock

  // Set by a device-full failure or a background error; cleared by Resume().
  std::atomic<bool> needs_resume_{false};
  std::atomic<uint64_t> no_space_errors_{0};
  std::atomic<uint64_t> write_errors_{0};
  std::atomic<uint64_t> recoveries_{0};
};

// Opens (creating the directory, database and missing families) the RocksDB
// database of a store of cache/ at `path` with the named `families` (the
// default one is opened too and its handle released), through `guard`
// (Configure, then Attach). `store` names it in messages. On success *db is
// the caller's to Close and delete, (*handles)[i] the handle of families[i].
// A database RocksDB finds corrupt answers kCorruption naming the path.
Status OpenGuardedRocksStore(const std::string& path, const std::string& store,
                             const std::vector<rocksdb::ColumnFamilyDescriptor>& families,
                             RocksWriteGuard& guard, rocksdb::DB** db,
                             std::vector<rocksdb::ColumnFamilyHandle*>* handles);

}  // namespace kvtier
