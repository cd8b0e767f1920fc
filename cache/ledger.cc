#include "cache/ledger.h"

#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <optional>
#include <set>
#include <string_view>

#include "common/checksum.h"

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

class Encoder {
 public:
  void U8(uint8_t v) { s_.push_back(static_cast<char>(v)); }
  void U64(uint64_t v) {
    for (int i = 0; i < 8; ++i) s_.push_back(static_cast<char>(v >> (8 * i)));
  }
  void I64(int64_t v) { U64(static_cast<uint64_t>(v)); }
  void F64(double v) { U64(std::bit_cast<uint64_t>(v)); }
  void Str(std::string_view v) {  // callers bound v to kMaxLedgerFieldBytes
    s_.push_back(static_cast<char>(v.size() & 0xff));
    s_.push_back(static_cast<char>(v.size() >> 8));
    s_.append(v);
  }
  std::string Finish() && {
    U64(Checksum64(std::as_bytes(std::span<const char>(s_.data(), s_.size()))));
    return std::move(s_);
  }

 private:
  std::string s_;
};

// Reads fields off a value; once a read runs past the end, every later read
// yields zero and ok() is false.
class Decoder {
 public:
  explicit Decoder(std::string_view v) : v_(v) {}
  uint8_t U8() {
    if (!Need(1)) return 0;
    return static_cast<uint8_t>(v_[pos_++]);
  }
  uint64_t U64() {
    if (!Need(8)) return 0;
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= uint64_t{static_cast<uint8_t>(v_[pos_ + i])} << (8 * i);
    pos_ += 8;
    return v;
  }
  int64_t I64() { return static_cast<int64_t>(U64()); }
  double F64() { return std::bit_cast<double>(U64()); }
  std::string Str() {
    if (!Need(2)) return {};
    const size_t n = static_cast<uint8_t>(v_[pos_]) | size_t{static_cast<uint8_t>(v_[pos_ + 1])}
                                                          << 8;
    pos_ += 2;
    if (!Need(n)) return {};
    std::string s(v_.substr(pos_, n));
    pos_ += n;
    return s;
  }
  bool ok() const { return ok_; }
  size_t pos() const { return pos_; }

 private:
  bool Need(size_t n) {
    if (ok_ && v_.size() - pos_ >= n) return true;
    ok_ = false;
    return false;
  }
  std::string_view v_;
  size_t pos_ = 0;
  bool ok_ = true;
};

std::string EncodeRecord(const UsageRecord& r) {
  Encoder e;
  e.U8(kFormatVersion);
  e.U8(static_cast<uint8_t>(r.kind));
  e.Str(r.request_id);
  e.Str(r.tenant);
  e.Str(r.model);
  e.I64(r.time_ms);
  e.U64(r.usage.input_tokens);
  e.U64(r.usage.cache_creation_5m);
  e.U64(r.usage.cache_creation_1h);
  e.U64(r.usage.cache_read_input_tokens);
  e.U64(r.usage.output_tokens);
  e.I64(r.cost.input);
  e.I64(r.cost.write_5m);
  e.I64(r.cost.write_1h);
  e.I64(r.cost.read);
  e.I64(r.cost.output);
  e.I64(r.cost.without_cache);
  e.Str(r.cache_name);
  e.U64(r.storage_tokens);
  e.F64(r.storage_hours);
  e.I64(r.storage_cost);
  return std::move(e).Finish();
}

// Why `v` is not a record, or nullopt and *out filled.
std::optional<std::string> DecodeRecord(std::string_view v, UsageRecord* out) {
  if (v.size() < 8 + 1) return "value of " + std::to_string(v.size()) + " bytes is too short";
  const std::string_view body = v.substr(0, v.size() - 8);
  Decoder trailer(v.substr(v.size() - 8));
  if (Checksum64(std::as_bytes(std::span<const char>(body.data(), body.size()))) != trailer.U64()) {
    return "checksum mismatch";
  }
  Decoder d(body);
  const uint8_t version = d.U8();
  if (version != kFormatVersion) return "unknown format version " + std::to_string(version);
  UsageRecord r;
  const uint8_t kind = d.U8();
  if (kind > static_cast<uint8_t>(RecordKind::kStorage)) {
    return "unknown record kind " + std::to_string(kind);
  }
  r.kind = static_cast<RecordKind>(kind);
  r.request_id = d.Str();
  r.tenant = d.Str();
  r.model = d.Str();
  r.time_ms = d.I64();
  r.usage.input_tokens = d.U64();
  r.usage.cache_creation_5m = d.U64();
  r.usage.cache_creation_1h = d.U64();
  r.usage.cache_read_input_tokens = d.U64();
  r.usage.output_tokens = d.U64();
  r.cost.input = d.I64();
  r.cost.write_5m = d.I64();
  r.cost.write_1h = d.I64();
  r.cost.read = d.I64();
  r.cost.output = d.I64();
  r.cost.without_cache = d.I64();
  r.cache_name = d.Str();
  r.storage_tokens = d.U64();
  r.storage_hours = d.F64();
  r.storage_cost = d.I64();
  if (!d.ok()) return "value is truncated";
  if (d.pos() != body.size()) return "value has trailing bytes";
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

std::string Printable(std::string_view bytes) {
  static const char kHex[] = "0123456789abcdef";
  std::string s;
  for (char c : bytes) {
    const auto u = static_cast<uint8_t>(c);
    if (u >= 0x20 && u < 0x7f && c != '\\') {
      s.push_back(c);
    } else {
      s += "\\x";
      s.push_back(kHex[u >> 4]);
      s.push_back(kHex[u & 15]);
    }
  }
  return s;
}

Status FromRocks(const rocksdb::Status& s, const std::string& what) {
  if (s.ok()) return Status::Ok();
  if (s.IsNotFound()) return Status::NotFound(what + ": not found");
  if (s.IsCorruption()) return Status::Corruption(what + ": " + s.ToString());
  return Status::IOError(what + ": " + s.ToString());
}

Status CheckField(const char* name, const std::string& value, bool required) {
  if (required && value.empty()) return Status::InvalidArgument(std::string(name) + " is empty");
  if (value.size() > kMaxLedgerFieldBytes) {
    return Status::InvalidArgument(std::string(name) + " has " + std::to_string(value.size()) +
                                   " bytes, more than " + std::to_string(kMaxLedgerFieldBytes));
  }
  for (char c : value) {
    const auto u = static_cast<uint8_t>(c);
    if (u < 0x20 || u > 0x7e) {
      return Status::InvalidArgument(std::string(name) + " '" + Printable(value) +
                                     "' is not printable ASCII");
    }
  }
  return Status::Ok();
}

}  // namespace

const char* RecordKindName(RecordKind kind) {
  return kind == RecordKind::kStorage ? "storage" : "request";
}

Status ValidateUsageRecord(const UsageRecord& r) {
  KVTIER_RETURN_IF_ERROR(CheckField("tenant", r.tenant, true));
  KVTIER_RETURN_IF_ERROR(CheckField("request_id", r.request_id, true));
  KVTIER_RETURN_IF_ERROR(CheckField("model", r.model, true));
  KVTIER_RETURN_IF_ERROR(CheckField("cache_name", r.cache_name, r.kind == RecordKind::kStorage));
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
  std::unique_ptr<Ledger> ledger(new Ledger(options));
  KVTIER_RETURN_IF_ERROR(ledger->OpenDb());
  return ledger;
}

Status Ledger::OpenDb() {
  std::error_code ec;
  std::filesystem::create_directories(options_.path, ec);
  if (ec) {
    return Status::IOError("creating ledger directory " + options_.path + ": " + ec.message());
  }
  rocksdb::DBOptions db;
  db.create_if_missing = true;
  db.create_missing_column_families = true;
  db.max_background_jobs = 2;
  rocksdb::ColumnFamilyOptions records;
  // The idempotence index is read by point lookups only.
  rocksdb::ColumnFamilyOptions ids;
  rocksdb::BlockBasedTableOptions table;
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  ids.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  std::vector<rocksdb::ColumnFamilyDescriptor> families = {
      {rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions()},
      {kRecordsFamily, records},
      {kIdsFamily, ids}};
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  KVTIER_RETURN_IF_ERROR(FromRocks(rocksdb::DB::Open(db, options_.path, families, &handles, &db_),
                                   "opening the ledger at " + options_.path));
  // The default family is unused; RocksDB keeps its handle itself.
  (void)db_->DestroyColumnFamilyHandle(handles[0]);
  records_ = handles[1];
  ids_ = handles[2];
  return Status::Ok();
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
        return FromRocks(s, "looking up request " + r.request_id + " of tenant " + r.tenant);
      }
      const std::string record_key = RecordKey(r.tenant, r.time_ms, r.request_id);
      batch.Put(records_, record_key, EncodeRecord(r));
      batch.Put(ids_, id_key, record_key);
    }
    if (batch.Count() > 0) {
      rocksdb::WriteOptions wo;
      wo.sync = options_.sync;
      KVTIER_RETURN_IF_ERROR(FromRocks(db_->Write(wo, &batch), "appending to the ledger"));
    }
  }
  if (duplicates != nullptr) *duplicates = std::move(dup);
  return Status::Ok();
}

Result<std::vector<UsageRecord>> Ledger::Scan(const std::string& tenant, int64_t from_ms,
                                              int64_t to_ms) const {
  // A tenant with a '\0' would name a range inside another tenant's keys.
  KVTIER_RETURN_IF_ERROR(CheckField("tenant", tenant, true));
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
      return Status::Corruption("ledger record " + Printable(key) + ": " + *why);
    }
    if (RecordKey(r.tenant, r.time_ms, r.request_id) != key) {
      return Status::Corruption("ledger record " + Printable(key) +
                                ": its value belongs to another key");
    }
    out.push_back(std::move(r));
  }
  KVTIER_RETURN_IF_ERROR(FromRocks(it->status(), "scanning the ledger"));
  return out;
}

Status Ledger::Flush() { return FromRocks(db_->FlushWAL(/*sync=*/true), "syncing the ledger"); }

}  // namespace kvtier
