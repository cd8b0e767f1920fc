"""KvtierClient: kvtierd's block API (service BlockStore, docs/block-api.md).

Thread-safe: one gRPC channel, shared; the client holds no other state.
Every call has a deadline (`timeout` seconds) and sends the API key as
metadata x-api-key. A call that fails as a whole raises the errors class of
its gRPC status; the batched calls (get, put) return each block's own
failure in its result instead, and hand out no byte that fails its XXH3-64
checksum.
"""
import grpc
import xxhash

from . import errors
from ._proto import pb2, pb2_grpc
from .blocks import BlockInfo, GetResult, LookupResult, Namespace, PutResult
from .shm import ShmRegion

# Payload bytes per data message of a put: the service's advised size (the
# hard limit is 4 MiB a message).
PUT_CHUNK_BYTES = 1 << 20
# A get's data messages are at most 4 MiB of payload plus framing; grpc's
# default receive limit (4 MiB) would refuse the largest.
_MAX_MESSAGE_BYTES = 8 << 20


def _view(payload, what):
    """A flat byte view of a bytes-like payload (no copy)."""
    try:
        view = memoryview(payload)
        return view if view.format == "B" and view.ndim == 1 else view.cast("B")
    except TypeError as e:
        raise errors.InvalidArgument(
            f"{what}: the payload must be a C-contiguous bytes-like object ({e})") from None


class KvtierClient:
    """A client of one kvtierd.

    addr: host:port of kvtierd's gRPC API. api_key: sent as x-api-key (None
    when the daemon runs without --api-keys). namespace: the Namespace every
    call uses unless it passes its own (None = the daemon's default).
    timeout: each call's deadline, seconds. tls_ca_pem: PEM roots to connect
    over TLS (None = plaintext).
    """

    def __init__(self, addr="127.0.0.1:50051", api_key=None, namespace=None, timeout=30.0,
                 tls_ca_pem=None):
        self.addr = addr
        self.api_key = api_key
        self.namespace = namespace
        self.timeout = timeout
        options = [("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
                   ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES)]
        if tls_ca_pem:
            pem = tls_ca_pem.encode() if isinstance(tls_ca_pem, str) else tls_ca_pem
            self._channel = grpc.secure_channel(addr, grpc.ssl_channel_credentials(pem), options)
        else:
            self._channel = grpc.insecure_channel(addr, options)
        self._metadata = (("x-api-key", api_key),) if api_key else ()
        # The generated stubs, for calls this class does not wrap (tests use them).
        self.block_store = pb2_grpc.BlockStoreStub(self._channel)
        self.admin = pb2_grpc.AdminStub(self._channel)

    # --- plumbing -------------------------------------------------------

    def _call(self, method, request, timeout=None):
        """Runs a unary call (or a stream-unary one, given an iterator), with
        `timeout` seconds or the client's."""
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout,
                          metadata=self._metadata)
        except grpc.RpcError as e:
            raise errors.from_rpc_error(e) from None

    def _ns(self, namespace):
        """The proto Namespace of a call, or None for the daemon's default."""
        ns = namespace if namespace is not None else self.namespace
        if ns is None:
            return None
        return ns.to_proto(pb2) if isinstance(ns, Namespace) else ns

    @staticmethod
    def _message(cls, **fields):
        """A request message; a field of the wrong type or range (a negative
        lease, a key that is not bytes) is the caller's InvalidArgument."""
        try:
            return cls(**{k: v for k, v in fields.items() if v is not None})
        except (TypeError, ValueError) as e:
            raise errors.InvalidArgument(f"{cls.DESCRIPTOR.name}: {e}") from None

    # --- calls ----------------------------------------------------------

    def health(self):
        """The daemon's HealthResponse (status, version, listen, shm_socket,
        ...). Needs no API key. Raises Unavailable when it cannot be reached."""
        return self._call(self.admin.Health, pb2.HealthRequest())

    def lookup(self, token_ids=None, keys=None, lease_ms=0, return_keys=False, namespace=None,
               timeout=None):
        """The longest cached run from the first block of `token_ids` (every
        full block of them) or of `keys` (16-byte block keys in prefix order),
        and where each hit block lives. Exactly one of token_ids and keys.

        No side effects: not a use, no recency or TTL refresh. return_keys
        (with token_ids) returns every full block's key. lease_ms > 0 keeps
        the hit run from eviction until release() or the lease's end; the
        result's lease_id is None without a lease or without a hit.

        Raises InvalidArgument (neither or both queries, a key not 16 bytes,
        a bad namespace, a lease longer than the daemon's --max-lease-ms) and
        ResourceExhausted (the tenant's lease limits), Unauthenticated.
        `timeout` (seconds) replaces the client's deadline for this call.
        """
        request = self._message(
            pb2.BatchLookupRequest, namespace=self._ns(namespace), token_ids=token_ids,
            keys=keys, lease_ms=lease_ms, return_keys=return_keys)
        r = self._call(self.block_store.BatchLookup, request, timeout)
        return LookupResult(
            query_blocks=r.query_blocks, hit_blocks=r.hit_blocks, hit_tokens=r.hit_tokens,
            block_tokens=r.block_tokens, hits=[BlockInfo.from_proto(h) for h in r.hits],
            keys=[bytes(k) for k in r.keys], lease_id=r.lease_id or None,
            lease_expire_time_ms=r.lease_expire_time_ms)

    def exists(self, keys, namespace=None):
        """For each key on its own, whether it is cached (no side effects).
        Raises InvalidArgument for a key that is not 16 bytes."""
        keys = list(keys)
        request = self._message(pb2.ExistsRequest, namespace=self._ns(namespace), keys=keys)
        r = self._call(self.block_store.Exists, request)
        if len(r.exists) != len(keys):
            raise errors.DataLoss(f"Exists answered {len(r.exists)} of {len(keys)} keys")
        return list(r.exists)

    def get(self, keys, region=None, offsets=None, chunk_bytes=0, namespace=None, verify=True):
        """Fetches blocks: one GetResult per key, in order.

        Without a region, each payload comes back as bytes (in data messages
        of chunk_bytes; 0 = the daemon's 1 MiB). With a region (an open
        ShmRegion of this daemon), block i is written into it at offsets[i]
        and its result's payload is None. Every payload's XXH3-64 is checked
        here (in the region, when there); a mismatch becomes DataLoss for
        that block, never bytes. verify=False skips the check of blocks in a
        region (a pass over the bytes): the daemon verified each block
        against its checksum as it wrote it there.

        A block fails alone: NotFound when it is not cached (or failed its
        checksum in a tier), InvalidArgument when it does not fit in the
        region at its offset. Reading is a use: it refreshes the TTL.
        Raises InvalidArgument for a malformed call (a key not 16 bytes,
        offsets without a region or not one per key, chunk_bytes over 4 MiB)
        and NotFound for a region the daemon does not know (closed).
        """
        keys = list(keys)
        if region is not None:
            if region.closed:
                raise errors.InvalidArgument(f"{region!r} is closed")
            if offsets is None or len(offsets) != len(keys):
                raise errors.InvalidArgument("a get into a region needs one offset per key")
            offsets = [int(o) for o in offsets]  # numpy integers too
        elif offsets is not None:
            raise errors.InvalidArgument("offsets go with a region")
        request = self._message(
            pb2.BatchGetRequest, namespace=self._ns(namespace), keys=keys,
            chunk_bytes=chunk_bytes, shm_region=region.id if region is not None else None,
            shm_offsets=offsets)
        results = [GetResult(i, error=errors.NotFound("kvtierd sent nothing for this key"))
                   for i in range(len(keys))]
        chunks = {}  # index -> the payload's data messages, for blocks that came inline
        stream = self._call(self.block_store.BatchGet, request)
        current = None  # the block whose payload is arriving
        try:
            for msg in stream:
                if msg.WhichOneof("part") == "block":
                    b = msg.block
                    if b.index >= len(keys):
                        stream.cancel()
                        raise errors.DataLoss(
                            f"kvtierd answered for block {b.index} of {len(keys)}")
                    current = results[b.index]
                    chunks.pop(b.index, None)
                    if b.code == 0:
                        current.error, current.info = None, BlockInfo.from_proto(b.info)
                        if region is None:
                            chunks[b.index] = []
                    else:
                        current.error, current.info = errors.from_code(b.code, b.message), None
                elif current is not None and current.index in chunks:
                    chunks[current.index].append(msg.data)
                else:
                    stream.cancel()
                    raise errors.DataLoss("kvtierd sent payload bytes for no block")
        except grpc.RpcError as e:
            raise errors.from_rpc_error(e) from None
        for r in results:
            if r.ok and (verify or region is None):
                self._verify(r, region, offsets, chunks.get(r.index))
        return results

    @staticmethod
    def _verify(result, region, offsets, chunks):
        """Sets result.payload (inline) after checking its size and checksum;
        on a mismatch, result.error becomes DataLoss and no bytes are kept."""
        size = result.info.size_bytes
        if region is not None:
            offset = offsets[result.index]
            if offset + size > region.size:
                result.error = errors.DataLoss(
                    f"kvtierd placed block {result.index} outside the region")
            elif xxhash.xxh3_64_intdigest(region.buf[offset:offset + size]) != \
                    result.info.payload_xxh3:
                result.error = errors.DataLoss(
                    f"block {result.index} in the region does not match its checksum")
            return
        payload = b"".join(chunks)
        if len(payload) != size:
            result.error = errors.DataLoss(
                f"kvtierd sent {len(payload)} bytes for a block of {size}")
        elif xxhash.xxh3_64_intdigest(payload) != result.info.payload_xxh3:
            result.error = errors.DataLoss(f"block {result.index} arrived with a bad checksum")
        else:
            result.payload = payload

    def put(self, blocks, ttl_seconds=0, region=None, namespace=None):
        """Stores blocks: one PutResult per PutBlock, in order.

        Without a region, each block's payload is sent in data messages of
        at most 1 MiB. With a region, the payload's bytes must already be in
        it at block.shm_offset (block.size of them, or len(block.payload));
        the daemon copies them from there. Each block's XXH3-64 is computed
        here (from block.payload when given, else from the region) and the
        daemon checks the bytes it got against it.

        ttl_seconds: how long an unused block is kept (0 = the daemon's
        default); a read refreshes it. A block fails alone: InvalidArgument
        (a key not 16 bytes, an empty payload, bytes that do not match their
        checksum, a payload outside the region), ResourceExhausted (larger
        than the daemon's block limit, or no room). Raises InvalidArgument
        for a malformed call (a block with no payload and no region, a size
        that disagrees with the payload, a block outside a region given),
        NotFound for a region the daemon does not know (closed).
        """
        blocks = list(blocks)
        if region is not None and region.closed:
            raise errors.InvalidArgument(f"{region!r} is closed")
        items = [self._put_item(i, b, region) for i, b in enumerate(blocks)]
        header = self._message(
            pb2.BatchPutHeader, namespace=self._ns(namespace), ttl_seconds=ttl_seconds,
            shm_region=region.id if region is not None else None)

        def requests():
            yield pb2.BatchPutRequest(header=header)
            for block, view in items:
                yield pb2.BatchPutRequest(block=block)
                if view is None:
                    continue
                for off in range(0, len(view), PUT_CHUNK_BYTES):
                    yield pb2.BatchPutRequest(data=bytes(view[off:off + PUT_CHUNK_BYTES]))

        r = self._call(self.block_store.BatchPut, requests())
        if len(r.results) != len(blocks):
            raise errors.DataLoss(f"BatchPut answered {len(r.results)} of {len(blocks)} blocks")
        return [PutResult(i, error=None, info=BlockInfo.from_proto(res.block)) if res.code == 0
                else PutResult(i, error=errors.from_code(res.code, res.message))
                for i, res in enumerate(r.results)]

    def _put_item(self, i, block, region):
        """(BatchPutBlock, the view to send or None) for block i."""
        view = _view(block.payload, f"block {i}") if block.payload is not None else None
        if region is None:
            if view is None:
                raise errors.InvalidArgument(f"block {i} has no payload (and no region is given)")
            if block.size is not None and block.size != len(view):
                raise errors.InvalidArgument(
                    f"block {i}: size {block.size} but the payload has {len(view)} bytes")
            checksum = xxhash.xxh3_64_intdigest(view)
        else:
            size = block.size if block.size is not None else (len(view) if view is not None
                                                              else None)
            if size is None:
                raise errors.InvalidArgument(f"block {i} in a region needs a size or a payload")
            if block.shm_offset < 0 or size < 0 or block.shm_offset + size > region.size:
                raise errors.InvalidArgument(
                    f"block {i} ({size} bytes at offset {block.shm_offset}) is not inside "
                    f"the region of {region.size} bytes")
            if view is not None and len(view) != size:
                raise errors.InvalidArgument(
                    f"block {i}: size {size} but the payload has {len(view)} bytes")
            # The daemon checks what it copies out of the region against this.
            source = view if view is not None else \
                region.buf[block.shm_offset:block.shm_offset + size]
            checksum = xxhash.xxh3_64_intdigest(source)
        message = self._message(
            pb2.BatchPutBlock, key=block.key, parent_key=block.parent_key,
            size_bytes=len(view) if region is None else size, payload_xxh3=checksum,
            shm_offset=block.shm_offset if region is not None else None, tokens=block.tokens)
        return message, (view if region is None else None)

    def release(self, lease_id, timeout=None):
        """Ends a lease early; returns how many blocks it released.
        Raises NotFound for an unknown, expired, released or another
        tenant's lease. `timeout` as for lookup()."""
        request = self._message(pb2.ReleaseRequest, lease_id=lease_id)
        return self._call(self.block_store.Release, request, timeout).released_blocks

    def delete(self, key, namespace=None):
        """Removes one block. Raises NotFound when it is not cached and
        FailedPrecondition while a lease or a request has it pinned."""
        request = self._message(pb2.DeleteRequest, key=key, namespace=self._ns(namespace))
        self._call(self.block_store.Delete, request)

    def open_shm(self, nbytes, socket_path=None):
        """Maps a same-host shared-memory region of `nbytes` (ShmRegion),
        through the socket Health reports (or `socket_path`). Close it (or
        use it as a context manager) to release it in the daemon. Raises
        FailedPrecondition when the daemon has no socket (--shm-socket off),
        and what ShmRegion.open raises."""
        path = socket_path if socket_path is not None else self.health().shm_socket
        return ShmRegion.open(path, nbytes, api_key=self.api_key, timeout=self.timeout)

    def close(self):
        """Closes the channel; regions opened through it stay open until
        their own close()."""
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
