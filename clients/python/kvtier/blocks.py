"""The plain values the client takes and returns (no gRPC types in them)."""
from dataclasses import dataclass, field
from typing import List, Optional

from .errors import KvtierError

KEY_BYTES = 16  # a block key: big-endian high word, then low word


@dataclass
class Namespace:
    """Everything that makes a prefix's KV bytes differ (proto Namespace).

    Empty strings and zeros take the daemon's defaults. Blocks stored in one
    namespace are never seen from another: a TP rank, a dtype or a block size
    of its own computes (or unmasks keys to) other blocks.
    """
    model_id: str = ""
    model_revision: str = ""
    kv_dtype: str = ""        # "f32" | "f16" | "bf16"
    block_tokens: int = 0     # a power of two in [16, 1024]
    layout_version: int = 0
    tp_rank: int = 0
    tp_size: int = 0
    cache_salt: str = ""      # the client's own salt within its tenant

    def to_proto(self, pb2):
        return pb2.Namespace(
            model_id=self.model_id, model_revision=self.model_revision, kv_dtype=self.kv_dtype,
            block_tokens=self.block_tokens, layout_version=self.layout_version,
            tp_rank=self.tp_rank, tp_size=self.tp_size, cache_salt=self.cache_salt)


@dataclass
class BlockInfo:
    """Where and how a cached block is held."""
    key: bytes
    size_bytes: int
    tier: str               # "dram", "flash", ...
    expire_time_ms: int     # Unix ms; 0 = never
    payload_xxh3: int       # XXH3-64 of the payload (set by get and put)

    @classmethod
    def from_proto(cls, info):
        return cls(key=bytes(info.key), size_bytes=info.size_bytes, tier=info.tier,
                   expire_time_ms=info.expire_time_ms, payload_xxh3=info.payload_xxh3)


@dataclass
class LookupResult:
    """The longest cached run from a query's first block."""
    query_blocks: int                 # full blocks in the query
    hit_blocks: int                   # leading blocks that are cached
    hit_tokens: int                   # hit_blocks * block_tokens (0 for a query by keys)
    block_tokens: int                 # of the namespace used
    hits: List[BlockInfo] = field(default_factory=list)  # one per hit block, in order
    keys: List[bytes] = field(default_factory=list)      # with return_keys: every full block's
    lease_id: Optional[str] = None    # with lease_ms and a hit: pass it to release()
    lease_expire_time_ms: int = 0     # Unix ms; 0 without a lease


@dataclass
class PutBlock:
    """One block to store.

    Without a region, `payload` (any bytes-like object: bytes, bytearray,
    memoryview, a C-contiguous numpy array) is sent. With a region, the
    payload's bytes must already be in the region at `shm_offset`, and
    `size` says how many (or len(payload) when a payload is given); the
    client reads them there to compute the checksum.
    """
    key: bytes                         # 16 bytes
    payload: Optional[object] = None   # bytes-like
    parent_key: Optional[bytes] = None  # the previous block's key, if any
    tokens: int = 0                    # tokens the block holds (for metrics); 0 = unknown
    shm_offset: int = 0                # with a region: where the payload is
    size: Optional[int] = None         # with a region: payload bytes at shm_offset


@dataclass
class GetResult:
    """One key of a get(): its error, or its info and payload (None when the
    payload went to the region). A payload is always checksum-verified."""
    index: int                          # into the keys asked for
    error: Optional[KvtierError] = None
    info: Optional[BlockInfo] = None
    payload: Optional[bytes] = None

    @property
    def ok(self):
        return self.error is None


@dataclass
class PutResult:
    """One block of a put(): its error, or the stored block's info."""
    index: int                          # into the blocks given
    error: Optional[KvtierError] = None
    info: Optional[BlockInfo] = None

    @property
    def ok(self):
        return self.error is None
