"""How vLLM's paged KV maps onto kvtier blocks, and the bytes of one block.

Plain numpy, no torch and no vLLM: the connector hands in byte views of
vLLM's KV tensors, so every dtype (bf16 included) moves as bytes.

Block mapping. A kvtier block holds `kvtier_block_tokens` tokens (a power of
two in [16, 1024], the namespace's block_tokens); a vLLM block holds
`vllm_block_tokens`. kvtier's block must be a whole multiple of vLLM's:
kvtier block j is vLLM's logical blocks j*m .. j*m+m-1 of the request, with
m = kvtier_block_tokens // vllm_block_tokens. Anything else (a kvtier block
smaller than vLLM's, or not a multiple of it) is refused by BlockMapping
with the block sizes that would work.

Block payload (layout version 1). For one kvtier block of one TP rank:

    [layers][2][kv_heads][block_tokens][head_dim]   (K then V)

elements of the KV dtype, layers in model order. It is the order of
kvtier's own engine pages (docs/kernels.md), and it does not depend on
vLLM's block size, so engines with other vLLM block sizes share blocks when
their kvtier block size agrees.

vLLM's CPU attention backend (CPU_ATTN, vllm/v1/attention/backends/
cpu_attn.py in 0.32.0) keeps each layer as a [num_blocks, kv_heads,
block_size, 2 * head_dim] tensor but reads it as [num_blocks, kv_heads,
2 * block_size, head_dim]: per block and head, block_size rows of K then
block_size rows of V. CpuPagedKv views it that way, as
[num_blocks, kv_heads, 2, block_size, head_dim_bytes].
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

LAYOUT_VERSION = 1  # the payload order above; part of every block's namespace

MIN_KVTIER_BLOCK_TOKENS = 16
MAX_KVTIER_BLOCK_TOKENS = 1024


class BlockSizeMismatch(ValueError):
    """kvtier's and vLLM's block sizes cannot be mapped onto each other."""


class LayoutMismatch(ValueError):
    """A KV tensor is not laid out as this connector reads it."""


def _valid_kvtier_block_tokens(n):
    return (MIN_KVTIER_BLOCK_TOKENS <= n <= MAX_KVTIER_BLOCK_TOKENS) and (n & (n - 1)) == 0


def kvtier_block_sizes_for(vllm_block_tokens) -> List[int]:
    """The kvtier block sizes that work with a vLLM block size."""
    return [n for n in (1 << i for i in range(4, 11))
            if n % vllm_block_tokens == 0]


@dataclass(frozen=True)
class BlockMapping:
    """kvtier block j = vLLM logical blocks j*m .. j*m+m-1 of a request."""
    kvtier_block_tokens: int
    vllm_block_tokens: int

    def __post_init__(self):
        k, v = self.kvtier_block_tokens, self.vllm_block_tokens
        if not isinstance(v, int) or v <= 0:
            raise BlockSizeMismatch(f"vLLM's block size must be a positive integer, not {v!r}")
        if not isinstance(k, int) or not _valid_kvtier_block_tokens(k):
            raise BlockSizeMismatch(
                f"kvtier block_tokens must be a power of two in "
                f"[{MIN_KVTIER_BLOCK_TOKENS}, {MAX_KVTIER_BLOCK_TOKENS}], not {k!r}")
        if k % v != 0:
            fits = kvtier_block_sizes_for(v)
            hint = (f"use block_tokens {' or '.join(map(str, fits))}" if fits else
                    f"no kvtier block size is a multiple of {v}; run vLLM with "
                    f"--block-size 16, 32, 64, 128, 256, 512 or 1024")
            raise BlockSizeMismatch(
                f"kvtier block_tokens {k} is not a multiple of vLLM's block size {v}: a kvtier "
                f"block must be a whole number of vLLM blocks ({hint})")

    @property
    def vllm_blocks_per_block(self) -> int:
        return self.kvtier_block_tokens // self.vllm_block_tokens

    def full_blocks(self, num_tokens) -> int:
        """kvtier blocks wholly inside the first num_tokens tokens."""
        return num_tokens // self.kvtier_block_tokens

    def vllm_block_ids(self, block_index, request_block_ids) -> List[int]:
        """vLLM's block ids that hold kvtier block `block_index` of a request
        whose logical blocks are `request_block_ids`."""
        m = self.vllm_blocks_per_block
        ids = list(request_block_ids[block_index * m:(block_index + 1) * m])
        if len(ids) != m:
            raise IndexError(
                f"kvtier block {block_index} needs vLLM blocks {block_index * m}..{block_index * m + m - 1}"
                f" but the request has {len(request_block_ids)}")
        return ids


class CpuPagedKv:
    """One TP rank's paged KV in vLLM's CPU_ATTN layout, as byte views.

    `layers` are the layers' KV tensors in model order, each a uint8 numpy
    view of vLLM's [num_blocks, kv_heads, vllm_block_tokens, 2 * head_dim]
    tensor (so its last axis is 2 * head_dim * dtype_bytes bytes). The views
    share memory with vLLM's tensors: unpacking writes into vLLM's cache.
    Not thread-safe; vLLM calls the connector from one thread.
    """

    def __init__(self, layers: Sequence[np.ndarray], vllm_block_tokens: int, head_dim: int,
                 dtype_bytes: int):
        if not layers:
            raise LayoutMismatch("no KV layers to read")
        first = layers[0]
        if first.ndim != 4:
            raise LayoutMismatch(
                f"a CPU_ATTN layer is [num_blocks, kv_heads, block_size, 2 * head_dim]; got "
                f"shape {first.shape}")
        num_blocks, kv_heads, block_tokens, row_bytes = first.shape
        head_bytes = head_dim * dtype_bytes
        if block_tokens != vllm_block_tokens or row_bytes != 2 * head_bytes:
            raise LayoutMismatch(
                f"a layer of shape {first.shape} (bytes) is not [num_blocks, kv_heads, "
                f"{vllm_block_tokens}, {2 * head_bytes}] (block size {vllm_block_tokens}, "
                f"head_dim {head_dim} of {dtype_bytes}-byte elements, K and V)")
        self.num_blocks = num_blocks
        self.kv_heads = kv_heads
        self.vllm_block_tokens = vllm_block_tokens
        self.head_bytes = head_bytes
        self._pages = [self._page_view(i, a) for i, a in enumerate(layers)]

    def _page_view(self, index, a):
        """[num_blocks, kv_heads, 2, block_tokens, head_bytes] over a's memory."""
        if a.dtype != np.uint8 or a.shape != self.layer_shape:
            raise LayoutMismatch(
                f"layer {index} is {a.dtype} {a.shape}; every layer must be uint8 "
                f"{self.layer_shape}")
        s_block, s_head, s_token, s_byte = a.strides
        n, row = self.vllm_block_tokens, 2 * self.head_bytes
        if s_byte != 1 or s_token != row:
            raise LayoutMismatch(
                f"layer {index}'s block rows are not contiguous (strides {a.strides}); "
                "CPU_ATTN keeps [block_size, 2 * head_dim] of each block and head together")
        return np.lib.stride_tricks.as_strided(
            a, shape=(self.num_blocks, self.kv_heads, 2, n, self.head_bytes),
            strides=(s_block, s_head, n * self.head_bytes, self.head_bytes, 1), writeable=True)

    @property
    def layer_shape(self):
        """Each layer's shape in bytes: [num_blocks, kv_heads, block_size, 2 * head_bytes]."""
        return (self.num_blocks, self.kv_heads, self.vllm_block_tokens, 2 * self.head_bytes)

    @property
    def num_layers(self) -> int:
        return len(self._pages)

    def layer_bytes(self, kvtier_block_tokens) -> int:
        """Bytes of one layer in a kvtier block: [2][kv_heads][tokens][head_dim]."""
        return 2 * self.kv_heads * kvtier_block_tokens * self.head_bytes

    def block_bytes(self, kvtier_block_tokens) -> int:
        """Bytes of one kvtier block: all layers."""
        return self.num_layers * self.layer_bytes(kvtier_block_tokens)

    def _layer_out(self, segment, m):
        """A [2, kv_heads, m, vllm_block_tokens, head_bytes] view of one layer's
        part of a payload (a uint8 array of layer_bytes)."""
        return segment.reshape(2, self.kv_heads, m, self.vllm_block_tokens, self.head_bytes)

    def pack_layer(self, layer, vllm_block_ids: Sequence[int], segment: np.ndarray):
        """Writes layer `layer` of the vLLM blocks `vllm_block_ids` (one kvtier
        block's, in token order) into `segment`, that layer's bytes of the
        payload."""
        page = self._pages[layer]
        out = self._layer_out(segment, len(vllm_block_ids))
        for i, b in enumerate(vllm_block_ids):
            self._check_block(b)
            out[:, :, i] = page[b].transpose(1, 0, 2, 3)  # [heads, 2, ...] -> [2, heads, ...]

    def unpack_layer(self, layer, vllm_block_ids: Sequence[Optional[int]], segment: np.ndarray):
        """Copies layer `layer` of a payload into vLLM's blocks; a None id
        leaves that part of the kvtier block out (vLLM already holds it)."""
        page = self._pages[layer]
        src = self._layer_out(segment, len(vllm_block_ids))
        for i, b in enumerate(vllm_block_ids):
            if b is None:
                continue
            self._check_block(b)
            page[b] = src[:, :, i].transpose(1, 0, 2, 3)

    def pack_block(self, vllm_block_ids: Sequence[int], payload: np.ndarray):
        """Every layer of one kvtier block into `payload` (block_bytes)."""
        for layer, segment in enumerate(self._segments(payload, len(vllm_block_ids))):
            self.pack_layer(layer, vllm_block_ids, segment)

    def unpack_block(self, vllm_block_ids: Sequence[Optional[int]], payload: np.ndarray):
        """Every layer of a payload into vLLM's blocks (None ids skipped)."""
        for layer, segment in enumerate(self._segments(payload, len(vllm_block_ids))):
            self.unpack_layer(layer, vllm_block_ids, segment)

    def layer_segment(self, payload, layer, kvtier_block_tokens):
        """The bytes of layer `layer` within a block's payload."""
        n = self.layer_bytes(kvtier_block_tokens)
        return payload[layer * n:(layer + 1) * n]

    def _segments(self, payload, m):
        tokens = m * self.vllm_block_tokens
        expected = self.block_bytes(tokens)
        if payload.dtype != np.uint8 or payload.ndim != 1 or payload.size != expected:
            raise LayoutMismatch(
                f"a payload of {m} vLLM blocks is {expected} bytes (uint8, flat); got "
                f"{payload.dtype} of shape {payload.shape}")
        return [self.layer_segment(payload, i, tokens) for i in range(self.num_layers)]

    def _check_block(self, b):
        if not 0 <= b < self.num_blocks:
            raise IndexError(f"vLLM block id {b} is outside 0..{self.num_blocks - 1}")

