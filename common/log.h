// Structured logs: one line per event on stderr,
//   2026-11-22T10:00:00.123Z INFO kvtierd listening addr=127.0.0.1:50051
// Thread-safe. Fields are appended as key=value; values with spaces are quoted.
#pragma once

#include <sstream>
#include <string>
#include <string_view>

namespace kvtier {

enum class LogLevel { kDebug, kInfo, kWarn, kError };

void SetMinLogLevel(LogLevel level);
void LogLine(LogLevel level, std::string_view event, std::string_view fields);

// Builds the key=value fields of one log line.
class LogFields {
 public:
  template <typename T>
  LogFields& Add(std::string_view key, const T& value) {
    std::ostringstream v;
    v << value;
    Append(key, v.str());
    return *this;
  }
  const std::string& str() const { return s_; }

 private:
  void Append(std::string_view key, const std::string& value);
  std::string s_;
};

inline void LogInfo(std::string_view event, const LogFields& f = {}) {
  LogLine(LogLevel::kInfo, event, f.str());
}
inline void LogWarn(std::string_view event, const LogFields& f = {}) {
  LogLine(LogLevel::kWarn, event, f.str());
}
inline void LogError(std::string_view event, const LogFields& f = {}) {
  LogLine(LogLevel::kError, event, f.str());
}

}  // namespace kvtier
