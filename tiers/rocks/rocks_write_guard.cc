#include "tiers/rocks/rocks_write_guard.h"

#include <rocksdb/listener.h>

#include <algorithm>
#include <filesystem>

#include "common/disk_space.h"
#include "common/log.h"
#include "tiers/rocks/rocks_info_log.h"

namespace kvtier {
namespace {

constexpr int64_t kMaxReadingAgeMs = 1000;

}  // namespace

uint64_t DefaultMinFreeBytes(uint64_t total_bytes) {
  return std::min<uint64_t>(total_bytes / 16, uint64_t{1} << 30);
}

// Told of every background error; stops RocksDB's own recovery of a full
// disk, which the guard does itself (see the header).
class RocksWriteGuard::Listener final : public rocksdb::EventListener {
 public:
  explicit Listener(RocksWriteGuard* guard) : guard_(guard) {}

  void OnBackgroundError(rocksdb::BackgroundErrorReason, rocksdb::Status* bg_error) override {
    if (bg_error == nullptr || bg_error->ok()) return;
    if (bg_error->IsNoSpace()) {
      ++guard_->no_space_errors_;
    } else {
      ++guard_->write_errors_;
    }
    guard_->needs_resume_ = true;
    LogWarn("rocksdb_background_error", LogFields()
                                            .Add("store", guard_->options_.store)
                                            .Add("path", guard_->options_.path)
                                            .Add("why", bg_error->ToString()));
  }

  void OnErrorRecoveryBegin(rocksdb::BackgroundErrorReason, rocksdb::Status bg_error,
                            bool* auto_recovery) override {
    bg_error.PermitUncheckedError();
    if (auto_recovery != nullptr) *auto_recovery = false;
    guard_->needs_resume_ = true;
  }

 private:
  RocksWriteGuard* const guard_;
};

RocksWriteGuard::RocksWriteGuard(RocksWriteGuardOptions options)
    : options_(std::move(options)), listener_(std::make_shared<Listener>(this)) {
  floor_bytes_ = options_.min_free_bytes;
  if (floor_bytes_ == kAutoMinFreeBytes) {
    std::error_code ec;
    std::filesystem::create_directories(options_.path, ec);
    Result<DiskSpace> space = QueryDiskSpace(options_.path);
    floor_bytes_ = space.ok() ? DefaultMinFreeBytes(space->total_bytes) : 0;
    if (options_.essential) floor_bytes_ /= 4;
  }
}

RocksWriteGuard::~RocksWriteGuard() = default;

void RocksWriteGuard::Configure(rocksdb::DBOptions* options) {
  options->info_log = NewRocksInfoLog(options_.store);
  options->info_log_level = rocksdb::InfoLogLevel::WARN_LEVEL;
  options->listeners.push_back(listener_);
}

void RocksWriteGuard::Attach(rocksdb::DB* db) { db_ = db; }

uint64_t RocksWriteGuard::FreeBytes(uint64_t bytes, bool force) {
  // Requires mu_.
  const int64_t now = options_.clock->NowMs();
  written_since_reading_ += bytes;
  const bool stale = force || last_free_bytes_ == UINT64_MAX || last_free_bytes_ < floor_bytes_ ||
                     now - last_reading_ms_ >= kMaxReadingAgeMs ||
                     written_since_reading_ >= (last_free_bytes_ - floor_bytes_) / 4;
  if (stale) {
    Result<DiskSpace> space = QueryDiskSpace(options_.path);
    // A file system that cannot say is never refused on its account.
    last_free_bytes_ = space.ok() ? space->free_bytes : UINT64_MAX - 1;
    last_reading_ms_ = now;
    written_since_reading_ = 0;
  }
  return last_free_bytes_;
}

Status RocksWriteGuard::DeviceFull(const std::string& why) {
  ++no_space_errors_;
  return Status::Unavailable("device full: " + options_.store + " at " + options_.path + ": " +
                             why);
}

Status RocksWriteGuard::BeforeWrite(uint64_t bytes, RocksWriteKind kind) {
  std::lock_guard<std::mutex> lock(mu_);
  const bool resume = needs_resume_.load();
  const uint64_t free_bytes = FreeBytes(bytes, resume);
  if (free_bytes < floor_bytes_ && (kind == RocksWriteKind::kGrows || resume)) {
    return DeviceFull(std::to_string(free_bytes) + " bytes free, below the floor of " +
                      std::to_string(floor_bytes_) + "; writes resume when space is freed");
  }
  if (!resume || db_ == nullptr) return Status::Ok();
  const rocksdb::Status s = db_->Resume();
  if (!s.ok()) {
    if (s.IsNoSpace()) return DeviceFull("resuming writes: " + s.ToString());
    ++write_errors_;
    return Status::IOError(options_.store + " at " + options_.path +
                           ": resuming writes: " + s.ToString());
  }
  needs_resume_ = false;
  ++recoveries_;
  LogInfo("rocksdb_writes_resumed", LogFields()
                                        .Add("store", options_.store)
                                        .Add("path", options_.path)
                                        .Add("free_bytes", free_bytes));
  return Status::Ok();
}

Status RocksWriteGuard::AfterWrite(const rocksdb::Status& s, const std::string& what) {
  if (s.ok()) return Status::Ok();
  if (s.IsNoSpace()) {
    needs_resume_ = true;
    {
      std::lock_guard<std::mutex> lock(mu_);
      last_free_bytes_ = UINT64_MAX;  // read it again
    }
    return DeviceFull(what + ": " + s.ToString());
  }
  ++write_errors_;
  if (s.IsCorruption()) return Status::Corruption(what + ": " + s.ToString());
  return Status::IOError(what + ": " + s.ToString());
}

uint64_t RocksWriteGuard::HeadroomBytes() {
  std::lock_guard<std::mutex> lock(mu_);
  const uint64_t free_bytes = FreeBytes(0, false);
  return free_bytes > floor_bytes_ ? free_bytes - floor_bytes_ : 0;
}

RocksStoreStats RocksWriteGuard::Stats() const {
  RocksStoreStats s;
  s.no_space_errors = no_space_errors_.load();
  s.write_errors = write_errors_.load();
  s.recoveries = recoveries_.load();
  return s;
}

Status OpenGuardedRocksStore(const std::string& path, const std::string& store,
                             const std::vector<rocksdb::ColumnFamilyDescriptor>& families,
                             RocksWriteGuard& guard, rocksdb::DB** db,
                             std::vector<rocksdb::ColumnFamilyHandle*>* handles) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) return Status::IOError("creating " + store + " directory " + path + ": " + ec.message());
  rocksdb::DBOptions options;
  options.create_if_missing = true;
  options.create_missing_column_families = true;
  options.max_background_jobs = 2;
  guard.Configure(&options);
  std::vector<rocksdb::ColumnFamilyDescriptor> all_families = {
      {rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions()}};
  all_families.insert(all_families.end(), families.begin(), families.end());
  std::vector<rocksdb::ColumnFamilyHandle*> all_handles;
  const rocksdb::Status s = rocksdb::DB::Open(options, path, all_families, &all_handles, db);
  if (!s.ok()) {
    const std::string msg = "opening the " + store + " at " + path + ": " + s.ToString();
    if (s.IsCorruption()) return Status::Corruption(msg);
    if (s.IsNoSpace()) return Status::Unavailable("device full: " + msg);
    return Status::IOError(msg);
  }
  // The default family is unused; RocksDB keeps its handle itself.
  (void)(*db)->DestroyColumnFamilyHandle(all_handles[0]);
  handles->assign(all_handles.begin() + 1, all_handles.end());
  guard.Attach(*db);
  return Status::Ok();
}

}  // namespace kvtier
