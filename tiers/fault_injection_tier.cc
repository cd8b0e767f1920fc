#include "tiers/fault_injection_tier.h"

#include <functional>

namespace kvtier {

void FaultInjectionTier::FailWrites(Status fault, int count) {
  std::lock_guard<std::mutex> lock(mu_);
  write_fault_ = {std::move(fault), count};
}

void FaultInjectionTier::FailReads(Status fault, int count) {
  std::lock_guard<std::mutex> lock(mu_);
  read_fault_ = {std::move(fault), count};
}

void FaultInjectionTier::Clear() {
  std::lock_guard<std::mutex> lock(mu_);
  write_fault_ = {};
  read_fault_ = {};
}

std::optional<Status> FaultInjectionTier::Take(Fault& f) {
  std::lock_guard<std::mutex> lock(mu_);
  if (f.status.ok() || f.remaining == 0) return std::nullopt;
  if (f.remaining > 0) --f.remaining;
  ++injected_;
  return f.status;
}

TierInfo FaultInjectionTier::Info() const {
  TierInfo info = base_->Info();
  info.io_errors += injected_.load();
  return info;
}

// Each op either fails here or goes to the base tier; results keep op order.
template <typename Op, typename Submit>
static void Split(std::span<const Op> ops, IoCallback done, Submit&& submit,
                  const std::function<std::optional<Status>()>& take) {
  std::vector<IoResult> results(ops.size());
  std::vector<Op> pass;
  std::vector<size_t> where;
  for (size_t i = 0; i < ops.size(); ++i) {
    if (std::optional<Status> fault = take()) {
      results[i].status = *fault;
    } else {
      pass.push_back(ops[i]);
      where.push_back(i);
    }
  }
  if (pass.empty()) {
    done(std::move(results));
    return;
  }
  submit(pass, [results = std::move(results), where = std::move(where),
                done = std::move(done)](std::vector<IoResult> r) mutable {
    for (size_t j = 0; j < r.size(); ++j) results[where[j]] = std::move(r[j]);
    done(std::move(results));
  });
}

void FaultInjectionTier::Write(std::span<const WriteOp> ops, IoCallback done) {
  Split(
      ops, std::move(done),
      [&](std::vector<WriteOp>& pass, IoCallback cb) { base_->Write(pass, std::move(cb)); },
      [&] { return Take(write_fault_); });
}

void FaultInjectionTier::Read(std::span<const ReadOp> ops, IoCallback done) {
  Split(
      ops, std::move(done),
      [&](std::vector<ReadOp>& pass, IoCallback cb) { base_->Read(pass, std::move(cb)); },
      [&] { return Take(read_fault_); });
}

}  // namespace kvtier
