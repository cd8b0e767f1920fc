// A request whose bytes are not a valid protobuf message of its method gets
// INVALID_ARGUMENT naming the method, not gRPC's default of INTERNAL with an
// empty message (which reads as a bug in the daemon, not in the client).
//
// gRPC decodes a unary (or server-streaming) request before any handler
// runs, so no handler can answer for it; this server interceptor sees the
// failed decode (no message after POST_RECV_MESSAGE) and rewrites the status
// the call is about to send. A client-streaming call's bad message ends its
// stream, and its handler says what it was missing.
#pragma once

#include <grpcpp/support/server_interceptor.h>

#include <memory>
#include <vector>

namespace kvtier {

// The interceptor creators to give grpc::ServerBuilder.
std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
MalformedRequestInterceptors();

}  // namespace kvtier
