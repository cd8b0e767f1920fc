"""kvtier: a Python client of kvtierd's block API (docs/block-api.md).

    from kvtier import KvtierClient, Namespace, PutBlock
    with KvtierClient("127.0.0.1:50051", api_key="...") as c:
        c.put([PutBlock(key=k, payload=b"...")])
        [r] = c.get([k])

The gRPC stubs are generated from proto/kvtier.proto on first import
(kvtier/_proto.py); `kvtier.pb2` and `kvtier.pb2_grpc` are those modules.
"""
from . import errors
from ._proto import pb2, pb2_grpc
from .blocks import (KEY_BYTES, BlockInfo, GetResult, LookupResult, Namespace, PutBlock,
                     PutResult)
from .client import KvtierClient
from .shm import ShmRegion

__all__ = [
    "KvtierClient", "Namespace", "PutBlock", "ShmRegion", "errors", "BlockInfo", "GetResult",
    "LookupResult", "PutResult", "KEY_BYTES", "pb2", "pb2_grpc",
]
