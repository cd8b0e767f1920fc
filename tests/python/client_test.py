"""The Python client (clients/python/kvtier) against a real kvtierd.

Every test drives the daemon binary through kvtier.KvtierClient: lookups,
round trips inline and through shared memory, per-block failures, leases,
typed errors and tenant isolation. Each test uses tokens of its own, so
they share one daemon.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

import grpc
import numpy
import xxhash

import kvtier
from kvtier import KvtierClient, Namespace, PutBlock, errors
from kvtierd_fixture import ALICE_KEY, BOB_KEY, Kvtierd

BLOCK_TOKENS = 64  # kvtierd's default namespace


def tokens(seed, blocks, extra=0):
    """A prompt of `blocks` full blocks (plus `extra` tokens) unique to `seed`."""
    return [seed * 100_000 + i for i in range(blocks * BLOCK_TOKENS + extra)]


def payload(seed, size):
    """Deterministic, incompressible-looking bytes."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += xxhash.xxh3_128_digest(f"{seed}:{counter}".encode())
        counter += 1
    return bytes(out[:size])


class ClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemon = Kvtierd()
        cls.client = KvtierClient(cls.daemon.addr, api_key=ALICE_KEY)
        cls.bob = KvtierClient(cls.daemon.addr, api_key=BOB_KEY)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.bob.close()
        cls.daemon.stop()

    def store_prompt(self, seed, blocks, size=4096, client=None, namespace=None):
        """Puts every full block of a prompt; returns (prompt, keys, payloads)."""
        c = client or self.client
        prompt = tokens(seed, blocks)
        keys = c.lookup(token_ids=prompt, return_keys=True, namespace=namespace).keys
        payloads = [payload((seed, i), size) for i in range(blocks)]
        results = c.put([PutBlock(key=k, payload=p, parent_key=keys[i - 1] if i else None,
                                  tokens=BLOCK_TOKENS)
                         for i, (k, p) in enumerate(zip(keys, payloads))], namespace=namespace)
        for r in results:
            self.assertTrue(r.ok, r.error)
        return prompt, keys, payloads

    # --- lookups --------------------------------------------------------

    def test_health_reports_the_shm_socket(self):
        h = self.client.health()
        self.assertEqual(h.status, "SERVING")
        self.assertEqual(h.shm_socket, self.daemon.shm_socket)

    def test_lookup_by_tokens_returns_every_full_blocks_key(self):
        prompt = tokens(1, 3, extra=10)  # the partial block is not looked up
        r = self.client.lookup(token_ids=prompt, return_keys=True)
        self.assertEqual((r.query_blocks, r.hit_blocks, r.hit_tokens), (3, 0, 0))
        self.assertEqual(r.block_tokens, BLOCK_TOKENS)
        self.assertEqual(len(r.keys), 3)
        self.assertTrue(all(len(k) == kvtier.KEY_BYTES for k in r.keys))
        self.assertEqual(len(set(r.keys)), 3)
        self.assertIsNone(r.lease_id)
        # Keys name a prefix: the same tokens give the same keys.
        self.assertEqual(self.client.lookup(token_ids=prompt, return_keys=True).keys, r.keys)
        self.assertEqual(self.client.lookup(token_ids=prompt).keys, [])

    def test_lookup_finds_the_stored_run_by_tokens_and_by_keys(self):
        prompt, keys, payloads = self.store_prompt(2, 3)
        r = self.client.lookup(token_ids=prompt + tokens(99, 1))
        self.assertEqual((r.query_blocks, r.hit_blocks, r.hit_tokens), (4, 3, 3 * BLOCK_TOKENS))
        self.assertEqual([h.key for h in r.hits], keys)
        self.assertEqual([h.size_bytes for h in r.hits], [len(p) for p in payloads])
        self.assertTrue(all(h.tier for h in r.hits))
        by_keys = self.client.lookup(keys=keys)
        self.assertEqual((by_keys.query_blocks, by_keys.hit_blocks, by_keys.hit_tokens), (3, 3, 0))
        # The run stops at the first block that is not cached.
        self.assertTrue(self.client.exists([keys[1]])[0])
        self.client.delete(keys[1])
        self.assertEqual(self.client.lookup(keys=keys).hit_blocks, 1)

    # --- round trips ----------------------------------------------------

    def test_put_get_round_trip_is_byte_identical(self):
        prompt = tokens(3, 3)
        keys = self.client.lookup(token_ids=prompt, return_keys=True).keys
        # Over 1 MiB: sent in several data messages, read back in 64 KiB ones.
        payloads = [payload(3, 2_500_000), b"\x00" * 1, payload(4, 65_537)]
        puts = self.client.put([PutBlock(key=k, payload=p) for k, p in zip(keys, payloads)],
                               ttl_seconds=600)
        self.assertEqual([p.index for p in puts], [0, 1, 2])
        for put, p in zip(puts, payloads):
            self.assertTrue(put.ok, put.error)
            self.assertEqual(put.info.size_bytes, len(p))
        for chunk_bytes in (0, 64 << 10):
            gets = self.client.get(keys, chunk_bytes=chunk_bytes)
            for get, key, p in zip(gets, keys, payloads):
                self.assertTrue(get.ok, get.error)
                self.assertEqual(get.payload, p)
                self.assertEqual(get.info.key, key)
                self.assertEqual(get.info.size_bytes, len(p))
                self.assertEqual(get.info.payload_xxh3, xxhash.xxh3_64_intdigest(p))
                self.assertGreater(get.info.expire_time_ms, 0)  # it was given a TTL

    def test_put_takes_any_contiguous_bytes_like_payload(self):
        keys = self.client.lookup(token_ids=tokens(5, 2), return_keys=True).keys
        data = payload(5, 8192)
        puts = self.client.put([PutBlock(key=keys[0], payload=bytearray(data)),
                                PutBlock(key=keys[1], payload=memoryview(data)[:4096])])
        self.assertTrue(all(p.ok for p in puts), puts)
        self.assertEqual([g.payload for g in self.client.get(keys)], [data, data[:4096]])

    def test_a_missing_block_fails_alone(self):
        _, keys, payloads = self.store_prompt(6, 2)
        missing = self.client.lookup(token_ids=tokens(7, 1), return_keys=True).keys[0]
        gets = self.client.get([keys[0], missing, keys[1]])
        self.assertEqual([g.index for g in gets], [0, 1, 2])
        self.assertEqual(gets[0].payload, payloads[0])
        self.assertIsInstance(gets[1].error, errors.NotFound)
        self.assertEqual(gets[1].error.code, grpc.StatusCode.NOT_FOUND)
        self.assertIsNone(gets[1].payload)
        self.assertFalse(gets[1].ok)
        self.assertEqual(gets[2].payload, payloads[1])

    def test_a_bad_block_of_a_put_fails_alone(self):
        keys = self.client.lookup(token_ids=tokens(8, 2), return_keys=True).keys
        puts = self.client.put([PutBlock(key=keys[0], payload=b"a" * 100),
                                PutBlock(key=b"short", payload=b"b" * 100),
                                PutBlock(key=keys[1], payload=b"")])
        self.assertTrue(puts[0].ok, puts[0].error)
        self.assertIsInstance(puts[1].error, errors.InvalidArgument)
        self.assertIsInstance(puts[2].error, errors.InvalidArgument)
        self.assertEqual(self.client.exists(keys), [True, False])

    def test_exists_answers_each_key_on_its_own(self):
        _, keys, _ = self.store_prompt(9, 3)
        self.client.delete(keys[0])
        self.assertEqual(self.client.exists(keys), [False, True, True])
        self.assertEqual(self.client.exists([]), [])

    # --- leases ---------------------------------------------------------

    def test_a_lease_pins_the_run_until_released(self):
        _, keys, _ = self.store_prompt(10, 2)
        before_ms = time.time() * 1000
        r = self.client.lookup(keys=keys, lease_ms=5000)
        self.assertEqual(r.hit_blocks, 2)
        self.assertRegex(r.lease_id, r"^[0-9a-f]{32}$")
        self.assertGreater(r.lease_expire_time_ms, before_ms)
        with self.assertRaises(errors.FailedPrecondition):
            self.client.delete(keys[0])
        with self.assertRaises(errors.NotFound):  # another tenant's lease
            self.bob.release(r.lease_id)
        self.assertEqual(self.client.release(r.lease_id), 2)
        with self.assertRaises(errors.NotFound):
            self.client.release(r.lease_id)
        self.client.delete(keys[0])  # no longer pinned
        self.assertEqual(self.client.exists(keys), [False, True])

    def test_a_lease_on_no_hit_is_no_lease(self):
        r = self.client.lookup(token_ids=tokens(11, 2), lease_ms=5000)
        self.assertEqual(r.hit_blocks, 0)
        self.assertIsNone(r.lease_id)

    # --- shared memory --------------------------------------------------

    def test_shared_memory_both_ways(self):
        prompt = tokens(12, 3)
        keys = self.client.lookup(token_ids=prompt, return_keys=True).keys
        sizes = [100_000, 4096, 333]
        payloads = [payload((12, i), n) for i, n in enumerate(sizes)]
        with self.client.open_shm(1 << 20) as region:
            self.assertEqual(region.size, 1 << 20)
            self.assertTrue(region.id)
            offsets = [0, 200_000, 300_000]
            for off, p in zip(offsets, payloads):
                region.buf[off:off + len(p)] = p
            # By size (checksummed from the region) and by payload.
            blocks = [PutBlock(key=keys[0], shm_offset=offsets[0], size=sizes[0]),
                      PutBlock(key=keys[1], shm_offset=offsets[1], size=sizes[1]),
                      PutBlock(key=keys[2], shm_offset=offsets[2], payload=payloads[2])]
            puts = self.client.put(blocks, region=region)
            self.assertTrue(all(p.ok for p in puts), puts)
            self.assertEqual([g.payload for g in self.client.get(keys)], payloads)

            back = [500_000, 700_000, 800_000]
            gets = self.client.get(keys, region=region, offsets=back)
            for g, off, p in zip(gets, back, payloads):
                self.assertTrue(g.ok, g.error)
                self.assertIsNone(g.payload)
                self.assertEqual(g.info.size_bytes, len(p))
                self.assertEqual(bytes(region.buf[off:off + len(p)]), p)

            # A block that does not fit at its offset fails alone.
            gets = self.client.get(keys[:2], region=region, offsets=[(1 << 20) - 10, 0])
            self.assertIsInstance(gets[0].error, errors.InvalidArgument)
            self.assertTrue(gets[1].ok, gets[1].error)

    def test_a_put_whose_region_bytes_differ_from_the_payload_fails(self):
        key = self.client.lookup(token_ids=tokens(13, 1), return_keys=True).keys[0]
        with self.client.open_shm(8192) as region:
            region.buf[0:4096] = b"x" * 4096
            [put] = self.client.put([PutBlock(key=key, payload=b"y" * 4096)], region=region)
            self.assertIsInstance(put.error, errors.InvalidArgument)  # the daemon's checksum
        self.assertEqual(self.client.exists([key]), [False])

    def test_bytes_overwritten_in_the_region_are_data_loss_not_bytes(self):
        # Two blocks written over each other: the first one's bytes in the
        # region no longer match its checksum, and the client says so.
        _, keys, payloads = self.store_prompt(14, 2, size=4096)
        with self.client.open_shm(16384) as region:
            gets = self.client.get(keys, region=region, offsets=[0, 2048])
            self.assertIsInstance(gets[0].error, errors.DataLoss)
            self.assertEqual(gets[0].error.code, grpc.StatusCode.DATA_LOSS)
            self.assertTrue(gets[1].ok, gets[1].error)
            self.assertEqual(bytes(region.buf[2048:2048 + 4096]), payloads[1])

    def raw_get_with_region(self, client, region_id, key):
        """BatchGet through the raw stub naming a region id: the status code."""
        request = kvtier.pb2.BatchGetRequest(keys=[key], shm_region=region_id, shm_offsets=[0])
        try:
            list(client.block_store.BatchGet(request, timeout=10, metadata=client._metadata))
            return grpc.StatusCode.OK
        except grpc.RpcError as e:
            return e.code()

    def test_a_region_is_released_on_close_and_is_its_tenants_alone(self):
        _, [key], _ = self.store_prompt(15, 1)
        region = self.client.open_shm(8192)
        self.assertEqual(self.raw_get_with_region(self.client, region.id, key), grpc.StatusCode.OK)
        self.assertEqual(self.raw_get_with_region(self.bob, region.id, key),
                         grpc.StatusCode.NOT_FOUND)
        region.close()
        self.assertTrue(region.closed)
        region.close()  # idempotent
        # The daemon drops the region when it sees the socket close.
        deadline = time.monotonic() + 10
        while self.raw_get_with_region(self.client, region.id, key) == grpc.StatusCode.OK:
            self.assertLess(time.monotonic(), deadline, "the region outlived its socket")
            time.sleep(0.05)
        self.assertEqual(self.raw_get_with_region(self.client, region.id, key),
                         grpc.StatusCode.NOT_FOUND)
        with self.assertRaises(errors.InvalidArgument):
            self.client.get([key], region=region, offsets=[0])

    def test_a_region_survives_views_the_caller_still_holds(self):
        region = self.client.open_shm(4096)
        view = region.buf[0:16]
        array = numpy.frombuffer(region.buf, dtype=numpy.uint8)
        region.close()
        self.assertTrue(region.closed)
        view[0] = 7  # still mapped here, though the daemon released it
        self.assertEqual(array[0], 7)

    # --- typed errors ---------------------------------------------------

    def test_bad_input_raises_typed_errors(self):
        with self.assertRaises(errors.InvalidArgument):
            self.client.get([b"fifteen bytes!!"])
        with self.assertRaises(errors.InvalidArgument):
            self.client.exists([b"x" * 17])
        with self.assertRaises(errors.InvalidArgument):
            self.client.lookup(keys=[b"x" * 3])
        with self.assertRaises(errors.InvalidArgument):  # neither query
            self.client.lookup()
        with self.assertRaises(errors.InvalidArgument):  # past --max-lease-ms (60000)
            self.client.lookup(token_ids=tokens(16, 1), lease_ms=3_600_000)
        with self.assertRaises(errors.InvalidArgument):  # not a power of two
            self.client.lookup(token_ids=tokens(16, 1), namespace=Namespace(block_tokens=48))
        with self.assertRaises(errors.InvalidArgument):
            self.client.get([b"k" * 16], chunk_bytes=5 << 20)
        # Caught here, before anything is sent.
        with self.assertRaises(errors.InvalidArgument):
            self.client.put([PutBlock(key=b"k" * 16)])
        with self.assertRaises(errors.InvalidArgument):
            self.client.get([b"k" * 16], offsets=[0])
        with self.assertRaises(errors.InvalidArgument):
            self.client.lookup(token_ids=tokens(16, 1), lease_ms=-1)
        with self.assertRaises(errors.InvalidArgument):
            self.client.open_shm(0)

    def test_a_bad_api_key_is_unauthenticated(self):
        key = b"k" * 16
        for api_key in ("not-a-key-of-this-daemon", None):
            with KvtierClient(self.daemon.addr, api_key=api_key) as c:
                with self.assertRaises(errors.Unauthenticated) as e:
                    c.exists([key])
                self.assertEqual(e.exception.code, grpc.StatusCode.UNAUTHENTICATED)
                with self.assertRaises(errors.Unauthenticated):
                    c.get([key])
                with self.assertRaises(errors.Unauthenticated):
                    c.put([PutBlock(key=key, payload=b"x")])
                with self.assertRaises(errors.Unauthenticated):
                    c.open_shm(4096)

    def test_an_unreachable_daemon_is_unavailable(self):
        with KvtierClient("127.0.0.1:1", api_key=ALICE_KEY, timeout=5) as c:
            with self.assertRaises((errors.Unavailable, errors.DeadlineExceeded)):
                c.health()
        with self.assertRaises(errors.Unavailable):
            self.client.open_shm(4096, socket_path=os.path.join(self.daemon.dir, "nothing.sock"))

    def test_errors_map_codes_to_classes(self):
        self.assertIsInstance(errors.from_code(5, "gone"), errors.NotFound)
        self.assertIsInstance(errors.from_code(grpc.StatusCode.DATA_LOSS), errors.DataLoss)
        other = errors.from_code(10, "aborted")  # no class of its own
        self.assertIs(type(other), errors.KvtierError)
        self.assertEqual(other.code, grpc.StatusCode.ABORTED)
        self.assertEqual(errors.NotFound("x").code, grpc.StatusCode.NOT_FOUND)
        self.assertEqual(str(errors.KvtierError(grpc.StatusCode.INTERNAL, "boom")),
                         "INTERNAL: boom")

    # --- isolation ------------------------------------------------------

    def test_another_tenant_never_sees_a_tenants_blocks(self):
        prompt, keys, payloads = self.store_prompt(17, 2)
        self.assertEqual(self.bob.lookup(token_ids=prompt).hit_blocks, 0)
        self.assertEqual(self.bob.lookup(keys=keys).hit_blocks, 0)
        self.assertEqual(self.bob.exists(keys), [False, False])
        self.assertTrue(all(isinstance(g.error, errors.NotFound) for g in self.bob.get(keys)))
        self.assertNotEqual(self.bob.lookup(token_ids=prompt, return_keys=True).keys, keys)
        # Bob storing the same prompt changes nothing for Alice.
        self.store_prompt(17, 2, size=100, client=self.bob)
        self.assertEqual([g.payload for g in self.client.get(keys)], payloads)

    def test_another_namespace_never_sees_a_namespaces_blocks(self):
        rank0 = Namespace(tp_rank=0, tp_size=2)
        rank1 = Namespace(tp_rank=1, tp_size=2)
        prompt, keys, _ = self.store_prompt(18, 1, namespace=rank0)
        self.assertEqual(self.client.exists(keys, namespace=rank0), [True])
        self.assertEqual(self.client.exists(keys, namespace=rank1), [False])
        self.assertEqual(self.client.exists(keys), [False])  # the default namespace
        self.assertEqual(self.client.lookup(token_ids=prompt, namespace=rank1).hit_blocks, 0)
        # A client's default namespace applies to every call.
        with KvtierClient(self.daemon.addr, api_key=ALICE_KEY, namespace=rank0) as c:
            self.assertEqual(c.lookup(token_ids=prompt).hit_blocks, 1)
            self.assertEqual(c.exists(keys, namespace=rank1), [False])


class GeneratedStubsTest(unittest.TestCase):
    """kvtier/_proto.py: stubs generated at first import, once, under a lock."""

    def setUp(self):
        # A copy of the package without its _gen/, so this never disturbs
        # the installed one other tests import at the same time.
        self.dir = tempfile.mkdtemp(prefix="kvtier_gen_")
        src = Path(kvtier.__file__).parent
        # Under another name: the installed kvtier's import hook would win
        # over PYTHONPATH for "kvtier".
        shutil.copytree(src, Path(self.dir) / "kvtier_copy",
                        ignore=shutil.ignore_patterns("_gen", "__pycache__"))
        self.proto = Path(self.dir) / "kvtier.proto"
        shutil.copyfile(src.parents[2] / "proto" / "kvtier.proto", self.proto)
        self.env = dict(os.environ, PYTHONPATH=self.dir, KVTIER_PROTO=str(self.proto))

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def import_in(self, n):
        """Imports the copy in n processes at once; each prints its HealthResponse fields."""
        code = ("import kvtier_copy as k; "
                "print(k.__file__); "
                "print(sorted(k.pb2.HealthResponse.DESCRIPTOR.fields_by_name))")
        procs = [subprocess.Popen([sys.executable, "-c", code], env=self.env, cwd=self.dir,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(n)]
        outs = [p.communicate(timeout=120) for p in procs]
        for p, (out, err) in zip(procs, outs):
            self.assertEqual(p.returncode, 0, err)
            self.assertTrue(out.startswith(self.dir), out)
            self.assertIn("'shm_socket'", out)

    def test_concurrent_first_imports_all_succeed(self):
        self.import_in(4)
        gen = Path(self.dir) / "kvtier_copy" / "_gen"
        self.assertTrue((gen / "kvtier_pb2_grpc.py").is_file())
        text = (gen / "kvtier_pb2_grpc.py").read_text()
        self.assertIn("from . import kvtier_pb2", text)
        self.assertEqual([p.name for p in gen.iterdir() if p.name.startswith(".protoc-")], [])

    def test_a_newer_proto_is_generated_again(self):
        self.import_in(1)
        gen = Path(self.dir) / "kvtier_copy" / "_gen"
        grpc_py = gen / "kvtier_pb2_grpc.py"
        old = grpc_py.stat().st_mtime_ns
        newer = max(p.stat().st_mtime_ns for p in gen.glob("*.py")) + 1
        os.utime(self.proto, ns=(newer, newer))
        self.import_in(1)
        self.assertGreater(grpc_py.stat().st_mtime_ns, old)

    def test_stubs_of_other_tools_are_generated_again(self):
        # Another virtualenv (another protobuf) sharing the checkout made them.
        self.import_in(1)
        init = Path(self.dir) / "kvtier_copy" / "_gen" / "__init__.py"
        ours = init.read_text()
        self.assertIn("# generated by grpcio-tools ", ours)
        init.write_text(ours.replace("for protobuf ", "for protobuf 0.0.0-"))
        self.import_in(1)
        self.assertEqual(init.read_text(), ours)

    def test_a_missing_proto_is_a_clear_import_error(self):
        self.env["KVTIER_PROTO"] = str(Path(self.dir) / "nothing.proto")
        p = subprocess.run([sys.executable, "-c", "import kvtier_copy"], env=self.env,
                           cwd=self.dir, capture_output=True, text=True, timeout=120)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("KVTIER_PROTO", p.stderr)


if __name__ == "__main__":
    unittest.main()
