#include "tiers/tier.h"

#include <future>

namespace kvtier {
namespace {

template <typename Op, typename Submit>
std::vector<IoResult> Wait(std::span<const Op> ops, Submit submit) {
  std::promise<std::vector<IoResult>> promise;
  auto future = promise.get_future();
  submit(ops, [&promise](std::vector<IoResult> r) { promise.set_value(std::move(r)); });
  return future.get();
}

}  // namespace

std::vector<IoResult> WriteSync(Tier& tier, std::span<const WriteOp> ops) {
  return Wait(ops, [&](auto o, IoCallback cb) { tier.Write(o, std::move(cb)); });
}

std::vector<IoResult> ReadSync(Tier& tier, std::span<const ReadOp> ops) {
  return Wait(ops, [&](auto o, IoCallback cb) { tier.Read(o, std::move(cb)); });
}

Status WriteOne(Tier& tier, const BlockKey& key, std::span<const std::byte> payload,
                int64_t expiry_ms) {
  WriteOp op{key, payload, expiry_ms};
  return WriteSync(tier, std::span(&op, 1))[0].status;
}

Result<uint64_t> ReadOne(Tier& tier, const BlockKey& key, std::span<std::byte> dest,
                         std::optional<uint64_t>* payload_xxh3) {
  ReadOp op{key, dest};
  IoResult r = ReadSync(tier, std::span(&op, 1))[0];
  if (!r.status.ok()) return r.status;
  if (payload_xxh3 != nullptr) *payload_xxh3 = r.payload_xxh3;
  return r.bytes;
}

}  // namespace kvtier
