// What the BlockStore service's files share (block_store_service.cc: the
// one-block calls; block_batch.cc: the batched calls for engines): limits of
// a message and the checks every call makes of keys and token ids.
#pragma once

#include <google/protobuf/repeated_field.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <span>
#include <string>
#include <vector>

#include "common/block_key.h"
#include "common/status.h"
#include "common/token.h"
#include "server/payload_budget.h"

namespace kvtier {
namespace block_store {

inline constexpr uint32_t kDefaultChunkBytes = 1 << 20;
inline constexpr uint32_t kMaxChunkBytes = 4 << 20;
// Smaller chunks are raised to this: one message per few bytes would cost the
// daemon a message's overhead per byte.
inline constexpr uint32_t kMinChunkBytes = 64 << 10;
// A Put's buffer grows by at least this much at a time (reserved from the
// payload budget as the bytes arrive).
inline constexpr uint64_t kPutGrowthBytes = 1 << 20;

inline grpc::Status ShuttingDown() {
  return grpc::Status(grpc::StatusCode::UNAVAILABLE, "kvtierd is shutting down");
}
inline grpc::Status Invalid(const std::string& msg) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, msg);
}
inline grpc::Status Exhausted(const std::string& msg) {
  return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, msg);
}

inline Result<BlockKey> ParseKey(const std::string& bytes, const std::string& what) {
  std::optional<BlockKey> k = BlockKey::FromBytes(bytes);
  if (!k) {
    return Status::InvalidArgument(what + " must be 16 bytes, got " + std::to_string(bytes.size()));
  }
  return *k;
}

inline Status CheckTokens(const google::protobuf::RepeatedField<int32_t>& ids, size_t max_tokens) {
  if (static_cast<size_t>(ids.size()) > max_tokens) {
    return Status::ResourceExhausted(std::to_string(ids.size()) +
                                     " token ids exceed the limit of " +
                                     std::to_string(max_tokens));
  }
  for (int i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0) {
      return Status::InvalidArgument("token_ids[" + std::to_string(i) +
                                     "] = " + std::to_string(ids[i]) + " is negative");
    }
  }
  return Status::Ok();
}

// The payload bytes per data message a Get or BatchGet asked for:
// kInvalidArgument over kMaxChunkBytes; 0 is kDefaultChunkBytes, less than
// kMinChunkBytes is raised to it.
inline Result<uint32_t> ChunkBytes(uint32_t requested) {
  if (requested > kMaxChunkBytes) {
    return Status::InvalidArgument("chunk_bytes " + std::to_string(requested) + " exceeds " +
                                   std::to_string(kMaxChunkBytes));
  }
  return requested == 0 ? kDefaultChunkBytes : std::max(requested, kMinChunkBytes);
}

// Appends a data message to a payload of `size` declared bytes, reserving
// the bytes from `hold` as they arrive (growing it geometrically, so a
// stream that declares a large block and sends nothing holds nothing).
// False when the tenant's budget is spent.
inline bool AppendWithinBudget(PayloadBudget::Hold& hold, uint64_t size, const std::string& data,
                               std::vector<std::byte>* payload) {
  const uint64_t need = payload->size() + data.size();
  if (need > hold.bytes()) {
    const uint64_t grow = std::min<uint64_t>(
        size, std::max<uint64_t>(need, std::max<uint64_t>(2 * hold.bytes(), kPutGrowthBytes)));
    if (!hold.GrowTo(grow) && !hold.GrowTo(need)) return false;
    payload->reserve(hold.bytes());
  }
  const auto* p = reinterpret_cast<const std::byte*>(data.data());
  payload->insert(payload->end(), p, p + data.size());
  return true;
}

inline grpc::Status BufferFull() {
  return Exhausted("the daemon is buffering too many payloads for this tenant; retry later");
}

inline std::span<const TokenId> Span(const google::protobuf::RepeatedField<int32_t>& ids) {
  return {ids.data(), static_cast<size_t>(ids.size())};
}

}  // namespace block_store
}  // namespace kvtier
