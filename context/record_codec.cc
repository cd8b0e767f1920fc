#include "context/record_codec.h"

#include <bit>
#include <span>
#include <system_error>

#include "common/checksum.h"

namespace kvtier {
namespace {

constexpr size_t kChecksumBytes = 8;

uint64_t ChecksumOf(std::string_view bytes) {
  return Checksum64(std::as_bytes(std::span<const char>(bytes.data(), bytes.size())));
}

}  // namespace

void RecordWriter::PutU8(uint8_t v) { bytes_.push_back(static_cast<char>(v)); }

void RecordWriter::PutU32(uint32_t v) {
  for (int i = 0; i < 4; ++i) bytes_.push_back(static_cast<char>(v >> (8 * i)));
}

void RecordWriter::PutU64(uint64_t v) {
  for (int i = 0; i < 8; ++i) bytes_.push_back(static_cast<char>(v >> (8 * i)));
}

void RecordWriter::PutF64(double v) { PutU64(std::bit_cast<uint64_t>(v)); }

void RecordWriter::PutString(std::string_view v) {
  bytes_.push_back(static_cast<char>(v.size() & 0xff));
  bytes_.push_back(static_cast<char>(v.size() >> 8));
  bytes_.append(v);
}

std::string RecordWriter::Finish() && {
  PutU64(ChecksumOf(bytes_));
  return std::move(bytes_);
}

std::optional<std::string> VerifyRecordChecksum(std::string_view value, std::string_view* body) {
  if (value.size() < kChecksumBytes + 1) {
    return "value of " + std::to_string(value.size()) + " bytes is too short";
  }
  const std::string_view content = value.substr(0, value.size() - kChecksumBytes);
  RecordReader trailer(value.substr(content.size()));
  if (ChecksumOf(content) != trailer.ReadU64()) return "checksum mismatch";
  *body = content;
  return std::nullopt;
}

bool RecordReader::Need(size_t n) {
  if (ok_ && body_.size() - pos_ >= n) return true;
  ok_ = false;
  return false;
}

uint8_t RecordReader::ReadU8() {
  if (!Need(1)) return 0;
  return static_cast<uint8_t>(body_[pos_++]);
}

uint32_t RecordReader::ReadU32() {
  if (!Need(4)) return 0;
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t{static_cast<uint8_t>(body_[pos_ + i])} << (8 * i);
  pos_ += 4;
  return v;
}

uint64_t RecordReader::ReadU64() {
  if (!Need(8)) return 0;
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t{static_cast<uint8_t>(body_[pos_ + i])} << (8 * i);
  pos_ += 8;
  return v;
}

double RecordReader::ReadF64() { return std::bit_cast<double>(ReadU64()); }

std::string RecordReader::ReadString() {
  if (!Need(2)) return {};
  const size_t n = static_cast<uint8_t>(body_[pos_]) | size_t{static_cast<uint8_t>(body_[pos_ + 1])}
                                                           << 8;
  pos_ += 2;
  if (!Need(n)) return {};
  std::string s(body_.substr(pos_, n));
  pos_ += n;
  return s;
}

std::string EscapeForMessage(std::string_view bytes) {
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

Status FromRocksStatus(const rocksdb::Status& s, const std::string& what) {
  if (s.ok()) return Status::Ok();
  if (s.IsNotFound()) return Status::NotFound(what + ": not found");
  if (s.IsCorruption()) return Status::Corruption(what + ": " + s.ToString());
  return Status::IOError(what + ": " + s.ToString());
}

Status CheckPrintableField(const char* name, const std::string& value, size_t max_bytes,
                           bool required) {
  if (required && value.empty()) return Status::InvalidArgument(std::string(name) + " is empty");
  if (value.size() > max_bytes) {
    return Status::InvalidArgument(std::string(name) + " has " + std::to_string(value.size()) +
                                   " bytes, more than " + std::to_string(max_bytes));
  }
  for (char c : value) {
    const auto u = static_cast<uint8_t>(c);
    if (u < 0x20 || u > 0x7e) {
      return Status::InvalidArgument(std::string(name) + " '" + EscapeForMessage(value) +
                                     "' is not printable ASCII");
    }
  }
  return Status::Ok();
}

}  // namespace kvtier
