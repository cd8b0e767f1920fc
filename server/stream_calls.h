// The gRPC side of StreamGuard: how a streaming handler takes its slot and
// what it answers when the watchdog or the client ended the stream.
#pragma once

#include <grpcpp/grpcpp.h>

#include <string>

#include "server/call_gate.h"
#include "server/stream_guard.h"

namespace kvtier {

// A slot for a streaming call of `tenant`; the watchdog cancels it through
// `ctx`, which outlives the slot (the handler holds both).
inline Result<StreamGuard::Slot> AdmitStream(CallGate& gate, grpc::ServerContext* ctx,
                                             const std::string& tenant) {
  return gate.streams().Admit(tenant, [ctx] { ctx->TryCancel(); });
}

inline grpc::Status IdleCancelled(const StreamGuard& streams) {
  return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                      "the stream waited on its client for more than " +
                          std::to_string(streams.limits().idle_ms) + " ms and was cancelled");
}

// What a handler answers when a Read or Write on its stream failed.
inline grpc::Status ClientGone(const StreamGuard::Slot& slot, const StreamGuard& streams) {
  return slot.idle_cancelled() ? IdleCancelled(streams)
                               : grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
}

}  // namespace kvtier
