"""Typed errors of the kvtier client.

A call that fails as a whole raises the KvtierError subclass of its gRPC
status (NotFound, InvalidArgument, ...). A batched call's per-block failures
(BatchGetBlock.code, BatchPutResult.code: google.rpc codes as ints) become
the same classes, returned in the block's result instead of raised.

Each class says what the caller can do about it: InvalidArgument is a bug in
the request; Unavailable, ResourceExhausted and DeadlineExceeded may pass on
a retry; NotFound for a block means recompute it; DataLoss means bytes
arrived that do not match their checksum (they are never handed out).
"""
import grpc

__all__ = [
    "KvtierError", "NotFound", "InvalidArgument", "ResourceExhausted", "Unauthenticated",
    "PermissionDenied", "FailedPrecondition", "Unavailable", "DataLoss", "DeadlineExceeded",
    "Internal", "Unimplemented", "Cancelled", "from_code", "from_rpc_error",
]


class KvtierError(Exception):
    """A failed kvtierd call (or block): its grpc.StatusCode and why."""

    def __init__(self, code, message=""):
        if not isinstance(code, grpc.StatusCode):
            raise TypeError(f"code must be a grpc.StatusCode, not {code!r}")
        super().__init__(f"{code.name}: {message}" if message else code.name)
        self.code = code
        self.message = message


class _Coded(KvtierError):
    """A subclass fixed to one code: NotFound("why") or NotFound(code, "why")."""

    CODE = grpc.StatusCode.UNKNOWN

    def __init__(self, *args):
        if args and isinstance(args[0], grpc.StatusCode):
            code, *rest = args
        else:
            code, rest = self.CODE, list(args)
        if len(rest) > 1:
            raise TypeError(f"{type(self).__name__}([code,] message)")
        super().__init__(code, rest[0] if rest else "")


class NotFound(_Coded):
    """No such block (never stored, evicted, expired or another tenant's), lease or region."""
    CODE = grpc.StatusCode.NOT_FOUND


class InvalidArgument(_Coded):
    """The request is malformed: a key not 16 bytes, a bad namespace, a lease too long, ..."""
    CODE = grpc.StatusCode.INVALID_ARGUMENT


class ResourceExhausted(_Coded):
    """A limit was reached (block size, leases, shared memory, streams); retry later or ask less."""
    CODE = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unauthenticated(_Coded):
    """The API key is missing or not valid."""
    CODE = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(_Coded):
    """The API key may not make this call."""
    CODE = grpc.StatusCode.PERMISSION_DENIED


class FailedPrecondition(_Coded):
    """Not now: e.g. deleting a block a lease or a request has pinned."""
    CODE = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(_Coded):
    """kvtierd cannot be reached, is shutting down, or refused a shared-memory region."""
    CODE = grpc.StatusCode.UNAVAILABLE


class DataLoss(_Coded):
    """Bytes arrived that do not match their XXH3-64 checksum, or the stream broke its protocol."""
    CODE = grpc.StatusCode.DATA_LOSS


class DeadlineExceeded(_Coded):
    """The call ran past the client's timeout."""
    CODE = grpc.StatusCode.DEADLINE_EXCEEDED


class Internal(_Coded):
    """A fault inside kvtierd."""
    CODE = grpc.StatusCode.INTERNAL


class Unimplemented(_Coded):
    """The daemon does not have this call (an older kvtierd)."""
    CODE = grpc.StatusCode.UNIMPLEMENTED


class Cancelled(_Coded):
    """The call was cancelled."""
    CODE = grpc.StatusCode.CANCELLED


_BY_CODE = {cls.CODE: cls for cls in _Coded.__subclasses__()}
_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def from_code(code, message=""):
    """The error for a grpc.StatusCode or a google.rpc code number (as in
    BatchGetBlock.code); a code without a class of its own gives KvtierError."""
    if not isinstance(code, grpc.StatusCode):
        number = int(code)
        code = _BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)
        if code.value[0] != number:
            message = f"(code {number}) {message}"
    cls = _BY_CODE.get(code)
    return cls(message) if cls is not None else KvtierError(code, message)


def from_rpc_error(error):
    """The error for a grpc.RpcError raised by a stub."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    return from_code(code or grpc.StatusCode.UNKNOWN, details or "")
