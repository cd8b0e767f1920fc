#include "tiers/hbm/completion_queue.h"

namespace kvtier {

CompletionQueue::CompletionQueue(HbmBackend& backend)
    : backend_(backend), thread_([this] { Run(); }) {}

CompletionQueue::~CompletionQueue() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  thread_.join();
}

void CompletionQueue::Push(EventRef event, std::function<void(Status)> then) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    items_.push_back({std::move(event), std::move(then)});
    ++pushed_;
  }
  work_cv_.notify_one();
}

void CompletionQueue::WaitIdle() {
  std::unique_lock<std::mutex> lock(mu_);
  const uint64_t target = pushed_;
  idle_cv_.wait(lock, [&] { return done_ >= target; });
}

void CompletionQueue::Run() {
  for (;;) {
    Item item;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [&] { return stop_ || !items_.empty(); });
      if (items_.empty()) return;
      item = std::move(items_.front());
      items_.pop_front();
    }
    const Status s = item.event ? backend_.WaitEvent(item.event.get()) : Status::Ok();
    item.then(s);
    item = Item{};  // what it held (extents, events) is released before idle
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++done_;
    }
    idle_cv_.notify_all();
  }
}

}  // namespace kvtier
