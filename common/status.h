// Status and Result<T>: the error currency of kvtier.
//
// A Status crosses every module boundary; exceptions never do. The set of codes
// is closed and tells the caller what to do next:
//   kNotFound           the thing asked for is not there (a cache miss)
//   kInvalidArgument    the request is malformed; retrying it will not help
//   kResourceExhausted  a limit or a capacity is reached (too big, tier full)
//   kRetry              a transient conflict (e.g. a pinned block); try again
//   kIOError            the device or file system failed
//   kCorruption         stored bytes failed their checksum; treated as a miss
//   kUnavailable        the component is shut down or not started
//   kPermissionDenied   the caller may not do this (another tenant's data)
// Status is a value type, cheap to copy when OK (no allocation).
#pragma once

#include <memory>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace kvtier {

enum class StatusCode : int {
  kOk = 0,
  kNotFound,
  kInvalidArgument,
  kResourceExhausted,
  kRetry,
  kIOError,
  kCorruption,
  kUnavailable,
  kPermissionDenied,
};

std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message);

  static Status Ok() { return Status(); }
  static Status NotFound(std::string msg) { return {StatusCode::kNotFound, std::move(msg)}; }
  static Status InvalidArgument(std::string msg) {
    return {StatusCode::kInvalidArgument, std::move(msg)};
  }
  static Status ResourceExhausted(std::string msg) {
    return {StatusCode::kResourceExhausted, std::move(msg)};
  }
  static Status Retry(std::string msg) { return {StatusCode::kRetry, std::move(msg)}; }
  static Status IOError(std::string msg) { return {StatusCode::kIOError, std::move(msg)}; }
  static Status Corruption(std::string msg) { return {StatusCode::kCorruption, std::move(msg)}; }
  static Status Unavailable(std::string msg) { return {StatusCode::kUnavailable, std::move(msg)}; }
  static Status PermissionDenied(std::string msg) {
    return {StatusCode::kPermissionDenied, std::move(msg)};
  }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const;
  // "NotFound: block 00ab... is not cached", or "OK".
  std::string ToString() const;

  bool IsNotFound() const { return code_ == StatusCode::kNotFound; }
  bool IsCorruption() const { return code_ == StatusCode::kCorruption; }
  bool IsResourceExhausted() const { return code_ == StatusCode::kResourceExhausted; }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::shared_ptr<const std::string> message_;  // null when OK
};

std::ostream& operator<<(std::ostream& os, const Status& s);

// Result<T> holds either a value or a non-OK Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}         // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {}  // NOLINT: implicit by design

  bool ok() const { return std::holds_alternative<T>(v_); }
  // The error; Status::Ok() when a value is held.
  Status status() const { return ok() ? Status::Ok() : std::get<Status>(v_); }

  // Requires ok().
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace kvtier

// Returns from the enclosing function when `expr` yields a non-OK Status.
#define KVTIER_RETURN_IF_ERROR(expr)       \
  do {                                     \
    ::kvtier::Status _kvtier_s = (expr);   \
    if (!_kvtier_s.ok()) return _kvtier_s; \
  } while (0)

// `KVTIER_ASSIGN_OR_RETURN(lhs, expr)`: evaluates `expr` (a Result<T>); on an
// error returns its Status from the enclosing function, else moves the value
// into `lhs`, which may declare a variable:
//   KVTIER_ASSIGN_OR_RETURN(std::unique_ptr<Tier> tier, OpenDramTier(options));
// NOLINTBEGIN(bugprone-macro-parentheses): `lhs` may be a declaration and
// `result` is a name, so neither can be parenthesized.
#define KVTIER_ASSIGN_OR_RETURN(lhs, expr) \
  KVTIER_ASSIGN_OR_RETURN_IMPL_(KVTIER_CONCAT_(_kvtier_result_, __LINE__), lhs, expr)
#define KVTIER_ASSIGN_OR_RETURN_IMPL_(result, lhs, expr) \
  auto result = (expr);                                  \
  if (!result.ok()) return result.status();              \
  lhs = std::move(result).value()
// NOLINTEND(bugprone-macro-parentheses)
#define KVTIER_CONCAT_(a, b) KVTIER_CONCAT_INNER_(a, b)
#define KVTIER_CONCAT_INNER_(a, b) a##b
