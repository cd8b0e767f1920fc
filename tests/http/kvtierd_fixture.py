"""A real kvtierd on loopback for the HTTP API tests (tests/http/*_test.py).

Starts build/bin/kvtierd (KVTIER_BIN_DIR) in a fresh data directory with two
tenants' API keys, the gRPC API and the HTTP API each on a port the daemon
picks (":0"; a port chosen here and bound there could be taken in between by
another process), and stops it (SIGTERM) at the end. Python is used here only
because the tests drive the real anthropic and openai SDKs.
"""
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

ALICE_KEY = "alice-key-0123456789abcdef"
BOB_KEY = "bob-key-0123456789abcdef00"
CAROL_KEY = "carol-key-0123456789abcdef"


def _bound_http_port(log_path):
    """The HTTP port kvtierd bound, from its kvtierd_serving log line."""
    with open(log_path, encoding="utf-8") as f:
        for line in f:
            if " kvtierd_serving " not in line:
                continue
            for field in line.split():
                if field.startswith("http=") and ":" in field:
                    return int(field.rsplit(":", 1)[1])
    raise RuntimeError(f"kvtierd's serving line names no HTTP address ({log_path})")


class Kvtierd:
    """kvtierd with --http-listen on a loopback port it picks."""

    def __init__(self, extra_args=()):
        self.bin_dir = os.environ.get("KVTIER_BIN_DIR", "build/bin")
        self.dir = tempfile.mkdtemp(prefix="kvtier_http_")
        keys = os.path.join(self.dir, "keys")
        with open(keys, "w") as f:
            f.write(f"{ALICE_KEY} alice\n{BOB_KEY} bob\n{CAROL_KEY} carol\n")
        log_path = os.path.join(self.dir, "kvtierd.log")
        self._log = open(log_path, "w", encoding="utf-8")
        args = [
            os.path.join(self.bin_dir, "kvtierd"),
            "--listen", "127.0.0.1:0",
            "--data-dir", os.path.join(self.dir, "data"),
            "--http-listen", "127.0.0.1:0",
            "--metrics-listen", "",
            "--api-keys", keys,
            "--flash-bytes", "64M", "--flash-region-bytes", "4M",
            "--model-preset", "tiny-8k",
            *extra_args,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self._log,
                                     text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("kvtierd serving on "):
            self.proc.wait()
            raise RuntimeError(f"kvtierd did not start (exit {self.proc.returncode}): {line!r}")
        self.grpc_address = line.split()[-1]
        self.http_port = _bound_http_port(log_path)
        self.base_url = f"http://127.0.0.1:{self.http_port}"
        # The HTTP API starts before the line above is printed; wait until
        # it answers (a bound port answers at once).
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(self.base_url + "/health", timeout=5).read()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)

    def metrics(self):
        """kvtierd's Prometheus text is served on another port; not used here."""
        raise NotImplementedError

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            code = self.proc.wait(timeout=60)
            if code != 0:
                raise RuntimeError(f"kvtierd exited {code}")
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def kvtier(self, *args, key=ALICE_KEY):
        """Runs the kvtier CLI against this daemon; returns its stdout."""
        out = subprocess.run(
            [os.path.join(self.bin_dir, "kvtier"), "--addr", self.grpc_address, "--api-key", key,
             *args], check=True, capture_output=True, text=True)
        return out.stdout
