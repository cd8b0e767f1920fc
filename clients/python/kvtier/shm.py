"""ShmRegion: a same-host shared-memory region of kvtierd, mapped here.

The handshake (docs/block-api.md): connect to the daemon's Unix socket
(Health's shm_socket), send `KVTIER-SHM/1 <bytes> <api-key or ->\\n`; the
daemon answers `OK <region-id> <bytes>\\n` with a memfd attached
(SCM_RIGHTS), or `ERR <code> <why>\\n` (a gRPC status code name). The
region lives while the socket is open, so the region object keeps it open
until close().

Not thread-safe to close while another thread uses .buf; the bytes
themselves may be read and written from any thread.
"""
import mmap
import os
import socket

import grpc

from . import errors

_MAX_ANSWER_BYTES = 1024


def _refusal(answer):
    """The error for an `ERR <code> <why>` answer: <code> is a gRPC status
    code name (UNAUTHENTICATED, INVALID_ARGUMENT, RESOURCE_EXHAUSTED, ...),
    mapped as a call's status would be."""
    code_name, _, why = answer.partition(" ")
    code = getattr(grpc.StatusCode, code_name, None)
    message = f"kvtierd refused the shared-memory region: {why}"
    if not isinstance(code, grpc.StatusCode):
        return errors.Unavailable(f"kvtierd refused the shared-memory region: {answer}")
    return errors.from_code(code, message)


class ShmRegion:
    """A mapped region: .id (what BatchGet/BatchPut name), .size (bytes) and
    .buf (a writable memoryview over the mapping). close() (or leaving a
    `with` block) unmaps it and closes the socket, which makes the daemon
    release the region; views into .buf taken by the caller keep the memory
    mapped here until they are dropped, but the daemon no longer uses it."""

    def __init__(self, sock, region_id, mapping):
        self._sock = sock
        self._mmap = mapping
        self.id = region_id
        self.size = len(mapping)
        self.buf = memoryview(mapping)

    @classmethod
    def open(cls, socket_path, nbytes, api_key=None, timeout=30.0):
        """Makes a region of `nbytes` through the daemon's socket.

        Raises InvalidArgument (nbytes not positive or over the daemon's
        --shm-max-region-bytes), Unauthenticated (a bad API key),
        ResourceExhausted (the daemon's shared memory is used up) or
        Unavailable (no socket there, or another refusal).
        """
        if not isinstance(nbytes, int) or nbytes <= 0:
            raise errors.InvalidArgument(f"a region needs a positive size, not {nbytes!r}")
        if not socket_path:
            raise errors.FailedPrecondition(
                "kvtierd serves no shared-memory socket (kvtierd --shm-socket off)")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            try:
                sock.connect(socket_path)
                sock.sendall(f"KVTIER-SHM/1 {nbytes} {api_key or '-'}\n".encode())
                line, fd = cls._read_answer(sock)
            except OSError as e:
                raise errors.Unavailable(
                    f"shared-memory handshake on {socket_path} failed: {e}") from None
            try:
                words = line.split()
                if line.startswith("ERR "):
                    raise _refusal(line[4:])
                if len(words) != 3 or words[0] != "OK" or fd is None or words[2] != str(nbytes):
                    raise errors.Unavailable(
                        f"kvtierd answered the shared-memory handshake with {line!r}")
                # kvtierd allocated the memory; MAP_POPULATE (Linux, Python
                # 3.10+) maps every page now, off the first load's path.
                flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
                mapping = mmap.mmap(fd, nbytes, flags, mmap.PROT_READ | mmap.PROT_WRITE)
            finally:
                if fd is not None:
                    os.close(fd)  # the mapping keeps the memory
            sock.settimeout(None)
            return cls(sock, words[1], mapping)
        except BaseException:
            sock.close()
            raise

    @staticmethod
    def _read_answer(sock):
        """One line, and the descriptor that came with its first bytes."""
        data, fd = b"", None
        while b"\n" not in data and len(data) < _MAX_ANSWER_BYTES:
            chunk, fds, _, _ = socket.recv_fds(sock, 256, 1)
            for received in fds:
                if fd is None:
                    fd = received
                else:
                    os.close(received)
            if not chunk:
                break
            data += chunk
        return data.split(b"\n", 1)[0].decode(errors="replace"), fd

    @property
    def closed(self):
        return self._sock is None

    def close(self):
        """Unmaps the region and closes the socket: the daemon releases it
        (calls already using it finish first). Idempotent."""
        if self._sock is None:
            return
        try:
            self.buf.release()
            self._mmap.close()
        except BufferError:
            pass  # views the caller holds (numpy arrays, ...): unmapped when they go
        self._sock.close()
        self._sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if getattr(self, "_sock", None) is not None:
            self.close()

    def __repr__(self):
        state = "closed" if self.closed else f"{self.size} bytes"
        return f"ShmRegion(id={self.id!r}, {state})"
