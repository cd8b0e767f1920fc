"""The connector's settings (vLLM's kv_connector_extra_config) and the
namespace every kvtierd call carries.

Keys of kv_connector_extra_config (all optional but addr):

| key            | meaning                                                        |
|----------------|----------------------------------------------------------------|
| addr           | kvtierd's gRPC address, host:port ("127.0.0.1:50051")          |
| api_key        | the tenant's API key (else $KVTIER_API_KEY; none if unset)     |
| block_tokens   | kvtier's block size; a multiple of vLLM's (default: vLLM's)    |
| lease_ms       | how long a lookup pins its hit run for the load (30000)        |
| shm_bytes      | same-host shared-memory region per worker; 0 = gRPC only (256 MiB) |
| ttl_class      | the class of requests that name none ("5m")                    |
| ttl_classes    | {"name": seconds}: replaces kvtier's classes 5m and 1h         |
| model_id       | the namespace's model (default: vLLM's model name or path)     |
| model_revision | the namespace's revision (default: vLLM's --revision or "")    |
| cache_salt     | the engine's salt within its tenant ("")                       |
| timeout_s      | per-call deadline of loads and saves, seconds (30)             |
| lookup_timeout_s | deadline of a lookup or lease release, seconds (1): they run on vLLM's scheduler thread |

Unknown keys are refused, so a misspelt setting is never silently ignored.
"""
import json
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from kvtier import Namespace

from .block_layout import LAYOUT_VERSION
from .ttl import DEFAULT_CLASS, TtlClasses

DEFAULT_ADDR = "127.0.0.1:50051"
DEFAULT_LEASE_MS = 30000
DEFAULT_SHM_BYTES = 256 << 20
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_LOOKUP_TIMEOUT_S = 1.0

_KNOWN_KEYS = {"addr", "api_key", "block_tokens", "lease_ms", "shm_bytes", "ttl_class",
               "ttl_classes", "model_id", "model_revision", "cache_salt", "timeout_s",
               "lookup_timeout_s"}

# vLLM's KV cache dtypes (torch dtype names) -> kvtier's kv_dtype.
KV_DTYPES = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}


class ConfigError(ValueError):
    """kv_connector_extra_config is wrong; the message names the key."""


def _int_setting(extra, key, default, minimum):
    value = extra.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"kv_connector_extra_config {key!r} must be an integer >= {minimum}, "
                          f"not {value!r}")
    return value


def _seconds_setting(extra, key, default):
    value = extra.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
            or value == float("inf"):
        raise ConfigError(f"kv_connector_extra_config {key!r} must be a positive number of "
                          f"seconds, not {value!r}")
    return float(value)


@dataclass(frozen=True)
class ConnectorConfig:
    addr: str = DEFAULT_ADDR
    api_key: Optional[str] = None
    block_tokens: Optional[int] = None  # None: vLLM's block size
    lease_ms: int = DEFAULT_LEASE_MS
    shm_bytes: int = DEFAULT_SHM_BYTES
    ttl: TtlClasses = field(default_factory=TtlClasses)
    model_id: Optional[str] = None      # None: vLLM's model
    model_revision: Optional[str] = None
    cache_salt: str = ""
    timeout_s: float = DEFAULT_TIMEOUT_S
    lookup_timeout_s: float = DEFAULT_LOOKUP_TIMEOUT_S

    @classmethod
    def from_extra_config(cls, extra: Optional[Mapping[str, Any]],
                          environ: Mapping[str, str] = os.environ) -> "ConnectorConfig":
        extra = dict(extra or {})
        unknown = sorted(set(extra) - _KNOWN_KEYS)
        if unknown:
            raise ConfigError(f"kv_connector_extra_config has unknown keys {unknown}; the "
                              f"connector reads {sorted(_KNOWN_KEYS)}")
        addr = extra.get("addr", DEFAULT_ADDR)
        if not isinstance(addr, str) or ":" not in addr:
            raise ConfigError(f"kv_connector_extra_config 'addr' must be host:port, not {addr!r}")
        block_tokens = extra.get("block_tokens")
        if block_tokens is not None:
            block_tokens = _int_setting(extra, "block_tokens", None, 1)
        timeout_s = _seconds_setting(extra, "timeout_s", DEFAULT_TIMEOUT_S)
        lookup_timeout_s = _seconds_setting(extra, "lookup_timeout_s", DEFAULT_LOOKUP_TIMEOUT_S)
        for key in ("api_key", "model_id", "model_revision", "cache_salt", "ttl_class"):
            if key in extra and not isinstance(extra[key], str):
                raise ConfigError(f"kv_connector_extra_config {key!r} must be a string, "
                                  f"not {extra[key]!r}")
        try:
            ttl = TtlClasses(extra.get("ttl_classes"), extra.get("ttl_class", DEFAULT_CLASS))
        except ValueError as e:
            raise ConfigError(f"kv_connector_extra_config 'ttl_class'/'ttl_classes': {e}") from None
        return cls(
            addr=addr,
            api_key=extra.get("api_key") or environ.get("KVTIER_API_KEY") or None,
            block_tokens=block_tokens,
            lease_ms=_int_setting(extra, "lease_ms", DEFAULT_LEASE_MS, 1),
            shm_bytes=_int_setting(extra, "shm_bytes", DEFAULT_SHM_BYTES, 0),
            ttl=ttl,
            model_id=extra.get("model_id"),
            model_revision=extra.get("model_revision"),
            cache_salt=extra.get("cache_salt", ""),
            timeout_s=timeout_s,
            lookup_timeout_s=lookup_timeout_s,
        )


@dataclass(frozen=True)
class EngineNamespace:
    """The namespace fields fixed for one engine; for_rank() adds a TP rank
    and a request's own cache salt. Every kvtierd call names one."""
    model_id: str
    model_revision: str
    kv_dtype: str       # "f32" | "f16" | "bf16"
    block_tokens: int   # kvtier's block size
    tp_size: int
    cache_salt: str = ""  # the engine's (tenant-level) salt

    def __post_init__(self):
        if self.kv_dtype not in KV_DTYPES.values():
            raise ConfigError(f"kv_dtype {self.kv_dtype!r} is not one of f32, f16, bf16")
        if self.tp_size < 1:
            raise ConfigError(f"tp_size must be >= 1, not {self.tp_size}")

    def for_rank(self, tp_rank: int, request_salt: Optional[str] = None) -> Namespace:
        """The namespace of TP rank `tp_rank` for a request with vLLM's
        cache_salt `request_salt`: requests with different salts never
        share blocks, as in vLLM's own prefix cache."""
        if not 0 <= tp_rank < self.tp_size:
            raise ValueError(f"tp_rank {tp_rank} is outside 0..{self.tp_size - 1}")
        salt = self.cache_salt
        if request_salt:
            # Unambiguous: ("a/", "b") and ("a", "/b") must not meet.
            salt = json.dumps([self.cache_salt, request_salt])
        return Namespace(model_id=self.model_id, model_revision=self.model_revision,
                         kv_dtype=self.kv_dtype, block_tokens=self.block_tokens,
                         layout_version=LAYOUT_VERSION, tp_rank=tp_rank, tp_size=self.tp_size,
                         cache_salt=salt)
