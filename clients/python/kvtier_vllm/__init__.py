"""kvtier_vllm: a vLLM KV connector over kvtierd (docs/vllm.md).

vLLM loads it with

    --kv-transfer-config '{"kv_connector": "KvtierConnector",
                           "kv_connector_module_path": "kvtier_vllm",
                           "kv_role": "kv_both",
                           "kv_connector_extra_config": {"addr": "127.0.0.1:50051"}}'

The vLLM-facing class (connector.py) is a thin adapter; what it does is in
plain Python and numpy, importable without torch or vLLM:
  block_layout  how vLLM's paged KV maps onto kvtier blocks, and a block's bytes
  scheduler     lookups, leases and each step's load/save plan
  worker        loading into and publishing from one TP rank's paged KV
  config        kv_connector_extra_config and the namespace of every call
  ttl           TTL classes
KvtierConnector is imported on first use, so importing this package does
not import vLLM.
"""
from .block_layout import LAYOUT_VERSION, BlockMapping, BlockSizeMismatch, CpuPagedKv
from .config import ConfigError, ConnectorConfig, EngineNamespace
from .scheduler import KvtierScheduler, RequestInfo, ScheduledRequest
from .ttl import TtlClasses, UnknownTtlClass
from .worker import KvtierWorker

# KvtierConnector is left out: a star import must not import vLLM.
__all__ = [
    "LAYOUT_VERSION", "BlockMapping", "BlockSizeMismatch", "CpuPagedKv",
    "ConfigError", "ConnectorConfig", "EngineNamespace", "KvtierScheduler", "RequestInfo",
    "ScheduledRequest", "TtlClasses", "UnknownTtlClass", "KvtierWorker",
]


def __getattr__(name):
    if name == "KvtierConnector":
        from .connector import KvtierConnector
        return KvtierConnector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
