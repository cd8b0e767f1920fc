#include "context/ledger.h"

#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>

#include <cmath>
#include <cstring>
#include <optional>
#include <set>
#include <string_view>

#include "context/record_codec.h"

namespace kvtier {
namespace {

const char kRecordsFamily[] = "records";
const char kIdsFamily[] = "ids";

// Record values, format version 1. Integers are fixed-width little-endian,
// strings a u16 length then the bytes, doubles their IEEE-754 bits as a u64:
//   u8  version (1)          u8  kind
//   str request_id           str tenant            str model
//   i64 time_ms
//   u64 input_tokens, cache_creation_5m, cache_creation_1h,
//       cache_read_input_tokens, output_tokens
//   i64 cost.input, write_5m, write_1h, read, output, without_cache
//   str cache_name           u64 storage_tokens
//   f64 storage_hours        i64 storage_cost
//   u64 XXH3-64 of every byte before it
// A reader refuses any other version, a short or long value, or a checksum
// mismatch; a new field means a new version, and readers keep decoding the
// old ones.
constexpr uint8_t kFormatVersion = 1;

std::string EncodeRecord(const UsageRecord& r) {
  RecordWriter e;
  e.PutU8(kFormatVersion);
  e.PutU8(static_cast<uint8_t>(r.kind));
  e.PutString(r.request_id);
  e.PutString(r.tenant);
  e.PutString(r.model);
  e.PutI64(r.time_ms);
  e.PutU64(r.usage.input_tokens);
  e.PutU64(r.usage.cache_creation_5m);
  e.PutU64(r.usage.cache_creation_1h);
  e.PutU64(r.usage.cache_read_input_tokens);
  e.PutU64(r.usage.output_tokens);
  e.PutI64(r.cost.input);
  e.PutI64(r.cost.write_5m);
  e.PutI64(r.cost.write_1h);
  e.PutI64(r.cost.read);
  e.PutI64(r.cost.output);
  e.PutI64(r.cost.without_cache);
  e.PutString(r.cache_name);
  e.PutU64(r.storage_tokens);
  e.PutF64(r.storage_hours);
  e.PutI64(r.storage_cost);
  return std::move(e).Finish();
}

// Why `v` is not a record, or nullopt and *out filled.
std::optional<std::string> DecodeRecord(std::string_view v, UsageRecord* out) {
  std::string_view body;
  if (std::optional<std::string> why = VerifyRecordChecksum(v, &body)) return why;
  RecordReader d(body);
  const uint8_t version = d.ReadU8();
  if (version != kFormatVersion) return "unknown format version " + std::to_string(version);
  UsageRecord r;
  const uint8_t kind = d.ReadU8();
  if (kind > static_cast<uint8_t>(RecordKind::kStorage)) {
    return "unknown record kind " + std::to_string(kind);
  }
  r.kind = static_cast<RecordKind>(kind);
  r.request_id = d.ReadString();
  r.tenant = d.ReadString();
  r.model = d.ReadString();
  r.time_ms = d.ReadI64();
  r.usage.input_tokens = d.ReadU64();
  r.usage.cache_creation_5m = d.ReadU64();
  r.usage.cache_creation_1h = d.ReadU64();
  r.usage.cache_read_input_tokens = d.ReadU64();
  r.usage.output_tokens = d.ReadU64();
  r.cost.input = d.ReadI64();
  r.cost.write_5m = d.ReadI64();
  r.cost.write_1h = d.ReadI64();
  r.cost.read = d.ReadI64();
  r.cost.output = d.ReadI64();
  r.cost.without_cache = d.ReadI64();
  r.cache_name = d.ReadString();
  r.storage_tokens = d.ReadU64();
  r.storage_hours = d.ReadF64();
  r.storage_cost = d.ReadI64();
  if (!d.ok()) return "value is truncated";
  if (d.remaining_bytes() != 0) return "value has trailing bytes";
  *out = std::move(r);
  return std::nullopt;
}

void AppendTime(std::string* key, int64_t time_ms) {
  // Sign bit flipped so that unsigned byte order is numeric order.
  const uint64_t t = static_cast<uint64_t>(time_ms) ^ (uint64_t{1} << 63);
  for (int i = 0; i < 8; ++i) key->push_back(static_cast<char>(t >> (56 - 8 * i)));
}

std::string RecordKey(const std::string& tenant, int64_t time_ms, const std::string& request_id) {
  std::string k = tenant;
  k.push_back('\0');
  AppendTime(&k, time_ms);
  k += request_id;
  return k;
}

std::string RangeKey(const std::string& tenant, int64_t time_ms) {
  std::string k = tenant;
  k.push_back('\0');
  AppendTime(&k, time_ms);
  return k;
}

std::string IdKey(const std::string& tenant, const std::string& request_id) {
  std::string k = tenant;
  k.push_back('\0');
  k += request_id;
  return k;
}

Status CheckLedgerField(const char* name, const std::string& value, bool required) {
  return CheckPrintableField(name, value, kMaxLedgerFieldBytes, required);
}

}  // namespace

const char* RecordKindName(RecordKind kind) {
  return kind == RecordKind::kStorage ? "storage" : "request";
}

Status ValidateUsageRecord(const UsageRecord& r) {
  KVTIER_RETURN_IF_ERROR(CheckLedgerField("tenant", r.tenant, true));
  KVTIER_RETURN_IF_ERROR(CheckLedgerField("request_id", r.request_id, true));
  KVTIER_RETURN_IF_ERROR(CheckLedgerField("model", r.model, true));
  KVTIER_RETURN_IF_ERROR(
      CheckLedgerField("cache_name", r.cache_name, r.kind == RecordKind::kStorage));
  const bool has_usage = r.usage != Usage{} || r.cost.input != 0 || r.cost.write_5m != 0 ||
                         r.cost.write_1h != 0 || r.cost.read != 0 || r.cost.output != 0 ||
                         r.cost.without_cache != 0;
  const bool has_storage =
      !r.cache_name.empty() || r.storage_tokens != 0 || r.storage_hours != 0 || r.storage_cost != 0;
  switch (r.kind) {
    case RecordKind::kRequest:
      if (has_storage) {
        return Status::InvalidArgument("request record " + r.request_id +
                                       " carries storage fields");
      }
      break;
    case RecordKind::kStorage:
      if (has_usage) {
        return Status::InvalidArgument("storage record " + r.request_id +
                                       " carries request usage or cost");
      }
      break;
    default:
      return Status::InvalidArgument("unknown record kind " +
                                     std::to_string(static_cast<int>(r.kind)));
  }
  if (!std::isfinite(r.storage_hours) || r.storage_hours < 0) {
    return Status::InvalidArgument("storage_hours must be finite and >= 0");
  }
  return Status::Ok();
}

Result<std::unique_ptr<Ledger>> Ledger::Open(const LedgerOptions& options) {
  if (options.path.empty()) return Status::InvalidArgument("ledger path is empty");
  if (options.clock == nullptr) return Status::InvalidArgument("ledger clock is null");
  std::unique_ptr<Ledger> ledger(new Ledger(options));
  KVTIER_RETURN_IF_ERROR(ledger->OpenDb());
  return ledger;
}

Status Ledger::OpenDb() {
  // The idempotence index is read by point lookups only.
  rocksdb::ColumnFamilyOptions ids;
  rocksdb::BlockBasedTableOptions table;
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  ids.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  guard_ = std::make_unique<RocksWriteGuard>(
      RocksWriteGuardOptions{.store = "ledger",
                             .path = options_.path,
                             .min_free_bytes = options_.min_free_bytes,
                             .essential = true,
                             .clock = options_.clock});
  Status s =
      OpenGuardedRocksStore(options_.path, "ledger",
                            {{kRecordsFamily, rocksdb::ColumnFamilyOptions()}, {kIdsFamily, ids}},
                            *guard_, &db_, &handles);
  if (s.ok()) {
    records_ = handles[0];
    ids_ = handles[1];
    // Every block once, so that damage is found now, not by a later append
    // or billing report.
    s = FromRocksStatus(db_->VerifyChecksum(), "verifying the ledger at " + options_.path);
  }
  if (s.IsCorruption()) {
    return Status::Corruption(
        s.message() +
        ". The billing ledger is damaged and kvtierd will not start on it: restore the "
        "directory " +
        options_.path +
        " from a backup, or move it aside to start a new, "
        "empty ledger (the records in it are then not billed)");
  }
  return s;
}

Ledger::~Ledger() {
  if (db_ == nullptr) return;
  if (!options_.sync) (void)db_->FlushWAL(/*sync=*/true);
  for (auto* h : {records_, ids_}) {
    if (h != nullptr) (void)db_->DestroyColumnFamilyHandle(h);
  }
  (void)db_->Close();
  delete db_;
}

Status Ledger::Append(const UsageRecord& record, bool* duplicate) {
  std::vector<bool> dup;
  KVTIER_RETURN_IF_ERROR(AppendBatch(std::span<const UsageRecord>(&record, 1), &dup));
  if (duplicate != nullptr) *duplicate = dup[0];
  return Status::Ok();
}

Status Ledger::AppendBatch(std::span<const UsageRecord> records, std::vector<bool>* duplicates) {
  for (const UsageRecord& r : records) KVTIER_RETURN_IF_ERROR(ValidateUsageRecord(r));
  std::vector<bool> dup(records.size(), false);
  rocksdb::WriteBatch batch;
  {
    std::lock_guard<std::mutex> lock(append_mu_);
    std::set<std::string> in_batch;
    for (size_t i = 0; i < records.size(); ++i) {
      const UsageRecord& r = records[i];
      const std::string id_key = IdKey(r.tenant, r.request_id);
      if (!in_batch.insert(id_key).second) {
        dup[i] = true;
        continue;
      }
      std::string existing;
      rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), ids_, id_key, &existing);
      if (s.ok()) {
        dup[i] = true;
        continue;
      }
      if (!s.IsNotFound()) {
        return FromRocksStatus(s, "looking up request " + r.request_id + " of tenant " + r.tenant);
      }
      const std::string record_key = RecordKey(r.tenant, r.time_ms, r.request_id);
      batch.Put(records_, record_key, EncodeRecord(r));
      batch.Put(ids_, id_key, record_key);
    }
    if (batch.Count() > 0) {
      rocksdb::WriteOptions wo;
      wo.sync = options_.sync;
      KVTIER_RETURN_IF_ERROR(guard_->BeforeWrite(batch.GetDataSize()));
      KVTIER_RETURN_IF_ERROR(guard_->AfterWrite(db_->Write(wo, &batch), "appending to the ledger"));
    }
  }
  if (duplicates != nullptr) *duplicates = std::move(dup);
  return Status::Ok();
}

Result<std::vector<UsageRecord>> Ledger::Scan(const std::string& tenant, int64_t from_ms,
                                              int64_t to_ms) const {
  // A tenant with a '\0' would name a range inside another tenant's keys.
  KVTIER_RETURN_IF_ERROR(CheckLedgerField("tenant", tenant, true));
  std::vector<UsageRecord> out;
  if (from_ms >= to_ms) return out;
  const std::string start = RangeKey(tenant, from_ms);
  const std::string end = RangeKey(tenant, to_ms);
  rocksdb::Slice upper(end);
  rocksdb::ReadOptions ro;
  ro.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, records_));
  for (it->Seek(start); it->Valid(); it->Next()) {
    UsageRecord r;
    const std::string_view key = it->key().ToStringView();
    if (std::optional<std::string> why = DecodeRecord(it->value().ToStringView(), &r)) {
      return Status::Corruption("ledger record " + EscapeForMessage(key) + ": " + *why);
    }
    if (RecordKey(r.tenant, r.time_ms, r.request_id) != key) {
      return Status::Corruption("ledger record " + EscapeForMessage(key) +
                                ": its value belongs to another key");
    }
    out.push_back(std::move(r));
  }
  KVTIER_RETURN_IF_ERROR(FromRocksStatus(it->status(), "scanning the ledger"));
  return out;
}

Status Ledger::Flush() {
  return guard_->AfterWrite(db_->FlushWAL(/*sync=*/true), "syncing the ledger");
}

}  // namespace kvtier
