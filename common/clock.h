// Clock: where kvtier reads the time. Passed in, never read from a global, so
// tests drive expiry and recency with a ManualClock.
//
// Times are milliseconds since the Unix epoch (wall time: expiry times are
// stored on disk and must mean the same after a restart).
#pragma once

#include <atomic>
#include <cstdint>

namespace kvtier {

class Clock {
 public:
  virtual ~Clock() = default;
  // Milliseconds since the Unix epoch. Thread-safe.
  virtual int64_t NowMs() const = 0;
};

// The process-wide system clock (std::chrono::system_clock). Never null.
Clock* SystemClock();

// A clock that moves only when told to. Thread-safe.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(int64_t start_ms = 1'700'000'000'000) : now_ms_(start_ms) {}
  int64_t NowMs() const override { return now_ms_.load(std::memory_order_relaxed); }
  void AdvanceMs(int64_t delta_ms) { now_ms_.fetch_add(delta_ms, std::memory_order_relaxed); }
  void SetMs(int64_t now_ms) { now_ms_.store(now_ms, std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> now_ms_;
};

// Expiry value meaning "never expires".
inline constexpr int64_t kNoExpiry = INT64_MAX;

}  // namespace kvtier
