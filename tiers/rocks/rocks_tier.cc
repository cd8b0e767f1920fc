#include "tiers/rocks/rocks_tier.h"

#include <rocksdb/compaction_filter.h>
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>

#include <array>
#include <atomic>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <mutex>
#include <optional>

#include "common/checksum.h"
#include "common/log.h"
#include "tiers/calibration.h"
#include "tiers/rocks/rocks_write_guard.h"

namespace kvtier {
namespace {

constexpr uint32_t kMetaMagic = 0x4b565231;  // "KVR1"
constexpr size_t kMetaBytes = 32;
constexpr size_t kDataKeyBytes = 24;
constexpr size_t kStripes = 64;
const char kMetaFamily[] = "meta";

void PutU64BE(char* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<char>(v >> (56 - 8 * i));
}
uint64_t GetU64BE(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

// What the meta family records of a block.
struct Meta {
  int64_t expiry_ms = kNoExpiry;
  uint64_t bytes = 0;
  uint64_t checksum = 0;

  std::string Encode() const {
    std::string s(kMetaBytes, '\0');
    PutU64BE(s.data(), (static_cast<uint64_t>(kMetaMagic) << 32) | 1u);  // magic, version
    PutU64BE(s.data() + 8, static_cast<uint64_t>(expiry_ms));
    PutU64BE(s.data() + 16, bytes);
    PutU64BE(s.data() + 24, checksum);
    return s;
  }
  static std::optional<Meta> Decode(const rocksdb::Slice& v) {
    if (v.size() != kMetaBytes || GetU64BE(v.data()) >> 32 != kMetaMagic) return std::nullopt;
    return Meta{static_cast<int64_t>(GetU64BE(v.data() + 8)), GetU64BE(v.data() + 16),
                GetU64BE(v.data() + 24)};
  }
};

std::string MetaKey(const BlockKey& key) { return key.ToByteString(); }

std::string DataKey(const BlockKey& key, int64_t expiry_ms) {
  std::string s = key.ToByteString();
  s.resize(kDataKeyBytes);
  PutU64BE(s.data() + 16, static_cast<uint64_t>(expiry_ms));
  return s;
}

Status FromRocks(const rocksdb::Status& s, const std::string& what) {
  if (s.ok()) return Status::Ok();
  if (s.IsNotFound()) return Status::NotFound(what + ": not found");
  if (s.IsCorruption()) return Status::Corruption(what + ": " + s.ToString());
  if (s.IsNoSpace()) return Status::Unavailable("device full: " + what + ": " + s.ToString());
  return Status::IOError(what + ": " + s.ToString());
}

// Drops payload records whose expiry (in the key) has passed; never reads the
// value, so compaction never fetches a blob.
class DataExpiryFilter final : public rocksdb::CompactionFilter {
 public:
  explicit DataExpiryFilter(Clock* clock) : clock_(clock) {}
  Decision FilterV2(int, const rocksdb::Slice& key, ValueType, const rocksdb::Slice&, std::string*,
                    std::string*) const override {
    return Expired(key) ? Decision::kRemove : Decision::kKeep;
  }
  Decision FilterBlobByKey(int, const rocksdb::Slice& key, std::string*,
                           std::string*) const override {
    return Expired(key) ? Decision::kRemove : Decision::kKeep;
  }
  const char* Name() const override { return "kvtier.DataExpiryFilter"; }

 private:
  bool Expired(const rocksdb::Slice& key) const {
    return key.size() == kDataKeyBytes &&
           static_cast<int64_t>(GetU64BE(key.data() + 16)) <= clock_->NowMs();
  }
  Clock* clock_;
};

class RocksTier final : public Tier {
 public:
  explicit RocksTier(const RocksTierOptions& o)
      : options_(o),
        data_filter_(o.clock),
        guard_(RocksWriteGuardOptions{.store = "rocks tier",
                                      .path = o.path,
                                      .min_free_bytes = o.min_free_bytes,
                                      .clock = o.clock}) {}

  ~RocksTier() override {
    if (db_ == nullptr) return;
    for (auto* h : {data_, meta_}) {
      if (h != nullptr) (void)db_->DestroyColumnFamilyHandle(h);
    }
    (void)db_->Close();
    delete db_;
  }

  Status Open() {
    rocksdb::DBOptions db;
    db.create_if_missing = true;
    db.create_missing_column_families = true;
    db.max_background_jobs = 2;
    // Flush the two families together: without the WAL, a crash must not
    // leave a payload without its record (or the reverse).
    db.atomic_flush = true;
    guard_.Configure(&db);
    const auto compression = options_.compression == RocksCompression::kLz4
                                 ? rocksdb::kLZ4Compression
                                 : rocksdb::kNoCompression;
    rocksdb::ColumnFamilyOptions data;
    data.enable_blob_files = true;
    data.min_blob_size = options_.min_blob_bytes;
    data.blob_file_size = options_.blob_file_bytes;
    data.enable_blob_garbage_collection = true;
    data.compression = compression;
    data.blob_compression_type = compression;
    data.compaction_filter = &data_filter_;
    // Meta records are never filtered: they leave only by an explicit erase,
    // so the tier's accounting stays exact. (Their payloads do expire by
    // compaction; a record without its payload reads as a miss.)
    rocksdb::ColumnFamilyOptions meta;
    rocksdb::BlockBasedTableOptions table;
    table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
    meta.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));

    std::vector<rocksdb::ColumnFamilyDescriptor> families = {
        {rocksdb::kDefaultColumnFamilyName, data}, {kMetaFamily, meta}};
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    KVTIER_RETURN_IF_ERROR(FromRocks(rocksdb::DB::Open(db, options_.path, families, &handles, &db_),
                                     "opening RocksDB tier at " + options_.path));
    data_ = handles[0];
    meta_ = handles[1];
    guard_.Attach(db_);
    write_options_.disableWAL = !options_.use_wal;
    write_options_.sync = options_.use_wal && options_.sync_writes;
    // Account for what is stored. Blocks that expired while the tier was
    // closed are deleted now: nothing would ever look them up to erase them.
    rocksdb::WriteBatch expired;
    const int64_t now = options_.clock->NowMs();
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), meta_));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      std::optional<Meta> m = Meta::Decode(it->value());
      std::optional<BlockKey> key = BlockKey::FromBytes(it->key().ToStringView());
      if (!m || !key) continue;  // malformed: reads of it answer Corruption
      if (m->expiry_ms <= now) {
        expired.Delete(meta_, it->key());
        expired.Delete(data_, DataKey(*key, m->expiry_ms));
        continue;
      }
      used_bytes_ += m->bytes;
      ++blocks_;
    }
    KVTIER_RETURN_IF_ERROR(FromRocks(it->status(), "scanning the RocksDB tier"));
    it.reset();
    if (expired.Count() > 0) {
      // Not fatal (a full disk must not keep the tier from opening): expired
      // blocks read as misses, and the next open tries again.
      Status s = guard_.AfterWrite(db_->Write(write_options_, &expired), "deleting expired blocks");
      if (!s.ok()) LogWarn("rocks_expired_delete_failed", LogFields().Add("why", s.message()));
    }
    return Status::Ok();
  }

  TierInfo Info() const override {
    TierInfo info;
    info.name = options_.name;
    info.used_bytes = used_bytes_.load();
    // No more than the disk can still take above the free-space floor.
    info.capacity_bytes =
        std::min(options_.capacity_bytes, info.used_bytes + guard_.HeadroomBytes());
    info.allocated_bytes = info.used_bytes;
    info.blocks = blocks_.load();
    info.max_block_bytes = options_.max_block_bytes;
    info.read_bytes_per_s = bandwidth_.read_bytes_per_s;
    info.write_bytes_per_s = bandwidth_.write_bytes_per_s;
    info.persistent = true;
    info.corruption_errors = corruption_errors_.load();
    info.io_errors = io_errors_.load();
    return info;
  }

  void Write(std::span<const WriteOp> ops, IoCallback done) override {
    CompleteInline(ops, done, [this](const WriteOp& op) { return WriteOneBlock(op); });
  }

  void Read(std::span<const ReadOp> ops, IoCallback done) override {
    CompleteInline(ops, done, [this](const ReadOp& op) { return ReadOneBlock(op); });
  }

  Status Erase(std::span<const BlockKey> keys) override {
    for (const BlockKey& key : keys) {
      std::lock_guard<std::mutex> lock(StripeOf(key));
      KVTIER_RETURN_IF_ERROR(RemoveLocked(key));
    }
    return Status::Ok();
  }

  Status SetExpiry(std::span<const BlockKey> keys, int64_t expiry_ms) override {
    for (const BlockKey& key : keys) {
      std::lock_guard<std::mutex> lock(StripeOf(key));
      KVTIER_ASSIGN_OR_RETURN(const std::optional<Meta> meta, GetMeta(key));
      if (!meta || meta->expiry_ms == expiry_ms) continue;
      rocksdb::PinnableSlice payload;
      rocksdb::Status s =
          db_->Get(rocksdb::ReadOptions(), data_, DataKey(key, meta->expiry_ms), &payload);
      if (s.IsNotFound()) continue;  // nothing to refresh
      KVTIER_RETURN_IF_ERROR(Count(FromRocks(s, "reading block " + key.ToHex())));
      Meta updated = *meta;
      updated.expiry_ms = expiry_ms;
      rocksdb::WriteBatch batch;
      batch.Delete(data_, DataKey(key, meta->expiry_ms));
      batch.Put(data_, DataKey(key, expiry_ms), payload);
      batch.Put(meta_, MetaKey(key), updated.Encode());
      KVTIER_RETURN_IF_ERROR(Count(guard_.BeforeWrite(payload.size())));
      KVTIER_RETURN_IF_ERROR(Count(
          guard_.AfterWrite(db_->Write(write_options_, &batch), "refreshing " + key.ToHex())));
    }
    return Status::Ok();
  }

  Status Recover(IndexSink& sink) override {
    const int64_t now = options_.clock->NowMs();
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), meta_));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      std::optional<BlockKey> key = BlockKey::FromBytes(it->key().ToStringView());
      std::optional<Meta> m = Meta::Decode(it->value());
      if (!key || !m) {
        ++corruption_errors_;
        continue;
      }
      if (m->expiry_ms > now) sink.Announce(*key, m->bytes, m->expiry_ms);
    }
    return FromRocks(it->status(), "recovering the RocksDB tier");
  }

  // Called once by the factory, before the tier is shared.
  void set_bandwidth(const Bandwidth& bw) { bandwidth_ = bw; }
  void set_quarantine_path(const std::string& path) { quarantine_path_ = path; }

  RocksTierStats Stats() {
    const RocksStoreStats g = guard_.Stats();
    RocksTierStats s;
    s.no_space_errors = g.no_space_errors;
    s.write_errors = g.write_errors;
    s.recoveries = g.recoveries;
    s.quarantined_stores = quarantine_path_.empty() ? 0 : 1;
    s.quarantine_path = quarantine_path_;
    return s;
  }

  // Test hooks.
  Status Corrupt(const BlockKey& key) {
    std::lock_guard<std::mutex> lock(StripeOf(key));
    KVTIER_ASSIGN_OR_RETURN(const std::optional<Meta> meta, GetMeta(key));
    if (!meta) return Status::NotFound("block " + key.ToHex() + " is not here");
    std::string payload;
    const std::string dk = DataKey(key, meta->expiry_ms);
    KVTIER_RETURN_IF_ERROR(FromRocks(db_->Get(rocksdb::ReadOptions(), data_, dk, &payload), "get"));
    payload[payload.size() / 2] ^= 0x5a;
    return FromRocks(db_->Put(write_options_, data_, dk, payload), "put");
  }
  Status Compact() {
    rocksdb::CompactRangeOptions o;
    o.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
    o.blob_garbage_collection_policy = rocksdb::BlobGarbageCollectionPolicy::kForce;
    o.blob_garbage_collection_age_cutoff = 1.0;
    for (auto* h : {data_, meta_}) {
      KVTIER_RETURN_IF_ERROR(FromRocks(db_->CompactRange(o, h, nullptr, nullptr), "compact"));
    }
    return Status::Ok();
  }
  std::pair<uint64_t, uint64_t> RecordCounts() {
    auto count = [&](rocksdb::ColumnFamilyHandle* h) {
      uint64_t n = 0;
      std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), h));
      for (it->SeekToFirst(); it->Valid(); it->Next()) ++n;
      return n;
    };
    return {count(meta_), count(data_)};
  }

 private:
  std::mutex& StripeOf(const BlockKey& key) {
    return stripes_[(BlockKeyHashValue(key) >> 58) % kStripes];
  }

  // Counts I/O errors as they pass.
  Status Count(Status s) {
    if (s.code() == StatusCode::kIOError || s.IsResourceExhausted() ||
        s.code() == StatusCode::kUnavailable) {
      ++io_errors_;
    }
    if (s.IsCorruption()) ++corruption_errors_;
    return s;
  }

  Result<std::optional<Meta>> GetMeta(const BlockKey& key,
                                      const rocksdb::ReadOptions& ro = rocksdb::ReadOptions()) {
    std::string v;
    rocksdb::Status s = db_->Get(ro, meta_, MetaKey(key), &v);
    if (s.IsNotFound()) return std::optional<Meta>();
    KVTIER_RETURN_IF_ERROR(Count(FromRocks(s, "reading the record of " + key.ToHex())));
    std::optional<Meta> m = Meta::Decode(v);
    if (!m) {
      ++corruption_errors_;
      return Status::Corruption("the record of block " + key.ToHex() + " is malformed");
    }
    return m;
  }

  // Requires the key's stripe lock.
  Status RemoveLocked(const BlockKey& key) {
    Result<std::optional<Meta>> meta = GetMeta(key);
    if (!meta.ok() && !meta.status().IsCorruption()) return meta.status();
    rocksdb::WriteBatch batch;
    batch.Delete(meta_, MetaKey(key));
    if (meta.ok() && *meta) batch.Delete(data_, DataKey(key, (*meta)->expiry_ms));
    KVTIER_RETURN_IF_ERROR(Count(guard_.BeforeWrite(0, RocksWriteKind::kShrinks)));
    KVTIER_RETURN_IF_ERROR(
        Count(guard_.AfterWrite(db_->Write(write_options_, &batch), "erasing " + key.ToHex())));
    if (meta.ok() && *meta) {
      used_bytes_ -= (*meta)->bytes;
      --blocks_;
    }
    return Status::Ok();
  }

  IoResult WriteOneBlock(const WriteOp& op) {
    const uint64_t n = op.payload.size();
    if (n == 0) return {Status::InvalidArgument("empty block payload"), 0};
    if (n > options_.max_block_bytes) {
      return {Status::ResourceExhausted("block of " + std::to_string(n) +
                                        " bytes exceeds the RocksDB tier's limit of " +
                                        std::to_string(options_.max_block_bytes)),
              0};
    }
    if (Status room = Count(guard_.BeforeWrite(n)); !room.ok()) return {room, 0};
    std::lock_guard<std::mutex> lock(StripeOf(op.key));
    Result<std::optional<Meta>> old = GetMeta(op.key);
    if (!old.ok() && !old.status().IsCorruption()) return {old.status(), 0};
    const uint64_t old_bytes = old.ok() && *old ? (*old)->bytes : 0;
    // Reserve capacity first; give it back if the write fails.
    uint64_t used = used_bytes_.load();
    do {
      if (used - old_bytes + n > options_.capacity_bytes) {
        return {Status::ResourceExhausted("RocksDB tier '" + options_.name + "' has no room for " +
                                          std::to_string(n) + " bytes"),
                0};
      }
    } while (!used_bytes_.compare_exchange_weak(used, used + n));
    const Meta meta{op.expiry_ms, n, Checksum64(op.payload)};
    rocksdb::WriteBatch batch;
    if (old.ok() && *old && (*old)->expiry_ms != op.expiry_ms) {
      batch.Delete(data_, DataKey(op.key, (*old)->expiry_ms));
    }
    batch.Put(data_, DataKey(op.key, op.expiry_ms),
              rocksdb::Slice(reinterpret_cast<const char*>(op.payload.data()), n));
    batch.Put(meta_, MetaKey(op.key), meta.Encode());
    Status s =
        Count(guard_.AfterWrite(db_->Write(write_options_, &batch), "writing " + op.key.ToHex()));
    if (!s.ok()) {
      used_bytes_ -= n;
      return {s, 0};
    }
    used_bytes_ -= old_bytes;
    if (!(old.ok() && *old)) ++blocks_;
    return {Status::Ok(), n};
  }

  IoResult ReadOneBlock(const ReadOp& op) {
    // Record and payload from one snapshot: a concurrent replace (an atomic
    // batch) is seen whole or not at all, never as a new payload checked
    // against the old record's checksum.
    rocksdb::ManagedSnapshot snapshot(db_);
    rocksdb::ReadOptions ro;
    ro.snapshot = snapshot.snapshot();
    Result<std::optional<Meta>> meta = GetMeta(op.key, ro);
    if (!meta.ok()) return {meta.status(), 0};
    if (!*meta || (*meta)->expiry_ms <= options_.clock->NowMs()) {
      return {Status::NotFound("block " + op.key.ToHex() + " is not in the RocksDB tier"), 0};
    }
    const Meta m = **meta;
    if (op.dest.size() < m.bytes) {
      return {Status::ResourceExhausted("read buffer of " + std::to_string(op.dest.size()) +
                                        " bytes is smaller than the block (" +
                                        std::to_string(m.bytes) + ")"),
              m.bytes};
    }
    rocksdb::PinnableSlice payload;
    rocksdb::Status rs = db_->Get(ro, data_, DataKey(op.key, m.expiry_ms), &payload);
    if (rs.IsNotFound()) {  // a record without its payload: lost, a miss
      ++corruption_errors_;
      return {Status::NotFound("block " + op.key.ToHex() + " has no payload stored"), 0};
    }
    Status s = FromRocks(rs, "reading block " + op.key.ToHex());
    if (s.ok() && payload.size() != m.bytes) {
      s = Status::Corruption("block " + op.key.ToHex() + " has " + std::to_string(payload.size()) +
                             " bytes, its record says " + std::to_string(m.bytes));
    }
    if (s.ok()) {
      const auto* p = reinterpret_cast<const std::byte*>(payload.data());
      if (CopyAndChecksum64({p, m.bytes}, op.dest.first(m.bytes)) != m.checksum) {
        s = Status::Corruption("block " + op.key.ToHex() + " failed its checksum");
      }
    }
    if (s.ok()) return {Status::Ok(), m.bytes};
    if (s.IsCorruption()) {
      ++corruption_errors_;
      std::memset(op.dest.data(), 0, m.bytes);
      LogError("rocks_block_corrupt",
               LogFields().Add("key", op.key.ToHex()).Add("why", s.message()));
      // Drop it, unless it was rewritten since the snapshot (the new copy stays).
      std::lock_guard<std::mutex> lock(StripeOf(op.key));
      Result<std::optional<Meta>> now = GetMeta(op.key);
      if (now.ok() && *now && (*now)->checksum == m.checksum && (*now)->expiry_ms == m.expiry_ms) {
        (void)RemoveLocked(op.key);
      }
    } else {
      ++io_errors_;
    }
    return {s, 0};
  }

  const RocksTierOptions options_;
  Bandwidth bandwidth_;            // set before the tier is shared
  std::string quarantine_path_;    // set before the tier is shared
  DataExpiryFilter data_filter_;   // must outlive db_
  mutable RocksWriteGuard guard_;  // must outlive db_; Info() reads free space
  rocksdb::DB* db_ = nullptr;
  rocksdb::ColumnFamilyHandle* data_ = nullptr;
  rocksdb::ColumnFamilyHandle* meta_ = nullptr;
  rocksdb::WriteOptions write_options_;
  // Serialise writers of one key (read the old record, then write the batch).
  std::array<std::mutex, kStripes> stripes_;
  std::atomic<uint64_t> used_bytes_{0};
  std::atomic<uint64_t> blocks_{0};
  std::atomic<uint64_t> corruption_errors_{0};
  std::atomic<uint64_t> io_errors_{0};
};

RocksTier* AsRocks(Tier& tier) { return dynamic_cast<RocksTier*>(&tier); }

// Moves the damaged database at `path` aside to <path>.corrupt-<UTC time>
// (-N appended if taken) and returns where it went.
Result<std::string> Quarantine(const std::string& path, int64_t now_ms) {
  const std::time_t t = static_cast<std::time_t>(now_ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
  std::string to = path + ".corrupt-" + stamp;
  std::error_code ec;
  for (int n = 1; std::filesystem::exists(to, ec); ++n) {
    to = path + ".corrupt-" + stamp + "-" + std::to_string(n);
  }
  std::filesystem::rename(path, to, ec);
  if (ec) return Status::IOError("moving " + path + " aside to " + to + ": " + ec.message());
  return to;
}

}  // namespace

Result<std::unique_ptr<Tier>> OpenRocksTier(const RocksTierOptions& o) {
  if (o.path.empty()) return Status::InvalidArgument("the RocksDB tier needs a path");
  if (o.clock == nullptr) return Status::InvalidArgument("the RocksDB tier needs a clock");
  if (o.capacity_bytes == 0) return Status::InvalidArgument("RocksDB tier capacity is zero");
  auto tier = std::make_unique<RocksTier>(o);
  if (Status s = tier->Open(); !s.ok()) {
    if (!s.IsCorruption()) return s;
    // A cache may lose its contents, not its availability: keep the damaged
    // store for the operator and start empty.
    tier.reset();  // closes the database
    Result<std::string> moved = Quarantine(o.path, o.clock->NowMs());
    if (!moved.ok()) {
      return Status::Corruption(s.message() +
                                "; and it could not be moved aside: " + moved.status().message());
    }
    LogError("rocks_tier_quarantined",
             LogFields().Add("path", o.path).Add("moved_to", *moved).Add("why", s.message()));
    tier = std::make_unique<RocksTier>(o);
    tier->set_quarantine_path(*moved);
    KVTIER_RETURN_IF_ERROR(tier->Open());
  }
  tier->set_bandwidth(ConfiguredOrMeasured(*tier, o.read_bytes_per_s, o.write_bytes_per_s));
  return std::unique_ptr<Tier>(std::move(tier));
}

Status CorruptRocksBlockForTesting(Tier& tier, const BlockKey& key) {
  RocksTier* r = AsRocks(tier);
  return r ? r->Corrupt(key) : Status::InvalidArgument("not a RocksDB tier");
}

Status CompactRocksTierForTesting(Tier& tier) {
  RocksTier* r = AsRocks(tier);
  return r ? r->Compact() : Status::InvalidArgument("not a RocksDB tier");
}

Result<RocksTierStats> RocksTierStatsOf(Tier& tier) {
  RocksTier* r = AsRocks(tier);
  if (!r) return Status::InvalidArgument("not a RocksDB tier");
  return r->Stats();
}

Result<std::pair<uint64_t, uint64_t>> RocksRecordCountForTesting(Tier& tier) {
  RocksTier* r = AsRocks(tier);
  if (!r) return Status::InvalidArgument("not a RocksDB tier");
  return r->RecordCounts();
}

}  // namespace kvtier
