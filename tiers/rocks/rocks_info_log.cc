#include "tiers/rocks/rocks_info_log.h"

#include <rocksdb/env.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <string_view>

#include "common/log.h"

namespace kvtier {
namespace {

class RocksInfoLog final : public rocksdb::Logger {
 public:
  explicit RocksInfoLog(std::string store)
      : rocksdb::Logger(rocksdb::InfoLogLevel::WARN_LEVEL), store_(std::move(store)) {}

  // The options dump RocksDB writes at open: not wanted in our log.
  void LogHeader(const char*, va_list) override {}

  void Logv(const char* format, va_list ap) override {
    Logv(rocksdb::InfoLogLevel::INFO_LEVEL, format, ap);
  }

  void Logv(const rocksdb::InfoLogLevel level, const char* format, va_list ap) override {
    if (level < GetInfoLogLevel() || level >= rocksdb::InfoLogLevel::HEADER_LEVEL) return;
    char line[1024];
    const int n = std::vsnprintf(line, sizeof(line), format, ap);
    if (n < 0) return;  // nothing sensible to forward; never fail
    std::string_view text(line, std::min<size_t>(static_cast<size_t>(n), sizeof(line) - 1));
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
    LogLine(level >= rocksdb::InfoLogLevel::ERROR_LEVEL ? LogLevel::kError : LogLevel::kWarn,
            "rocksdb_log", LogFields().Add("store", store_).Add("msg", text).str());
  }

 protected:
  rocksdb::Status CloseImpl() override { return rocksdb::Status::OK(); }

 private:
  const std::string store_;
};

}  // namespace

std::shared_ptr<rocksdb::Logger> NewRocksInfoLog(std::string store) {
  return std::make_shared<RocksInfoLog>(std::move(store));
}

}  // namespace kvtier
