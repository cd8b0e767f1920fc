"""The worker side of the connector, without vLLM: copies kvtier blocks into
one TP rank's paged KV and publishes its full blocks, through a same-host
shared-memory region when kvtierd offers one and gRPC messages otherwise.

One KvtierWorker per TP rank, called from that rank's model-runner thread
only (not thread-safe). Per step vLLM calls load() before the forward,
save_layer() as each layer's attention finishes, and finish_saves() after
the forward. finish_saves() hands the packed blocks to a background thread
that publishes them while vLLM goes on: the packed copy is the worker's, so
vLLM may reuse its blocks at once. At most one step is being published; the
next step's packing, or a load that needs the region it is published from,
waits for it first.
"""
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Set

import numpy as np

from kvtier import Namespace, PutBlock, errors

from .block_layout import BlockMapping, CpuPagedKv
from .scheduler import BlockLoad, BlockSave

log = logging.getLogger("kvtier_vllm")


@dataclass
class WorkerStats:
    loaded_blocks: int = 0
    loaded_bytes: int = 0
    failed_blocks: int = 0     # blocks that could not be loaded (vLLM recomputes them)
    saved_blocks: int = 0      # (these three and publish_s: the publishing thread's)
    saved_bytes: int = 0
    failed_saves: int = 0
    regions_replaced: int = 0  # regions given up after a get into them failed
    publish_s: float = 0.0     # wall time publishing, in the background
    load_s: float = 0.0        # wall time in load()
    load_get_s: float = 0.0    # of which waiting for kvtierd's get (and checksums)
    load_copy_s: float = 0.0   # of which copying blocks into the paged KV
    save_s: float = 0.0        # wall time packing (vLLM waits for it)


class KvtierWorker:
    def __init__(self, client, kv: CpuPagedKv, mapping: BlockMapping,
                 namespace_for: Callable[[int, Optional[str]], Namespace], tp_rank: int,
                 shm_bytes: int = 0):
        """`namespace_for(tp_rank, request_salt)` as for KvtierScheduler.
        With shm_bytes > 0 a region of that size is mapped from kvtierd; if
        the daemon refuses it (another host, --shm-socket off), gRPC is used."""
        if kv.vllm_block_tokens != mapping.vllm_block_tokens:
            raise ValueError(f"the paged KV has {kv.vllm_block_tokens}-token blocks, the mapping "
                             f"{mapping.vllm_block_tokens}")
        self._client = client
        self._kv = kv
        self._mapping = mapping
        self._namespace_for = namespace_for
        self._rank = tp_rank
        self.block_bytes = kv.block_bytes(mapping.kvtier_block_tokens)
        self.stats = WorkerStats()
        self._region = None
        self._region_array = None  # a uint8 view of the region; dropped before it closes
        if shm_bytes > 0:
            self._open_region(shm_bytes)
        self._staging = None        # this step's save payloads: [blocks, block_bytes]
        self._staging_in_region = False
        self._packed_layers: Set[int] = set()
        self._publisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kvtier-publish")
        self._publishing = None     # the Future of the step being published
        self._publishing_in_region = False

    @property
    def uses_shared_memory(self) -> bool:
        return self._region is not None

    # ---- loading -------------------------------------------------------

    def load(self, loads: Sequence[BlockLoad]) -> Set[int]:
        """Copies every BlockLoad into the paged KV, then releases its lease.
        Returns the vLLM block ids that could not be loaded: from a request's
        first missing or corrupt block on, all of them (vLLM recomputes)."""
        failed: Set[int] = set()
        start = time.monotonic()
        if loads and self._publishing_in_region and self._region_blocks():
            self.flush()  # its blocks are still being read from the region
        blocks_before = self.stats.loaded_blocks
        for load in loads:
            try:
                failed |= self._load_one(load)
            finally:
                self._release(load.lease_ids[self._rank] if load.lease_ids else None)
        elapsed = time.monotonic() - start
        self.stats.load_s += elapsed
        loaded = self.stats.loaded_blocks - blocks_before
        if loaded:
            log.info("kvtier: loaded %d blocks (%.1f MiB) for %d requests in %.1f ms "
                     "(get %.1f ms, copy %.1f ms so far in all)", loaded,
                     loaded * self.block_bytes / (1 << 20), len(loads), elapsed * 1e3,
                     self.stats.load_get_s * 1e3, self.stats.load_copy_s * 1e3)
        return failed

    def _load_one(self, load: BlockLoad) -> Set[int]:
        keys = load.keys[self._rank]
        ns = self._namespace_for(self._rank, load.cache_salt)
        done = 0
        try:
            for batch_start, batch in self._batches(len(keys)):
                t0 = time.monotonic()
                results = self._get(keys[batch_start:batch_start + batch], ns)
                t1 = time.monotonic()
                self.stats.load_get_s += t1 - t0
                for i, (result, payload) in enumerate(results):
                    if not result.ok:
                        log.warning("kvtier: request %s: block %d of %d not loaded: %s",
                                    load.request_id, batch_start + i, len(keys), result.error)
                        return self._failed_from(load, done)
                    self._kv.unpack_block(load.vllm_block_ids[batch_start + i], payload)
                    done += 1
                    self.stats.loaded_blocks += 1
                    self.stats.loaded_bytes += self.block_bytes
                self.stats.load_copy_s += time.monotonic() - t1
        except errors.KvtierError as e:
            log.warning("kvtier: request %s: loading failed after %d of %d blocks: %s",
                        load.request_id, done, len(keys), e)
            return self._failed_from(load, done)
        return set()

    def _failed_from(self, load: BlockLoad, first: int) -> Set[int]:
        self.stats.failed_blocks += len(load.vllm_block_ids) - first
        return {b for ids in load.vllm_block_ids[first:] for b in ids if b is not None}

    def _region_blocks(self) -> int:
        """Blocks the region holds at once; 0 without a usable region."""
        return 0 if self._region is None else self._region.size // self.block_bytes

    def _batches(self, n):
        """(start, count) runs of blocks to read with one get()."""
        per = self._region_blocks() or max(n, 1)
        for start in range(0, n, per):
            yield start, min(per, n - start)

    def _open_region(self, nbytes):
        try:
            self._region = self._client.open_shm(nbytes)
            self._region_array = np.frombuffer(self._region.buf, dtype=np.uint8)
            # Fault the region's pages in now, at engine start: the first
            # load into fresh pages would otherwise pay for them (a 40 MiB
            # load took 74 ms instead of 15).
            self._region_array.fill(0)
        except errors.KvtierError as e:
            self._region, self._region_array = None, None
            log.warning("kvtier: no shared memory from kvtierd (%s); blocks go over gRPC", e)

    def _replace_region(self):
        """A get into the region failed as a whole (its deadline passed,
        the connection broke): kvtierd may still be copying blocks into it,
        after this worker has moved on to the next load or to packing saves
        there. The region is given up (the daemon's late writes land in
        memory no one reads) and a fresh one is opened."""
        size = self._region.size
        self._region_array = None
        self._region.close()
        self._region = None
        self.stats.regions_replaced += 1
        self._open_region(size)

    def _get(self, keys, ns):
        """[(GetResult, payload uint8 array or None)] for keys."""
        size = self.block_bytes
        if self._region_blocks():
            offsets = [i * size for i in range(len(keys))]
            try:
                results = self._client.get(keys, region=self._region, offsets=offsets,
                                           namespace=ns)
            except errors.KvtierError:
                self._replace_region()
                raise
            return [(r, self._checked(r, self._region_array[o:o + size]))
                    for r, o in zip(results, offsets)]
        results = self._client.get(keys, namespace=ns)
        return [(r, self._checked(r, np.frombuffer(r.payload, dtype=np.uint8) if r.ok else None))
                for r in results]

    def _checked(self, result, payload):
        """The payload, or None with result.error set when its size is wrong:
        a block of another geometry under our namespace is never unpacked."""
        if not result.ok:
            return None
        if result.info is not None and result.info.size_bytes != self.block_bytes:
            result.error = errors.DataLoss(
                f"block is {result.info.size_bytes} bytes; this engine's blocks are "
                f"{self.block_bytes}")
            return None
        return payload

    # ---- saving --------------------------------------------------------

    def save_layer(self, layer: int, saves: Sequence[BlockSave]):
        """Packs layer `layer` of this step's saves (its attention is done)."""
        if not saves or layer in self._packed_layers:
            return
        start = time.monotonic()
        staging = self._staging_for(saves)
        t = self._mapping.kvtier_block_tokens
        row = 0
        for save in saves:
            for ids in save.vllm_block_ids:
                self._kv.pack_layer(layer, ids, self._kv.layer_segment(staging[row], layer, t))
                row += 1
        self._packed_layers.add(layer)
        self.stats.save_s += time.monotonic() - start

    def finish_saves(self, saves: Sequence[BlockSave]):
        """Packs what save_layer() did not, then publishes the step's blocks
        in the background (flush() waits for them). A block that fails is
        logged and left out: a missing block is a future miss, never wrong
        data."""
        if not saves:
            self._reset_step()
            return
        for layer in range(self._kv.num_layers):
            self.save_layer(layer, saves)
        staging, in_region = self._staging, self._staging_in_region
        self._reset_step()
        self._publishing = self._publisher.submit(self._publish, list(saves), staging, in_region)
        self._publishing_in_region = in_region

    def flush(self) -> int:
        """Waits for the step being published; returns how many of its blocks
        kvtierd stored (0 when none was)."""
        pending, self._publishing = self._publishing, None
        self._publishing_in_region = False
        return 0 if pending is None else pending.result()

    def _publish(self, saves, staging, in_region) -> int:
        """The publishing thread: one BatchPut per request."""
        start = time.monotonic()
        stored, row = 0, 0
        try:
            for save in saves:
                stored += self._put(save, staging, in_region, row)
                row += len(save.vllm_block_ids)
        except Exception:  # a bug here must not kill the engine: log, lose the blocks
            log.exception("kvtier: publishing failed")
        self.stats.publish_s += time.monotonic() - start
        return stored

    def _put(self, save: BlockSave, staging, in_region, first_row: int) -> int:
        size, t = self.block_bytes, self._mapping.kvtier_block_tokens
        blocks = []
        for i, (key, parent) in enumerate(zip(save.keys[self._rank],
                                              save.parent_keys[self._rank])):
            row = first_row + i
            if in_region:
                blocks.append(PutBlock(key=key, parent_key=parent, tokens=t,
                                       shm_offset=row * size, size=size))
            else:
                blocks.append(PutBlock(key=key, payload=staging[row], parent_key=parent,
                                       tokens=t))
        ns = self._namespace_for(self._rank, save.cache_salt)
        region = self._region if in_region else None
        try:
            results = self._client.put(blocks, ttl_seconds=save.ttl_seconds, region=region,
                                       namespace=ns)
        except errors.KvtierError as e:
            log.warning("kvtier: request %s: publishing %d blocks failed: %s",
                        save.request_id, len(blocks), e)
            self.stats.failed_saves += len(blocks)
            return 0
        stored = sum(1 for r in results if r.ok)
        for r in results:
            if not r.ok:
                log.warning("kvtier: request %s: block %d not published: %s",
                            save.request_id, r.index, r.error)
        self.stats.saved_blocks += stored
        self.stats.saved_bytes += stored * size
        self.stats.failed_saves += len(blocks) - stored
        return stored

    def _staging_for(self, saves):
        if self._staging is None:
            self.flush()  # one step in flight: the region (or memory) is free again
            rows = sum(len(s.vllm_block_ids) for s in saves)
            size = self.block_bytes
            if rows <= self._region_blocks():
                self._staging = self._region_array[:rows * size].reshape(rows, size)
                self._staging_in_region = True
            else:
                self._staging = np.empty((rows, size), dtype=np.uint8)
                self._staging_in_region = False
        return self._staging

    def _reset_step(self):
        self._staging = None
        self._staging_in_region = False
        self._packed_layers.clear()

    # ---- the rest ------------------------------------------------------

    def _release(self, lease_id):
        if lease_id is None:
            return
        try:
            self._client.release(lease_id)
        except errors.NotFound:
            pass  # expired, or released already
        except errors.KvtierError as e:
            log.warning("kvtier: releasing lease %s failed (it expires by itself): %s",
                        lease_id, e)

    def close(self):
        """Publishes what is pending, then releases the region."""
        try:
            self.flush()
        finally:
            self._publisher.shutdown(wait=True)
        self._reset_step()
        self._region_array = None
        if self._region is not None:
            self._region.close()
            self._region = None
