// CompletionQueue: a thread that waits for stream events in the order they
// were pushed and runs, after each, what the HBM tier does once the copies
// before it are done (publish blocks, run a Tier callback, free extents).
// Internal to tiers/hbm. User callbacks so run on a thread of the tier's,
// never inside a CUDA host callback.
//
// Thread-safe. Destruction runs every item pushed before it, so each `then`
// runs exactly once.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "common/status.h"
#include "tiers/hbm/hbm_backend.h"
#include "tiers/hbm/stream_events.h"

namespace kvtier {

class CompletionQueue {
 public:
  explicit CompletionQueue(HbmBackend& backend);
  ~CompletionQueue();
  CompletionQueue(const CompletionQueue&) = delete;
  CompletionQueue& operator=(const CompletionQueue&) = delete;

  // Runs then(status of the wait) on the queue's thread once `event` (null:
  // nothing to wait for) has completed, after every item pushed before. What
  // the item holds is released before WaitIdle can see it done.
  void Push(EventRef event, std::function<void(Status)> then);

  // Blocks until every item pushed before the call has run. Not from the
  // queue's own thread.
  void WaitIdle();

 private:
  struct Item {
    EventRef event;
    std::function<void(Status)> then;
  };

  void Run();

  HbmBackend& backend_;
  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable idle_cv_;
  std::deque<Item> items_;  // guarded by mu_
  uint64_t pushed_ = 0;     // guarded by mu_
  uint64_t done_ = 0;       // guarded by mu_
  bool stop_ = false;       // guarded by mu_
  std::thread thread_;      // last: it starts running in the constructor
};

}  // namespace kvtier
