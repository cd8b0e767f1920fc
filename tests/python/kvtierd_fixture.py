"""A real kvtierd for the Python client tests (tests/python/*_test.py).

Starts $KVTIER_BIN_DIR/kvtierd (default build/bin) without a model, in a
fresh directory, with two tenants' API keys, the gRPC API on a free loopback
port and the shared-memory socket in that directory; stop() sends SIGTERM
and fails unless the daemon exits 0 (so a crash or a sanitizer's report at
exit fails the test).
"""
import os
import shutil
import signal
import subprocess
import tempfile

ALICE_KEY = "alice-key-0123456789abcdef"
BOB_KEY = "bob-key-0123456789abcdef00"


class Kvtierd:
    """kvtierd --no-engine; .addr is its gRPC address, .shm_socket its socket."""

    def __init__(self, extra_args=()):
        bin_dir = os.environ.get("KVTIER_BIN_DIR", "build/bin")
        self.dir = tempfile.mkdtemp(prefix="kvtier_py_")
        keys = os.path.join(self.dir, "keys")
        with open(keys, "w") as f:
            f.write(f"{ALICE_KEY} alice\n{BOB_KEY} bob\n")
        self.shm_socket = os.path.join(self.dir, "kvtierd.sock")
        self.log_path = os.path.join(self.dir, "kvtierd.log")
        args = [
            os.path.join(bin_dir, "kvtierd"),
            "--listen", "127.0.0.1:0",
            "--data-dir", os.path.join(self.dir, "data"),
            "--no-engine",
            "--metrics-listen", "",
            "--http-listen", "",
            "--dram-bytes", "64M",
            "--flash-bytes", "64M", "--flash-region-bytes", "4M",
            "--rocks-bytes", "64M",
            "--api-keys", keys,
            "--shm-socket", self.shm_socket,
            *extra_args,
        ]
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self._log, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("kvtierd serving on "):
            self.proc.wait()
            raise RuntimeError(f"kvtierd did not start (exit {self.proc.returncode}): "
                               f"{line!r}\n{self.log()}")
        self.addr = line.split()[-1]

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def stop(self):
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                code = self.proc.wait(timeout=60)
            else:
                code = self.proc.returncode
            if code != 0:
                raise RuntimeError(f"kvtierd exited {code}:\n{self.log()}")
        finally:
            self.proc.stdout.close()
            self._log.close()
            shutil.rmtree(self.dir, ignore_errors=True)
