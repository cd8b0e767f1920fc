// CallGate: counts the calls a server is running, so shutdown can drain them.
//
// Every RPC handler takes a Pass first; once Drain() has begun, no new pass is
// given (the handler answers UNAVAILABLE) and Drain waits for the running
// calls only. gRPC's own Shutdown(deadline) also waits for idle client
// channels to close, so a daemon whose serving engines keep channels open
// would always sit out the whole grace period; with the gate, kvtierd drains
// what is running and then shuts the server down at once. Streaming calls
// also take a slot of the gate's StreamGuard (server/stream_guard.h), which
// bounds how many run and cancels those whose client stalls. Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>

#include "server/stream_guard.h"

namespace kvtier {

class CallGate {
 public:
  class Pass {
   public:
    Pass(Pass&& o) noexcept : gate_(o.gate_) { o.gate_ = nullptr; }
    Pass& operator=(Pass&&) = delete;
    Pass(const Pass&) = delete;
    ~Pass() {
      if (gate_) gate_->Leave();
    }

   private:
    friend class CallGate;
    explicit Pass(CallGate* gate) : gate_(gate) {}
    CallGate* gate_;
  };

  // A pass for a new call, or nullopt once draining has begun.
  std::optional<Pass> Enter();
  // Refuses new calls from now on and waits until the running ones finish or
  // `grace` passes. Returns how many calls were still running at the end.
  int Drain(std::chrono::milliseconds grace);
  int running() const;
  // Admission and the idle watchdog of streaming calls.
  StreamGuard& streams() { return streams_; }

 private:
  void Leave();

  mutable std::mutex mu_;
  std::condition_variable idle_;
  int running_ = 0;        // guarded by mu_
  bool draining_ = false;  // guarded by mu_
  StreamGuard streams_;
};

}  // namespace kvtier
