"""The gRPC stubs of proto/kvtier.proto, generated on first import.

Generated code is not committed: the first import runs grpc_tools.protoc over
the repository's proto/kvtier.proto (or $KVTIER_PROTO) into kvtier/_gen/, and
again whenever the proto is newer than what was generated. A file lock keeps
concurrent imports (two test processes, several engine workers) from racing:
one generates, the others wait and then import its result.
"""
import fcntl
import importlib
import os
import re
import shutil
import tempfile
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
_GEN_DIR = _PACKAGE_DIR / "_gen"
# Written in this order, so the last one's presence means a whole set.
_GEN_FILES = ("__init__.py", "kvtier_pb2.py", "kvtier_pb2_grpc.py")


def _find_proto():
    """The proto to generate from: $KVTIER_PROTO, else the repository's
    proto/kvtier.proto above clients/python/kvtier/; None when neither exists."""
    env = os.environ.get("KVTIER_PROTO")
    if env:
        path = Path(env)
        if not path.is_file():
            raise ImportError(f"KVTIER_PROTO={env} is not a file")
        return path
    path = _PACKAGE_DIR.parents[2] / "proto" / "kvtier.proto"
    return path if path.is_file() else None


def _is_current(proto):
    """Whether every generated file exists and none is older than the proto."""
    try:
        mtimes = [(_GEN_DIR / f).stat().st_mtime_ns for f in _GEN_FILES]
    except FileNotFoundError:
        return False
    return proto is None or min(mtimes) >= proto.stat().st_mtime_ns


def _generate(proto):
    """Runs protoc into a scratch folder beside _gen/, then moves each file in
    with an atomic rename, so a reader never imports a half-written module."""
    from grpc_tools import protoc  # only needed when generating
    import importlib.resources

    well_known = importlib.resources.files("grpc_tools") / "_proto"
    with tempfile.TemporaryDirectory(dir=_GEN_DIR, prefix=".protoc-") as scratch:
        # Copied under its usual name: the modules are named after the file,
        # and the descriptor pool knows it as "kvtier.proto".
        src = Path(scratch) / "src"
        src.mkdir()
        shutil.copyfile(proto, src / "kvtier.proto")
        rc = protoc.main([
            "grpc_tools.protoc",
            f"-I{src}",
            f"-I{well_known}",
            f"--python_out={scratch}",
            f"--grpc_python_out={scratch}",
            str(src / "kvtier.proto"),
        ])
        if rc != 0:
            raise ImportError(f"grpc_tools.protoc failed on {proto} (exit {rc}); see its stderr")
        grpc_py = Path(scratch) / "kvtier_pb2_grpc.py"
        # protoc writes a top-level import; the module lives in a package here.
        text, n = re.subn(r"^import kvtier_pb2 as ", "from . import kvtier_pb2 as ",
                          grpc_py.read_text(), flags=re.M)
        if n != 1:
            raise ImportError("kvtier: unexpected grpc_tools output (no 'import kvtier_pb2')")
        grpc_py.write_text(text)
        (Path(scratch) / "__init__.py").write_text(
            f'"""Generated from {proto} by kvtier/_proto.py; do not edit."""\n')
        for name in _GEN_FILES:
            os.replace(Path(scratch) / name, _GEN_DIR / name)


def _ensure_generated():
    proto = _find_proto()
    if _is_current(proto):
        return
    if proto is None:
        raise ImportError(
            "kvtier: the gRPC stubs are not generated and proto/kvtier.proto was not found; "
            "install the package from a kvtier checkout (pip install -e clients/python) or "
            "set KVTIER_PROTO to the path of kvtier.proto")
    _GEN_DIR.mkdir(exist_ok=True)
    with open(_GEN_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _is_current(proto):  # another process may have generated it meanwhile
            _generate(proto)


_ensure_generated()
pb2 = importlib.import_module(f"{__package__}._gen.kvtier_pb2")
pb2_grpc = importlib.import_module(f"{__package__}._gen.kvtier_pb2_grpc")
