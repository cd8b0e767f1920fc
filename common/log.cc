#include "common/log.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace kvtier {
namespace {

std::atomic<int> g_min_level{static_cast<int>(LogLevel::kInfo)};
std::mutex g_log_mu;  // guards stderr so lines never interleave

const char* LevelName(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug:
      return "DEBUG";
    case LogLevel::kInfo:
      return "INFO";
    case LogLevel::kWarn:
      return "WARN";
    case LogLevel::kError:
      return "ERROR";
  }
  return "?";
}

}  // namespace

void SetMinLogLevel(LogLevel level) { g_min_level = static_cast<int>(level); }

void LogFields::Append(std::string_view key, const std::string& value) {
  if (!s_.empty()) s_ += ' ';
  s_.append(key);
  s_ += '=';
  bool quote = value.empty() || value.find_first_of(" \t\"=") != std::string::npos;
  if (!quote) {
    s_ += value;
    return;
  }
  s_ += '"';
  for (char c : value) {
    if (c == '"' || c == '\\') s_ += '\\';
    s_ += c;
  }
  s_ += '"';
}

void LogLine(LogLevel level, std::string_view event, std::string_view fields) {
  if (static_cast<int>(level) < g_min_level.load(std::memory_order_relaxed)) return;
  using namespace std::chrono;
  auto now = system_clock::now();
  std::time_t secs = system_clock::to_time_t(now);
  int ms = static_cast<int>(duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char ts[32];
  std::strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
  std::lock_guard<std::mutex> lock(g_log_mu);
  std::fprintf(stderr, "%s.%03dZ %s %.*s%s%.*s\n", ts, ms, LevelName(level),
               static_cast<int>(event.size()), event.data(), fields.empty() ? "" : " ",
               static_cast<int>(fields.size()), fields.data());
}

}  // namespace kvtier
