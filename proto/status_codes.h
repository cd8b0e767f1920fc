// Mapping between kvtier's Status and gRPC status codes, both ways.
#pragma once

#include <grpcpp/support/status.h>

#include "common/status.h"

namespace kvtier {

// kNotFound -> NOT_FOUND, kInvalidArgument -> INVALID_ARGUMENT,
// kResourceExhausted -> RESOURCE_EXHAUSTED, kRetry -> FAILED_PRECONDITION,
// kIOError -> INTERNAL, kCorruption -> DATA_LOSS, kUnavailable -> UNAVAILABLE,
// kPermissionDenied -> PERMISSION_DENIED.
grpc::Status ToGrpcStatus(const Status& s);

// The inverse; codes without a kvtier twin (UNAUTHENTICATED, DEADLINE_EXCEEDED,
// CANCELLED, ...) become kUnavailable or kPermissionDenied, and the message is
// prefixed with the gRPC code's name so nothing is lost.
Status FromGrpcStatus(const grpc::Status& s);

// "INVALID_ARGUMENT", "NOT_FOUND", ...
const char* GrpcCodeName(grpc::StatusCode code);

}  // namespace kvtier
