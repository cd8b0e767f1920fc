// The billing ledger (DESIGN §7): a durable, append-only log of usage records,
// one per finished request and one per storage charge of a named cache.
//
// A Ledger owns a RocksDB database of its own (a directory nobody else opens)
// with two column families:
//   "records"  tenant '\0' time_ms (8 bytes, big-endian, sign bit flipped)
//              request_id  ->  the encoded record
//   "ids"      tenant '\0' request_id  ->  the key of its record in "records"
// so that a tenant's time range is one prefix scan and a retried request id is
// found with one point lookup. Both are written in one WriteBatch.
//
// Appends are idempotent on (tenant, request_id): the first record wins.
//
// Thread-safe: appends are serialised by one mutex (the duplicate check and
// the write happen under it); scans run concurrently with them and see each
// append whole or not at all.
//
// A full disk (docs/operations.md, "Disk full and corruption"): an append is
// refused with kUnavailable "device full: ..." (nothing recorded, it may
// be retried) while free space is below options.min_free_bytes or RocksDB
// reports ENOSPC; scans keep working; appends work again by themselves once
// space is back. RocksDB's info log cannot abort the process.
//
// A damaged ledger is not repaired or dropped: Open verifies every block's
// checksum and refuses a corrupt ledger with kCorruption naming the file and
// what the operator can do. A billing ledger that silently lost records would
// under-bill, and one that started empty would lose the history billing
// reports read; only the operator can choose between restoring a backup and
// starting a new ledger.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "context/pricing.h"
#include "context/usage.h"
#include "tiers/rocks/rocks_write_guard.h"

namespace rocksdb {
class DB;
class ColumnFamilyHandle;
}  // namespace rocksdb

namespace kvtier {

enum class RecordKind : uint8_t {
  kRequest = 0,  // a finished request: usage and cost are set
  kStorage = 1,  // a named cache's storage charge: the storage fields are set
};

const char* RecordKindName(RecordKind kind);  // "request" or "storage"

// The most bytes of each string field (request_id, tenant, model, cache_name).
inline constexpr size_t kMaxLedgerFieldBytes = 256;

struct UsageRecord {
  // Unique per tenant. A storage charge needs one too, e.g.
  // "storage/<cache name>/<period start ms>", so that it is billed once.
  std::string request_id;
  std::string tenant;
  std::string model;
  int64_t time_ms = 0;  // Unix epoch, UTC; when the request finished
  RecordKind kind = RecordKind::kRequest;
  // kRequest only (zero for kStorage).
  Usage usage;
  PricedUsage cost;
  // kStorage only (empty / zero for kRequest).
  std::string cache_name;
  uint64_t storage_tokens = 0;  // tokens held
  double storage_hours = 0;     // for how long, hours
  NanoUsd storage_cost = 0;     // StorageCharge(price, storage_tokens, storage_hours)
};

// Names the problem when `record` may not be appended: tenant, request_id and
// model non-empty, every string printable ASCII (0x20-0x7e) and at most
// kMaxLedgerFieldBytes, storage fields set only on storage records (with a
// cache name) and usage only on request records, storage_hours finite >= 0.
Status ValidateUsageRecord(const UsageRecord& record);

struct LedgerOptions {
  std::string path;  // the ledger's own RocksDB directory; created if missing
  // true: every Append is durable (its WAL write fsync'd) before it returns.
  // That costs one fsync per Append (appends are serialised, so they are not
  // grouped): ~0.05-0.5 ms on NVMe with power-loss protection, several ms on
  // consumer SSDs, which bounds one ledger at a few thousand appends per
  // second; AppendBatch amortises it. false: an append survives a crash of the
  // process (the WAL is written to the OS before Append returns) but not of
  // the machine until Flush() or the Ledger is destroyed.
  bool sync = true;
  // Appends are refused below this many free bytes on the file system;
  // kAutoMinFreeBytes: a quarter of the cold tier's automatic floor.
  uint64_t min_free_bytes = kAutoMinFreeBytes;
  Clock* clock = SystemClock();  // paces free-space readings; must outlive the ledger
};

class Ledger {
 public:
  // kCorruption naming the damaged file and what to do when RocksDB finds a
  // bad block (Open reads every block once to check); kIOError when the
  // directory cannot be opened.
  static Result<std::unique_ptr<Ledger>> Open(const LedgerOptions& options);

  // Makes everything appended durable and closes the database.
  ~Ledger();
  Ledger(const Ledger&) = delete;
  Ledger& operator=(const Ledger&) = delete;

  // Records `record` unless its (tenant, request_id) is already recorded; then
  // nothing is stored, the result is Ok and *duplicate (when given) is true.
  // The first record wins even if a retry carries different numbers: a
  // request is billed once, as it was first reported. kInvalidArgument (and
  // nothing written) when ValidateUsageRecord refuses it; kUnavailable
  // "device full: ..." when the disk is full, kIOError when the write fails
  // otherwise (nothing recorded either way; the append may be retried).
  Status Append(const UsageRecord& record, bool* duplicate = nullptr);

  // Appends several records with one write (one fsync): all of them, less
  // duplicates (of earlier records or of each other; the earliest wins), or
  // none. (*duplicates)[i] says whether records[i] was a duplicate. Any
  // invalid record refuses the whole batch.
  Status AppendBatch(std::span<const UsageRecord> records, std::vector<bool>* duplicates = nullptr);

  // The records of `tenant` with from_ms <= time_ms < to_ms, in time order
  // (then by request id). kCorruption naming the key when a stored record
  // fails to decode: no record is ever skipped silently. kInvalidArgument
  // for a tenant that Append would refuse (empty, too long, not printable).
  Result<std::vector<UsageRecord>> Scan(const std::string& tenant, int64_t from_ms,
                                        int64_t to_ms) const;

  // Makes every append so far durable (fsyncs the WAL). A no-op cost when
  // options.sync is set.
  Status Flush();

  // Device-full and write-error counters, for metrics.
  RocksStoreStats Stats() const { return guard_->Stats(); }

 private:
  explicit Ledger(const LedgerOptions& options) : options_(options) {}
  Status OpenDb();

  const LedgerOptions options_;
  std::unique_ptr<RocksWriteGuard> guard_;  // outlives db_ (closed in ~Ledger)
  rocksdb::DB* db_ = nullptr;
  rocksdb::ColumnFamilyHandle* records_ = nullptr;
  rocksdb::ColumnFamilyHandle* ids_ = nullptr;
  // Serialises appends: no two can pass the duplicate check for the same id.
  std::mutex append_mu_;
};

}  // namespace kvtier
