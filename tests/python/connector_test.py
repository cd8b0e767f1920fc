"""The vLLM connector's logic (clients/python/kvtier_vllm) against a real kvtierd.

No torch and no vLLM: the paged KV is numpy arrays shaped like vLLM's CPU
attention cache ([num_blocks, kv_heads, block_size, 2 * head_dim], K rows
then V rows per block and head), and the scheduler side is driven the way
vLLM drives KvtierConnector. What runs is the code the connector runs:
block mapping, packing, lookups and leases, loads and saves through
shared memory and gRPC, TTL classes.
"""
import time
import unittest

import numpy as np

from kvtier import KvtierClient, PutBlock, errors
from kvtier_vllm import (LAYOUT_VERSION, BlockMapping, BlockSizeMismatch, ConfigError,
                         ConnectorConfig, CpuPagedKv, EngineNamespace, KvtierScheduler,
                         KvtierWorker, RequestInfo, ScheduledRequest, TtlClasses,
                         UnknownTtlClass)
from kvtier_vllm.block_layout import LayoutMismatch
from kvtier_vllm.scheduler import BlockLoad
from kvtierd_fixture import ALICE_KEY, Kvtierd

LAYERS, HEADS, HEAD_DIM = 3, 2, 8
DTYPE = np.float16  # 2-byte elements, as bf16 and f16 are


class FakeEngine:
    """One TP rank's vLLM CPU paged KV (numpy) with the connector's scheduler
    and worker over it, as KvtierConnector wires them."""

    def __init__(self, client, vllm_block, kvtier_block, num_blocks=64, seed=0,
                 model="connector-test-model", tp_size=1, tp_rank=0, shm_bytes=1 << 20,
                 ttl=None, salt="", lease_ms=10000):
        rng = np.random.default_rng(seed)
        self.vllm_block = vllm_block
        self.caches = [rng.standard_normal((num_blocks, HEADS, vllm_block, 2 * HEAD_DIM))
                       .astype(DTYPE) for _ in range(LAYERS)]
        self.mapping = BlockMapping(kvtier_block, vllm_block)
        self.namespace = EngineNamespace(model_id=model, model_revision="r1", kv_dtype="f16",
                                         block_tokens=kvtier_block, tp_size=tp_size,
                                         cache_salt=salt)
        self.kv = CpuPagedKv([c.view(np.uint8) for c in self.caches], vllm_block, HEAD_DIM,
                             DTYPE().itemsize)
        self.scheduler = KvtierScheduler(client, self.mapping, self.namespace.for_rank,
                                         tp_size=tp_size, ttl=ttl or TtlClasses(),
                                         lease_ms=lease_ms)
        self.worker = KvtierWorker(client, self.kv, self.mapping, self.namespace.for_rank,
                                   tp_rank=tp_rank, shm_bytes=shm_bytes)

    def close(self):
        self.worker.close()

    def token_kv(self, block_ids, token):
        """(K, V) of `token` of a request whose vLLM blocks are block_ids:
        [layers, heads, head_dim] each, read the way CPU_ATTN reads them."""
        b, t = block_ids[token // self.vllm_block], token % self.vllm_block
        n = self.vllm_block
        k = np.stack([c.reshape(-1, HEADS, 2 * n, HEAD_DIM)[b, :, t] for c in self.caches])
        v = np.stack([c.reshape(-1, HEADS, 2 * n, HEAD_DIM)[b, :, n + t] for c in self.caches])
        return k, v

    def run_prefill(self, request, block_ids, num_computed=None):
        """One vLLM prefill step of `request` with `block_ids`: match, alloc,
        build, load, save every layer, publish. Returns (matched tokens, the
        step's plan, failed block ids, blocks published)."""
        local = 0 if num_computed is None else num_computed
        matched = self.scheduler.match(request, local)
        self.scheduler.allocated(request.request_id, matched)
        computed = local + matched
        plan = self.scheduler.build(
            [ScheduledRequest(request.request_id, computed, list(block_ids), True)],
            {request.request_id: request.num_tokens - computed})
        failed = self.worker.load(plan.loads)
        self.save(plan)
        stored = self.worker.flush()
        self.scheduler.step_done(plan.step, failed)
        self.scheduler.finished(request.request_id)
        return matched, plan, failed, stored

    def save(self, plan):
        """The forward's saves: every layer, then the step's end."""
        for layer in range(LAYERS):
            self.worker.save_layer(layer, plan.saves)
        self.worker.finish_saves(plan.saves)


class FailingGets:
    """A client whose get() fails as a whole (as a passed deadline or a
    broken connection does); everything else is the real client's. With
    `late_write`, a get into a region is recorded, and the next put first
    writes 0xFF where that get would have put its first block: kvtierd
    finishing the abandoned copy while the worker has moved on."""

    def __init__(self, client, late_write=False):
        self._client = client
        self._late_write = late_write
        self._abandoned = None  # (region, offset) of a failed get
        self.gets = 0

    def __getattr__(self, name):
        return getattr(self._client, name)

    def get(self, keys, region=None, offsets=None, **kw):
        self.gets += 1
        if region is not None and self._late_write:
            self._abandoned = (region, offsets[0])
        raise errors.DeadlineExceeded("deadline exceeded (injected)")

    def put(self, blocks, **kw):
        if self._abandoned is not None:
            region, offset = self._abandoned
            if not region.closed:
                region.buf[offset:offset + 64] = b"\xff" * 64
        return self._client.put(blocks, **kw)


def prompt(seed, n):
    return [seed * 1_000_000 + i for i in range(n)]


def request(rid, tokens, ttl=None, salt=None):
    params = {"kvtier_ttl": ttl} if ttl else None
    return RequestInfo(request_id=rid, prompt_token_ids=tokens, num_tokens=len(tokens),
                       kv_transfer_params=params, cache_salt=salt)


class BlockMappingTest(unittest.TestCase):
    def test_kvtier_block_is_whole_vllm_blocks(self):
        m = BlockMapping(128, 32)
        self.assertEqual(m.vllm_blocks_per_block, 4)
        self.assertEqual(m.vllm_block_ids(1, list(range(100, 112))), [104, 105, 106, 107])
        self.assertEqual(m.full_blocks(300), 2)
        self.assertEqual(BlockMapping(64, 64).vllm_blocks_per_block, 1)

    def test_refuses_a_kvtier_block_smaller_than_vllms(self):
        with self.assertRaisesRegex(BlockSizeMismatch,
                                    r"64 is not a multiple of vLLM's block size 128.*"
                                    r"use block_tokens 128 or 256 or 512 or 1024"):
            BlockMapping(64, 128)

    def test_refuses_a_vllm_block_no_kvtier_size_divides(self):
        with self.assertRaisesRegex(BlockSizeMismatch, r"no kvtier block size is a multiple of 96"):
            BlockMapping(128, 96)

    def test_refuses_kvtier_sizes_kvtierd_refuses(self):
        for bad in (48, 8, 2048, 0):
            with self.assertRaisesRegex(BlockSizeMismatch, r"power of two in \[16, 1024\]"):
                BlockMapping(bad, 16)

    def test_a_request_shorter_than_the_block_has_no_ids(self):
        with self.assertRaisesRegex(IndexError, "needs vLLM blocks 4..7 but the request has 6"):
            BlockMapping(128, 32).vllm_block_ids(1, list(range(6)))


class CpuPagedKvTest(unittest.TestCase):
    def setUp(self):
        rng = np.random.default_rng(7)
        self.n = 16
        self.caches = [rng.standard_normal((10, HEADS, self.n, 2 * HEAD_DIM)).astype(DTYPE)
                       for _ in range(LAYERS)]
        self.kv = CpuPagedKv([c.view(np.uint8) for c in self.caches], self.n, HEAD_DIM, 2)

    def test_payload_is_layers_kv_heads_tokens_head_dim(self):
        ids = [4, 1]  # one 32-token kvtier block
        payload = np.zeros(self.kv.block_bytes(32), dtype=np.uint8)
        self.kv.pack_block(ids, payload)
        canonical = payload.view(DTYPE).reshape(LAYERS, 2, HEADS, 32, HEAD_DIM)
        for layer in range(LAYERS):
            rows = self.caches[layer].reshape(10, HEADS, 2 * self.n, HEAD_DIM)
            for t in range(32):
                b, off = ids[t // self.n], t % self.n
                np.testing.assert_array_equal(canonical[layer, 0, :, t], rows[b, :, off])
                np.testing.assert_array_equal(canonical[layer, 1, :, t], rows[b, :, self.n + off])

    def test_unpack_writes_only_the_blocks_given(self):
        payload = np.zeros(self.kv.block_bytes(32), dtype=np.uint8)
        self.kv.pack_block([2, 3], payload)
        before = [c.copy() for c in self.caches]
        self.kv.unpack_block([None, 9], payload)
        for layer in range(LAYERS):
            np.testing.assert_array_equal(self.caches[layer][9], before[layer][3])
            np.testing.assert_array_equal(self.caches[layer][:9], before[layer][:9])

    def test_refuses_a_layout_it_does_not_read(self):
        with self.assertRaisesRegex(LayoutMismatch, r"not \[num_blocks, kv_heads, 32"):
            CpuPagedKv([c.view(np.uint8) for c in self.caches], 32, HEAD_DIM, 2)
        with self.assertRaisesRegex(LayoutMismatch, "not \\[num_blocks, kv_heads, 16, 64\\]"):
            CpuPagedKv([c.view(np.uint8) for c in self.caches], 16, 2 * HEAD_DIM, 2)
        strided = np.zeros((10, HEADS, 2 * self.n, 2 * HEAD_DIM), DTYPE)[:, :, ::2]
        with self.assertRaisesRegex(LayoutMismatch, "rows are not contiguous"):
            CpuPagedKv([strided.view(np.uint8)], self.n, HEAD_DIM, 2)
        with self.assertRaisesRegex(LayoutMismatch, "every layer must be uint8"):
            CpuPagedKv([self.caches[0].view(np.uint8), self.caches[1].view(np.uint8)[:5]],
                       self.n, HEAD_DIM, 2)
        with self.assertRaisesRegex(LayoutMismatch, "payload of 2 vLLM blocks is"):
            self.kv.unpack_block([1, 2], np.zeros(10, np.uint8))

    def test_refuses_block_ids_outside_the_cache(self):
        payload = np.zeros(self.kv.block_bytes(32), dtype=np.uint8)
        with self.assertRaisesRegex(IndexError, "vLLM block id 10 is outside 0..9"):
            self.kv.pack_block([1, 10], payload)


class TtlAndConfigTest(unittest.TestCase):
    def test_classes_map_to_seconds(self):
        ttl = TtlClasses()
        self.assertEqual(ttl.for_request(None), 300)
        self.assertEqual(ttl.for_request({"kvtier_ttl": "1h"}), 3600)
        self.assertEqual(ttl.for_request({"other": 1}), 300)
        self.assertEqual(TtlClasses({"day": 86400}, "day").for_request(None), 86400)
        with self.assertRaisesRegex(UnknownTtlClass, "'2h' is not one of 1h, 5m"):
            ttl.for_request({"kvtier_ttl": "2h"})

    def test_bad_classes_are_refused(self):
        with self.assertRaisesRegex(ValueError, "must be an integer in 1..604800"):
            TtlClasses({"x": 0}, "x")
        with self.assertRaisesRegex(UnknownTtlClass, "default TTL class '1d'"):
            TtlClasses(None, "1d")

    def test_extra_config(self):
        c = ConnectorConfig.from_extra_config(
            {"addr": "10.0.0.1:1", "block_tokens": 128, "ttl_class": "1h"}, environ={})
        self.assertEqual((c.addr, c.block_tokens, c.ttl.default, c.api_key),
                         ("10.0.0.1:1", 128, "1h", None))
        self.assertEqual(ConnectorConfig.from_extra_config(
            None, environ={"KVTIER_API_KEY": "k"}).api_key, "k")
        with self.assertRaisesRegex(ConfigError, r"unknown keys \['adr'\]"):
            ConnectorConfig.from_extra_config({"adr": "x:1"})
        with self.assertRaisesRegex(ConfigError, "'lease_ms' must be an integer >= 1"):
            ConnectorConfig.from_extra_config({"lease_ms": "10"})
        with self.assertRaisesRegex(ConfigError, "'addr' must be host:port"):
            ConnectorConfig.from_extra_config({"addr": "localhost"})
        with self.assertRaisesRegex(ConfigError, "'ttl_class'.*default TTL class '1d'"):
            ConnectorConfig.from_extra_config({"ttl_class": "1d"})

    def test_namespace_carries_every_field(self):
        ns = EngineNamespace(model_id="m", model_revision="r", kv_dtype="bf16",
                             block_tokens=128, tp_size=2, cache_salt="tenant")
        a = ns.for_rank(1)
        self.assertEqual((a.model_id, a.model_revision, a.kv_dtype, a.block_tokens,
                          a.layout_version, a.tp_rank, a.tp_size, a.cache_salt),
                         ("m", "r", "bf16", 128, LAYOUT_VERSION, 1, 2, "tenant"))
        self.assertNotEqual(ns.for_rank(0, "a/").cache_salt, ns.for_rank(0, "a").cache_salt)
        self.assertNotEqual(EngineNamespace("m", "r", "bf16", 128, 1, "a/").for_rank(0, "b"),
                            EngineNamespace("m", "r", "bf16", 128, 1, "a").for_rank(0, "/b"))
        with self.assertRaisesRegex(ValueError, "tp_rank 2 is outside 0..1"):
            ns.for_rank(2)
        with self.assertRaisesRegex(ConfigError, "kv_dtype 'fp8'"):
            EngineNamespace("m", "r", "fp8", 128, 1)


class ConnectorDaemonTest(unittest.TestCase):
    """Saves and loads through a real kvtierd."""

    @classmethod
    def setUpClass(cls):
        cls.daemon = Kvtierd()
        cls.client = KvtierClient(cls.daemon.addr, api_key=ALICE_KEY)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.daemon.stop()

    def engine(self, **kw):
        e = FakeEngine(self.client, **kw)
        self.addCleanup(e.close)
        return e

    def assert_same_kv(self, a, a_ids, b, b_ids, tokens, first=0):
        """Tokens first..tokens-1 have the same K and V bits in both engines."""
        for t in range(first, tokens):
            ka, va = a.token_kv(a_ids, t)
            kb, vb = b.token_kv(b_ids, t)
            self.assertTrue(np.array_equal(ka.view(np.uint16), kb.view(np.uint16)) and
                            np.array_equal(va.view(np.uint16), vb.view(np.uint16)),
                            f"token {t} differs")

    def check_save_then_load(self, shm_bytes):
        seed = 10 + bool(shm_bytes)
        tokens = prompt(seed, 5 * 64 + 17)  # 5 full kvtier blocks and a tail
        a = self.engine(vllm_block=32, kvtier_block=64, seed=1, shm_bytes=shm_bytes)
        b = self.engine(vllm_block=32, kvtier_block=64, seed=2, shm_bytes=shm_bytes)
        self.assertEqual(a.worker.uses_shared_memory, bool(shm_bytes))
        a_ids = [3, 9, 1, 40, 41, 7, 22, 23, 60, 2, 5]
        matched, plan, failed, stored = a.run_prefill(request("a", tokens), a_ids)
        self.assertEqual((matched, plan.loads, failed, stored), (0, [], set(), 5))

        b_ids = [50, 51, 52, 0, 13, 14, 15, 16, 17, 18, 19]
        matched, plan, failed, stored = b.run_prefill(request("b", tokens), b_ids)
        self.assertEqual((matched, failed, stored), (5 * 64, set(), 0))
        self.assertEqual(plan.loads[0].vllm_block_ids, [b_ids[i:i + 2] for i in range(0, 10, 2)])
        self.assert_same_kv(a, a_ids, b, b_ids, 5 * 64)
        self.assertEqual(b.worker.stats.loaded_blocks, 5)

    def test_save_then_load_through_shared_memory(self):
        self.check_save_then_load(shm_bytes=1 << 20)

    def test_save_then_load_over_grpc(self):
        self.check_save_then_load(shm_bytes=0)

    def test_region_smaller_than_a_step_goes_in_batches(self):
        tokens = prompt(12, 6 * 64 + 1)
        a = self.engine(vllm_block=64, kvtier_block=64, seed=3)
        block = a.worker.block_bytes
        b = self.engine(vllm_block=64, kvtier_block=64, seed=4, shm_bytes=2 * block)
        ids = list(range(7))
        self.assertEqual(a.run_prefill(request("a", tokens), ids)[3], 6)
        matched, _, failed, _ = b.run_prefill(request("b", tokens), [9, 8, 7, 6, 5, 4, 3])
        self.assertEqual((matched, failed), (6 * 64, set()))
        self.assert_same_kv(a, ids, b, [9, 8, 7, 6, 5, 4, 3], 6 * 64)

    def test_engines_with_other_vllm_block_sizes_share_blocks(self):
        tokens = prompt(13, 4 * 128 + 5)
        a = self.engine(vllm_block=32, kvtier_block=128, seed=5)
        b = self.engine(vllm_block=128, kvtier_block=128, seed=6)
        a_ids = list(range(17))
        self.assertEqual(a.run_prefill(request("a", tokens), a_ids)[3], 4)
        matched, _, failed, _ = b.run_prefill(request("b", tokens), [30, 31, 32, 33, 34])
        self.assertEqual((matched, failed), (4 * 128, set()))
        self.assert_same_kv(a, a_ids, b, [30, 31, 32, 33, 34], 4 * 128)

    def test_matched_tokens_are_those_beyond_the_local_hit(self):
        tokens = prompt(14, 4 * 64)  # exactly 4 blocks: vLLM must compute the last token
        a = self.engine(vllm_block=32, kvtier_block=64, seed=7)
        a.run_prefill(request("a", tokens), list(range(8)))
        b = self.engine(vllm_block=32, kvtier_block=64, seed=8)
        # vLLM's own cache holds 3 of its blocks (96 tokens): kvtierd adds the
        # rest of the 4th vLLM block and the 2nd kvtier block, not the last one.
        self.assertEqual(b.scheduler.match(request("b", tokens), 96), 3 * 64 - 96)
        b.scheduler.allocated("b", 3 * 64 - 96)
        plan = b.scheduler.build([ScheduledRequest("b", 3 * 64, list(range(20, 28)), True)],
                                 {"b": 64})
        self.assertEqual(plan.loads[0].vllm_block_ids, [[None, 23], [24, 25]])
        self.assertEqual(plan.loads[0].num_vllm_blocks, 3)
        before = b.caches[0][20:23].copy()
        self.assertEqual(b.worker.load(plan.loads), set())
        np.testing.assert_array_equal(b.caches[0][20:23], before)  # vLLM's own blocks untouched
        self.assert_same_kv(a, list(range(8)), b, list(range(20, 28)), 3 * 64, first=96)
        # Nothing new beyond a local hit that covers kvtierd's.
        self.assertEqual(b.scheduler.match(request("c", tokens), 3 * 64), 0)
        self.assertEqual(b.scheduler.leases("c"), [])
        self.assertEqual(b.scheduler.match(request("d", prompt(15, 300)), 0), 0)

    def test_lease_pins_the_hit_until_the_worker_loads(self):
        tokens = prompt(16, 2 * 64 + 3)
        a = self.engine(vllm_block=64, kvtier_block=64, seed=9)
        a.run_prefill(request("a", tokens), [0, 1, 2])
        b = self.engine(vllm_block=64, kvtier_block=64, seed=10)
        self.assertEqual(b.scheduler.match(request("b", tokens), 0), 128)
        [lease] = b.scheduler.leases("b")
        keys = self.client.lookup(token_ids=tokens, return_keys=True,
                                  namespace=b.namespace.for_rank(0)).keys
        with self.assertRaises(errors.FailedPrecondition):
            self.client.delete(keys[0], namespace=b.namespace.for_rank(0))
        # Asked again (vLLM could not schedule it): the old lease goes.
        self.assertEqual(b.scheduler.match(request("b", tokens), 0), 128)
        with self.assertRaises(errors.NotFound):
            self.client.release(lease)
        [lease] = b.scheduler.leases("b")
        b.scheduler.allocated("b", 128)
        plan = b.scheduler.build([ScheduledRequest("b", 128, [5, 6, 7], True)], {"b": 3})
        self.assertEqual(plan.loads[0].lease_ids, [lease])
        self.assertEqual(b.scheduler.leases("b"), [])  # handed to the worker
        b.worker.load(plan.loads)
        with self.assertRaises(errors.NotFound):
            self.client.release(lease)  # the worker released it
        # A request that finishes before it is scheduled releases its lease.
        self.assertEqual(b.scheduler.match(request("c", tokens), 0), 128)
        [lease] = b.scheduler.leases("c")
        b.scheduler.finished("c")
        with self.assertRaises(errors.NotFound):
            self.client.release(lease)

    def test_a_missing_or_foreign_block_fails_from_there_on(self):
        tokens = prompt(17, 3 * 64 + 1)
        a = self.engine(vllm_block=32, kvtier_block=64, seed=11)
        a.run_prefill(request("a", tokens), list(range(7)))
        ns = a.namespace.for_rank(0)
        keys = self.client.lookup(token_ids=tokens, return_keys=True, namespace=ns).keys
        b = self.engine(vllm_block=32, kvtier_block=64, seed=12)
        missing = bytes(16 * [7])
        load = BlockLoad("x", None, [[keys[0], missing, keys[2]]],
                         [[10, 11], [12, 13], [14, 15]], [None])
        self.assertEqual(b.worker.load([load]), {12, 13, 14, 15})
        # A block of another size under this namespace is never unpacked.
        other = prompt(18, 64)
        [k] = self.client.lookup(token_ids=other, return_keys=True, namespace=ns).keys
        [r] = self.client.put([PutBlock(key=k, payload=b"x" * 100)], namespace=ns)
        self.assertTrue(r.ok, r.error)
        load = BlockLoad("y", None, [[k]], [[20, 21]], [None])
        self.assertEqual(b.worker.load([load]), {20, 21})
        self.assertEqual(b.worker.stats.failed_blocks, 3)

    def test_ttl_class_sets_the_blocks_expiry(self):
        a = self.engine(vllm_block=64, kvtier_block=64, seed=13)
        now_ms = time.time() * 1000
        for seed, ttl, seconds in ((19, None, 300), (20, "1h", 3600)):
            tokens = prompt(seed, 64 + 1)
            self.assertEqual(a.run_prefill(request(f"t{seed}", tokens, ttl=ttl), [0, 1])[3], 1)
            r = self.client.lookup(token_ids=tokens, namespace=a.namespace.for_rank(0))
            self.assertEqual(r.hit_blocks, 1)
            self.assertAlmostEqual(r.hits[0].expire_time_ms - now_ms, seconds * 1000,
                                   delta=60_000)
        # A request naming an unknown class publishes nothing (and is served).
        matched, plan, failed, stored = a.run_prefill(
            request("t21", prompt(21, 65), ttl="2h"), [0, 1])
        self.assertEqual((matched, plan.saves, stored), (0, [], 0))

    def test_every_rank_must_hold_a_block(self):
        tokens = prompt(22, 2 * 64 + 1)
        r0 = self.engine(vllm_block=64, kvtier_block=64, seed=14, tp_size=2, tp_rank=0)
        r1 = self.engine(vllm_block=64, kvtier_block=64, seed=15, tp_size=2, tp_rank=1)
        # Only rank 0 published: the scheduler (which looks up both) finds nothing.
        matched, plan, _, _ = r0.run_prefill(request("a", tokens), [0, 1, 2])
        self.assertEqual(len(plan.saves[0].keys), 2)
        self.assertNotEqual(plan.saves[0].keys[0], plan.saves[0].keys[1])
        self.assertEqual(r0.scheduler.match(request("b", tokens), 0), 0)
        r1.worker.finish_saves(plan.saves)
        self.assertEqual(r1.worker.flush(), 2)
        self.assertEqual(r0.scheduler.match(request("c", tokens), 0), 128)

    def test_namespaces_keep_engines_apart(self):
        tokens = prompt(23, 2 * 64 + 1)
        a = self.engine(vllm_block=64, kvtier_block=64, seed=16)
        a.run_prefill(request("a", tokens, salt="s1"), [0, 1, 2])
        self.assertEqual(a.scheduler.match(request("b", tokens, salt="s1"), 0), 128)
        self.assertEqual(a.scheduler.match(request("c", tokens, salt="s2"), 0), 0)
        self.assertEqual(a.scheduler.match(request("d", tokens), 0), 0)
        other_model = self.engine(vllm_block=64, kvtier_block=64, model="another")
        self.assertEqual(other_model.scheduler.match(request("e", tokens, salt="s1"), 0), 0)
        other_size = self.engine(vllm_block=64, kvtier_block=128)
        self.assertEqual(other_size.scheduler.match(request("f", tokens, salt="s1"), 0), 0)

    def test_saves_follow_chunked_prefill(self):
        tokens = prompt(24, 4 * 64 + 1)
        a = self.engine(vllm_block=64, kvtier_block=64, seed=17)
        self.assertEqual(a.scheduler.match(request("a", tokens), 0), 0)
        a.scheduler.allocated("a", 0)
        steps = [([0, 1], 0, 100), ([2], 100, 100), ([3, 4], 200, 57)]
        saved = []
        for new_ids, computed, scheduled in steps:
            plan = a.scheduler.build(
                [ScheduledRequest("a", computed, new_ids, computed == 0)], {"a": scheduled})
            saved.append([ids for s in plan.saves for ids in s.vllm_block_ids])
            a.worker.finish_saves(plan.saves)
        a.worker.flush()
        self.assertEqual(saved, [[[0]], [[1], [2]], [[3]]])
        self.assertEqual(a.scheduler.match(request("b", tokens), 0), 4 * 64)

    def test_one_step_loads_and_saves_several_requests(self):
        shared, fresh = prompt(26, 2 * 64 + 5), prompt(27, 3 * 64 + 5)
        a = self.engine(vllm_block=32, kvtier_block=64, seed=18)
        a_ids = list(range(5))
        a.run_prefill(request("a", shared), a_ids)
        b = self.engine(vllm_block=32, kvtier_block=64, seed=19)
        self.assertEqual(b.scheduler.match(request("hit", shared), 0), 128)
        self.assertEqual(b.scheduler.match(request("miss", fresh), 0), 0)
        b.scheduler.allocated("hit", 128)
        b.scheduler.allocated("miss", 0)
        hit_ids, miss_ids = [10, 11, 12, 13, 14], [20, 21, 22, 23, 24, 25, 26]
        plan = b.scheduler.build(
            [ScheduledRequest("hit", 128, hit_ids, True),
             ScheduledRequest("miss", 0, miss_ids, True)], {"hit": 5, "miss": len(fresh)})
        self.assertEqual([x.request_id for x in plan.loads], ["hit"])
        self.assertEqual([(x.request_id, len(x.keys[0])) for x in plan.saves], [("miss", 3)])
        self.assertEqual(b.worker.load(plan.loads), set())
        for layer in range(LAYERS):
            b.worker.save_layer(layer, plan.saves)
        b.worker.finish_saves(plan.saves)
        # The next step loads into the region while the blocks may still be
        # published from it: the load waits for them.
        load = b.scheduler.match(request("again", shared), 0)
        b.scheduler.allocated("again", load)
        again = b.scheduler.build([ScheduledRequest("again", load, [40, 41, 42, 43, 44], True)],
                                  {"again": 5})
        self.assertEqual(b.worker.load(again.loads), set())
        self.assertEqual(b.worker.flush(), 0)  # the load flushed it already
        self.assertEqual(b.worker.stats.saved_blocks, 3)
        self.assert_same_kv(a, a_ids, b, [40, 41, 42, 43, 44], 128)
        self.assert_same_kv(a, a_ids, b, hit_ids, 128)
        c = self.engine(vllm_block=32, kvtier_block=64, seed=20)
        self.assertEqual(c.run_prefill(request("c", fresh), list(range(30, 37)))[0], 192)
        self.assert_same_kv(b, miss_ids, c, list(range(30, 37)), 192)

    def test_a_failed_load_publishes_nothing_computed_on_it(self):
        # kvtierd holds blocks 0-1 of the prompt; B's loads of them fail.
        tokens = prompt(30, 4 * 64 + 1)
        a = self.engine(vllm_block=64, kvtier_block=64, seed=21)
        a.run_prefill(request("a", tokens[:2 * 64 + 1]), [0, 1, 2])
        b = FakeEngine(FailingGets(self.client), 64, 64, seed=22)
        self.addCleanup(b.close)
        self.assertEqual(b.scheduler.match(request("b", tokens), 0), 128)
        b.scheduler.allocated("b", 128)
        ids = [10, 11, 12, 13, 14]
        plan = b.scheduler.build([ScheduledRequest("b", 128, ids, True)], {"b": 129})
        # Blocks 2-3, computed in this step on top of blocks 0-1, wait.
        self.assertEqual((len(plan.loads), plan.saves), (1, []))
        failed = b.worker.load(plan.loads)
        self.assertEqual(failed, {10, 11})
        b.save(plan)
        self.assertEqual(b.worker.flush(), 0)
        self.assertEqual(self.client.lookup(token_ids=tokens,
                                            namespace=b.namespace.for_rank(0)).hit_blocks, 2)
        # vLLM moves the request back to its first failed block and recomputes
        # from there: every block is saved from its recomputed KV.
        b.scheduler.step_done(plan.step, failed)
        self.assertEqual(b.scheduler.stats.failed_loads, 1)
        again = b.scheduler.build([ScheduledRequest("b", 0, None, False)], {"b": 257})
        self.assertEqual(again.loads, [])
        self.assertEqual([ids for s in again.saves for ids in s.vllm_block_ids],
                         [[10], [11], [12], [13]])
        b.save(again)
        self.assertEqual(b.worker.flush(), 4)
        self.assertEqual(self.client.lookup(token_ids=tokens,
                                            namespace=b.namespace.for_rank(0)).hit_blocks, 4)

    def test_saves_wait_for_the_loads_they_read(self):
        shared = prompt(31, 2 * 64 + 1)
        a = self.engine(vllm_block=64, kvtier_block=64, seed=23)
        a.run_prefill(request("a", shared), [0, 1, 2])
        b = self.engine(vllm_block=64, kvtier_block=64, seed=24)
        long_ = shared[:128] + prompt(32, 2 * 64 + 1)
        fresh = prompt(33, 2 * 64 + 1)
        # "hit" loads blocks 0-1 into vLLM blocks 10-11; vLLM lets "share"
        # (the same prefix) use them as its own hit in the same step; "fresh"
        # reads nothing loaded.
        self.assertEqual(b.scheduler.match(request("hit", long_), 0), 128)
        b.scheduler.allocated("hit", 128)
        self.assertEqual(b.scheduler.match(request("share", long_), 128), 0)
        self.assertEqual(b.scheduler.match(request("fresh", fresh), 0), 0)
        hit_ids, share_ids, fresh_ids = [10, 11, 12, 13, 14], [10, 11, 20, 21, 22], [30, 31, 32]
        step = b.scheduler.build(
            [ScheduledRequest("hit", 128, hit_ids, True),
             ScheduledRequest("share", 128, share_ids, True),
             ScheduledRequest("fresh", 0, fresh_ids, True)],
            {"hit": 129, "share": 129, "fresh": 129})
        self.assertEqual([s.request_id for s in step.saves], ["fresh"])
        self.assertEqual(b.scheduler.stats.held_saves, 2)
        self.assertEqual(b.worker.load(step.loads), set())
        b.save(step)
        # A step scheduled before the load's outcome is known still waits.
        decode = [ScheduledRequest("hit", 257, None, False),
                  ScheduledRequest("share", 257, None, False)]
        early = b.scheduler.build(decode, {"hit": 1, "share": 1})
        self.assertEqual(early.saves, [])
        b.scheduler.step_done(step.step, set())
        b.scheduler.step_done(early.step, set())
        late = b.scheduler.build(decode, {"hit": 1, "share": 1})
        self.assertEqual([(s.request_id, s.vllm_block_ids) for s in late.saves],
                         [("hit", [[12], [13]]), ("share", [[20], [21]])])
        b.save(late)
        b.worker.flush()
        self.assertEqual(b.scheduler.match(request("again", long_), 0), 256)

    def test_a_region_whose_get_failed_is_not_reused(self):
        # kvtierd may still be copying into the region after the get gave up;
        # this step's saves must not be packed where that copy lands.
        tokens = prompt(34, 2 * 64 + 1)
        a = self.engine(vllm_block=64, kvtier_block=64, seed=25)
        a.run_prefill(request("a", tokens), [0, 1, 2])
        client = FailingGets(self.client, late_write=True)
        b = FakeEngine(client, 64, 64, seed=26, shm_bytes=1 << 20)
        self.addCleanup(b.close)
        self.assertTrue(b.worker.uses_shared_memory)
        self.assertEqual(b.scheduler.match(request("hit", tokens), 0), 128)
        b.scheduler.allocated("hit", 128)
        fresh = prompt(35, 64 + 1)
        self.assertEqual(b.scheduler.match(request("fresh", fresh), 0), 0)
        fresh_ids = [20, 21]
        plan = b.scheduler.build([ScheduledRequest("hit", 128, [10, 11, 12], True),
                                  ScheduledRequest("fresh", 0, fresh_ids, True)],
                                 {"hit": 1, "fresh": 65})
        self.assertEqual(b.worker.load(plan.loads), {10, 11})
        b.save(plan)
        self.assertEqual(b.worker.flush(), 1)
        # The published block is the fresh request's KV, untouched.
        c = self.engine(vllm_block=64, kvtier_block=64, seed=27)
        self.assertEqual(c.run_prefill(request("c", fresh), [40, 41])[0], 64)
        self.assert_same_kv(b, fresh_ids, c, [40, 41], 64)
        self.assertEqual(b.worker.stats.regions_replaced, 1)
        self.assertTrue(b.worker.uses_shared_memory)

    def test_a_stalled_daemon_costs_one_lookup_deadline_then_a_back_off(self):
        # A daemon that accepts connections and never answers.
        import socket
        stalled = socket.socket()
        stalled.bind(("127.0.0.1", 0))
        stalled.listen(16)
        self.addCleanup(stalled.close)
        client = KvtierClient(f"127.0.0.1:{stalled.getsockname()[1]}", timeout=30)
        self.addCleanup(client.close)
        now = [1000.0]
        mapping = BlockMapping(64, 64)
        ns = EngineNamespace(model_id="m", model_revision="r", kv_dtype="f16", block_tokens=64,
                             tp_size=1)
        sched = KvtierScheduler(client, mapping, ns.for_rank, tp_size=1, ttl=TtlClasses(),
                                lease_ms=1000, lookup_timeout_s=0.2, clock=lambda: now[0])
        self.assertEqual(sched.match(request("a", prompt(36, 200)), 0), 0)
        self.assertEqual((sched.stats.lookups, sched.stats.lookup_errors), (1, 1))
        # Within the back-off (1 s) nothing is asked; past it, one lookup,
        # whose failure doubles the back-off.
        now[0] += 0.9
        self.assertEqual(sched.match(request("b", prompt(37, 200)), 0), 0)
        self.assertEqual((sched.stats.lookups, sched.stats.lookups_skipped), (1, 1))
        now[0] += 0.2
        self.assertEqual(sched.match(request("c", prompt(38, 200)), 0), 0)
        self.assertEqual((sched.stats.lookups, sched.stats.lookup_errors), (2, 2))
        now[0] += 1.5
        sched.match(request("d", prompt(39, 200)), 0)
        self.assertEqual((sched.stats.lookups, sched.stats.lookups_skipped), (2, 2))
        self.assertLess(sched.stats.lookup_s, 20)  # not the client's 30 s deadline

    def test_a_lease_longer_than_kvtierd_grants_is_an_error_not_an_outage(self):
        # kvtierd's --max-lease-ms is 60000 by default.
        e = self.engine(vllm_block=64, kvtier_block=64, seed=28, lease_ms=120_000)
        with self.assertLogs("kvtier_vllm", level="ERROR") as logs:
            self.assertEqual(e.scheduler.match(request("a", prompt(40, 200)), 0), 0)
        self.assertIn("lease_ms 120000", logs.output[0])
        self.assertEqual(e.scheduler.stats.lookup_errors, 1)

    def test_daemon_down_serves_without_it(self):
        gone = KvtierClient("127.0.0.1:1", timeout=2)
        self.addCleanup(gone.close)
        e = FakeEngine(gone, 64, 64, shm_bytes=1 << 20)
        self.addCleanup(e.close)
        self.assertFalse(e.worker.uses_shared_memory)
        self.assertEqual(e.scheduler.match(request("a", prompt(25, 200)), 0), 0)
        self.assertEqual(e.scheduler.stats.lookup_errors, 1)


if __name__ == "__main__":
    unittest.main()
