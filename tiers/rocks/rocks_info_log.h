// The info log every RocksDB database of kvtier writes to (the cold tier, the
// ledger, the named-cache registry), in place of RocksDB's own LOG file.
//
// RocksDB's default logger writes DIR/LOG and asserts when a write to it
// fails (Debian's librocksdb keeps asserts on), so a full disk would abort the
// whole daemon from a background thread. This one writes nothing to disk: it
// forwards warnings and errors to kvtier's structured log (event
// "rocksdb_log", with the store's name), drops INFO, DEBUG and the options
// header, and ignores its own failures. Thread-safe.
#pragma once

#include <memory>
#include <string>

namespace rocksdb {
class Logger;
}  // namespace rocksdb

namespace kvtier {

// A logger for the database called `store` in log lines ("rocks tier",
// "ledger", "named cache registry"); set it as DBOptions::info_log.
std::shared_ptr<rocksdb::Logger> NewRocksInfoLog(std::string store);

}  // namespace kvtier
