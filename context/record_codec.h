// What the RocksDB-backed stores of cache/ (the Ledger, the NamedCacheRegistry)
// share: the binary encoding of their values, the checks on their string
// fields, the mapping of RocksDB errors to Status, and opening their database.
//
// Value encoding: integers are fixed-width little-endian, a double is its
// IEEE-754 bits as a u64, a string is a u16 length then its bytes, and a value
// ends with the XXH3-64 (Checksum64) of every byte before it. Each store
// documents its own field layout and format version next to its encoder;
// this file only supplies the primitives, and changing any of them changes
// every store's on-disk format.
//
// Internal to cache/. RecordWriter and RecordReader are single-threaded value
// types; the free functions are thread-safe.
#pragma once

#include <rocksdb/db.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace kvtier {

// The most bytes a length-prefixed string may hold (its length is a u16).
inline constexpr size_t kMaxRecordStringBytes = 0xffff;

// Builds one value, field by field, then seals it with its checksum trailer.
class RecordWriter {
 public:
  explicit RecordWriter(size_t reserve_bytes = 0) { bytes_.reserve(reserve_bytes); }

  void PutU8(uint8_t v);
  void PutU32(uint32_t v);
  void PutU64(uint64_t v);
  void PutI64(int64_t v) { PutU64(static_cast<uint64_t>(v)); }
  void PutF64(double v);
  // Requires v.size() <= kMaxRecordStringBytes; callers bound their fields.
  void PutString(std::string_view v);

  // Appends the XXH3-64 of everything written and returns the value.
  std::string Finish() &&;

 private:
  std::string bytes_;
};

// Splits a value written by RecordWriter into its body (every byte before the
// checksum trailer). Returns why `value` is unusable ("value of N bytes is too
// short" when it has no body byte, "checksum mismatch"), or nullopt with
// *body set; *body points into `value`.
std::optional<std::string> VerifyRecordChecksum(std::string_view value, std::string_view* body);

// Reads fields off a body in the order they were written. Once a read runs
// past the end, it and every later read yield zero (or "") and ok() is false.
// Does not own the bytes it reads.
class RecordReader {
 public:
  explicit RecordReader(std::string_view body) : body_(body) {}

  uint8_t ReadU8();
  uint32_t ReadU32();
  uint64_t ReadU64();
  int64_t ReadI64() { return static_cast<int64_t>(ReadU64()); }
  double ReadF64();
  std::string ReadString();

  bool ok() const { return ok_; }
  size_t remaining_bytes() const { return body_.size() - pos_; }

 private:
  // Whether n more bytes can be read; false (and ok() false) from then on.
  bool Need(size_t n);

  std::string_view body_;
  size_t pos_ = 0;
  bool ok_ = true;
};

// `bytes` with every byte outside printable ASCII, and '\', written as \xNN:
// safe to put keys and field values in messages and logs.
std::string EscapeForMessage(std::string_view bytes);

// Ok for an ok `s`; otherwise NotFound "<what>: not found", Corruption or
// IOError "<what>: <RocksDB's message>".
Status FromRocksStatus(const rocksdb::Status& s, const std::string& what);

// InvalidArgument, naming the field `name`, when `value` is empty though
// `required`, longer than `max_bytes`, or not printable ASCII (0x20..0x7e);
// otherwise Ok.
Status CheckPrintableField(const char* name, const std::string& value, size_t max_bytes,
                           bool required);

}  // namespace kvtier
