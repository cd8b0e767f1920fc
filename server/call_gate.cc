#include "server/call_gate.h"

namespace kvtier {

std::optional<CallGate::Pass> CallGate::Enter() {
  std::lock_guard<std::mutex> lock(mu_);
  if (draining_) return std::nullopt;
  ++running_;
  return Pass(this);
}

void CallGate::Leave() {
  std::lock_guard<std::mutex> lock(mu_);
  if (--running_ == 0) idle_.notify_all();
}

int CallGate::Drain(std::chrono::milliseconds grace) {
  std::unique_lock<std::mutex> lock(mu_);
  draining_ = true;
  idle_.wait_for(lock, grace, [&] { return running_ == 0; });
  return running_;
}

int CallGate::running() const {
  std::lock_guard<std::mutex> lock(mu_);
  return running_;
}

}  // namespace kvtier
