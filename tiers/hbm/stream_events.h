// StreamEvents: events that mark how far a GPU stream has got, so the HBM
// tier can tell when a copy is done (on the host) or make other work wait for
// it (on the GPU). Internal to tiers/hbm.
//
// Events are recycled: an EventRef goes back to the pool when its last
// reference drops, and the pool destroys them when it goes. Every EventRef
// must therefore be dropped before the StreamEvents that made it.
//
// Thread-safe: every method may be called from any thread.
#pragma once

#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "common/status.h"
#include "kernels/device.h"
#include "tiers/hbm/hbm_backend.h"

namespace kvtier {

// An event handle from StreamEvents (get() is the backend's handle).
using EventRef = std::shared_ptr<void>;

class StreamEvents {
 public:
  explicit StreamEvents(HbmBackend& backend) : backend_(backend) {}
  ~StreamEvents();
  StreamEvents(const StreamEvents&) = delete;
  StreamEvents& operator=(const StreamEvents&) = delete;

  // An event recorded on `stream` now. Null (after waiting for the stream on
  // the host) when no event can be had, so what waits for it still comes in
  // order; an error only when that wait fails too.
  Result<EventRef> Mark(GpuStream stream);

  // Makes work enqueued on `stream` from now on wait for `events` (none may
  // be null); on the host for any the GPU cannot be told to wait for.
  Status OrderAfter(GpuStream stream, std::span<const EventRef> events);

 private:
  // An event not recorded since it was last handed out.
  Result<EventRef> Get();

  HbmBackend& backend_;
  std::mutex mu_;
  std::vector<void*> free_;  // guarded by mu_
};

}  // namespace kvtier
