#include "tiers/hbm/stream_events.h"

namespace kvtier {

StreamEvents::~StreamEvents() {
  for (void* e : free_) backend_.DestroyEvent(e);
}

Result<EventRef> StreamEvents::Mark(GpuStream stream) {
  Result<EventRef> ev = Get();
  if (ev.ok() && backend_.RecordEvent(ev->get(), stream).ok()) return ev;
  KVTIER_RETURN_IF_ERROR(backend_.SynchronizeStream(stream));
  return EventRef();
}

Status StreamEvents::OrderAfter(GpuStream stream, std::span<const EventRef> events) {
  for (const EventRef& event : events) {
    if (backend_.StreamWaitEvent(stream, event.get()).ok()) continue;
    KVTIER_RETURN_IF_ERROR(backend_.WaitEvent(event.get()));
  }
  return Status::Ok();
}

Result<EventRef> StreamEvents::Get() {
  void* e = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!free_.empty()) {
      e = free_.back();
      free_.pop_back();
    }
  }
  if (e == nullptr) {
    KVTIER_ASSIGN_OR_RETURN(e, backend_.CreateEvent());
  }
  return EventRef(e, [this](void* ev) {
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(ev);
  });
}

}  // namespace kvtier
