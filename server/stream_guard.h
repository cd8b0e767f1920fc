// StreamGuard: admission and an idle watchdog for kvtierd's long calls.
//
// kvtierd's gRPC server is synchronous: every call in a handler holds one of
// a bounded set of server threads (--max-threads), and a streaming call
// (Put, Get, Generate) holds its thread for as long as the client keeps the
// stream open. Without a bound, a few clients that open streams and then
// stall would hold every thread, and every other call would fail with
// "Server Threadpool Exhausted". So a streaming call first takes a slot:
//   - at most `max_streams` streams run daemon-wide (below the thread count:
//     the rest is left to short unary calls), and at most
//     `max_tenant_streams` for one tenant, so one tenant cannot take them
//     all; beyond either, the call is refused at once with
//     kResourceExhausted (the client retries later);
//   - a stream that waits on its client (a Read of the next message, a Write
//     the client does not take) for longer than `idle_ms` is cancelled by a
//     watchdog thread, which frees its thread and what it holds; waiting on
//     the daemon itself (the engine computing a token) is never idle.
// Health does not go through here: it is served on gRPC's callback threads,
// which no stream can hold.
//
// Thread-safe.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/clock.h"
#include "common/status.h"

namespace kvtier {

struct StreamLimits {
  int max_streams = 768;         // daemon-wide; at least 1
  int max_tenant_streams = 512;  // one tenant's; in [1, max_streams]
  int64_t idle_ms = 30000;       // a stream waiting on its client longer is cancelled
};

struct StreamStats {
  int open = 0;
  uint64_t admitted = 0;
  uint64_t refused = 0;         // over max_streams or max_tenant_streams
  uint64_t idle_cancelled = 0;  // cancelled by the watchdog
};

class StreamGuard {
  struct Entry {
    std::string tenant;
    std::function<void()> cancel;
    std::atomic<int64_t> waiting_since_ms{0};  // 0: not waiting on the client
    std::atomic<bool> cancelled{false};
  };

 public:
  // One admitted stream; releases its slot when destroyed.
  class Slot {
   public:
    Slot(Slot&& o) noexcept : guard_(o.guard_), entry_(o.entry_) { o.guard_ = nullptr; }
    Slot& operator=(Slot&&) = delete;
    Slot(const Slot&) = delete;
    ~Slot();

    // Runs `wait` (a Read or Write on the stream) as time spent waiting on
    // the client, which the watchdog measures, and returns what it returns.
    template <class Fn>
    auto OnClient(Fn&& wait) {
      entry_->waiting_since_ms.store(std::max<int64_t>(1, guard_->clock_->NowMs()));
      auto result = wait();
      entry_->waiting_since_ms.store(0);
      return result;
    }
    // True once the watchdog has cancelled the stream for idling.
    bool idle_cancelled() const { return entry_->cancelled.load(); }

   private:
    friend class StreamGuard;
    Slot(StreamGuard* guard, std::list<Entry>::iterator entry) : guard_(guard), entry_(entry) {}
    StreamGuard* guard_;
    std::list<Entry>::iterator entry_;
  };

  explicit StreamGuard(const StreamLimits& limits = {}, Clock* clock = SystemClock());
  ~StreamGuard();
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

  // Changes the limits (before serving). kInvalidArgument when out of range.
  Status Configure(const StreamLimits& limits);
  const StreamLimits& limits() const { return limits_; }

  // Which limit refused a stream.
  enum class Limit { kDaemon, kTenant };

  // A slot for a stream of `tenant`, or kResourceExhausted naming the limit
  // (and setting *refused_by when given: the HTTP dialects answer a full
  // daemon as overloaded and a tenant at its limit as rate limited).
  // `cancel` ends the stream (ServerContext::TryCancel); the watchdog calls
  // it, at most once, while the slot is held.
  Result<Slot> Admit(const std::string& tenant, std::function<void()> cancel,
                     Limit* refused_by = nullptr);

  StreamStats stats() const;
  // Runs one watchdog pass now (tests with a ManualClock).
  void CheckIdle();

 private:
  void Release(std::list<Entry>::iterator entry);
  void Watch();

  StreamLimits limits_;
  Clock* const clock_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::list<Entry> entries_;            // GUARDED_BY(mu_)
  std::map<std::string, int> tenants_;  // GUARDED_BY(mu_); open streams by tenant
  StreamStats stats_;                   // GUARDED_BY(mu_)
  bool stop_ = false;                   // GUARDED_BY(mu_)
  std::thread watchdog_;
};

}  // namespace kvtier
