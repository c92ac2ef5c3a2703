"""Build and load the native epoch kernels (``epoch.cpp``) at first use.

The shared library is compiled once per (source, compiler, CPU) with the
system's C++ compiler and ``-march=native``, into a per-user cache:

    $SCRATCHNET_CACHE_DIR, else $XDG_CACHE_HOME/scratchnet, else ~/.cache/scratchnet

named by a hash of the source, the compiler's identity, the flags and the
CPU, so a changed source, another compiler or another machine sharing the
home directory gets its own build.  A build happens in a fresh temporary
directory beside the cache entry and is moved into place with one atomic
rename, so processes building at the same time (pytest-xdist workers) never
see a half-written library: each loads a complete one.  The one-time build
prints a line on stderr.

Everything that can go wrong (no compiler, a failed build, a library that
will not load) raises :class:`NativeUnavailable` with the reason; the engine
turns that into one warning and uses the reference runner.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SOURCE = Path(__file__).with_name("epoch.cpp")

#: Environment variables: the cache directory, and the compiler to use.
CACHE_ENV = "SCRATCHNET_CACHE_DIR"
COMPILER_ENV = "CXX"

FLAGS = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC",
         # every fused multiply-add is explicit in the source (see epoch.cpp)
         "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math"]


class NativeUnavailable(RuntimeError):
    """The native kernels cannot be built or loaded here; the message says why."""


def cache_dir() -> Path:
    """Where built libraries are kept (see the module docstring)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "scratchnet"


def find_compiler() -> str:
    """$CXX, else the first of c++, g++, clang++ on the PATH."""
    wanted = os.environ.get(COMPILER_ENV)
    if wanted:
        path = shutil.which(wanted.split()[0])
        if path is None:
            raise NativeUnavailable(f"${COMPILER_ENV}={wanted!r} is not an executable on the PATH")
        return path
    for name in ("c++", "g++", "clang++"):
        path = shutil.which(name)
        if path is not None:
            return path
    raise NativeUnavailable("no C++ compiler found (looked for $CXX, c++, g++, clang++ on the "
                            "PATH); install one (e.g. g++) to enable the native epoch runner")


def _cpu_identity() -> str:
    """What -march=native depends on: the CPU model and feature flags."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            lines = [ln for ln in f.read(1 << 20).splitlines()
                     if ln.startswith(("model name", "flags", "Features", "CPU part"))]
        return "\n".join(dict.fromkeys(lines))
    except OSError:
        return f"{platform.machine()} {platform.processor()}"


def _compiler_identity(compiler: str) -> str:
    try:
        out = subprocess.run([compiler, "--version"], capture_output=True, text=True,
                             timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NativeUnavailable(f"the C++ compiler {compiler} does not run ({exc})") from None
    return out.stdout.strip()


def library_path(compiler: str) -> Path:
    """The cache entry for this source, compiler, flags and CPU."""
    digest = hashlib.sha256()
    for part in (SOURCE.read_bytes(), compiler.encode(), _compiler_identity(compiler).encode(),
                 " ".join(FLAGS).encode(), _cpu_identity().encode(), platform.machine().encode()):
        digest.update(part)
        digest.update(b"\0")
    return cache_dir() / f"epoch-{digest.hexdigest()[:20]}.so"


def build(compiler: str, target: Path) -> None:
    """Compile the source into ``target`` atomically (temp dir, then rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"scratchnet: building the native epoch runner with {os.path.basename(compiler)} "
          f"(once per machine and compiler, ~10 s) -> {target}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix=".build-", dir=target.parent)
    try:
        out = Path(tmp) / target.name
        cmd = [compiler, *FLAGS, "-o", str(out), str(SOURCE)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise NativeUnavailable(f"the build failed to run ({exc})") from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-8:]
            raise NativeUnavailable("the build failed: " + " ".join(cmd) + "\n" + "\n".join(tail))
        os.replace(out, target)   # atomic: readers see no file or a whole one
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"scratchnet: native epoch runner built in {time.perf_counter() - start:.1f} s",
          file=sys.stderr, flush=True)


_lock = threading.Lock()
_loaded: ctypes.CDLL | None = None
_failure: NativeUnavailable | None = None


def load() -> ctypes.CDLL:
    """The loaded library, built first if needed; :class:`NativeUnavailable`
    (the same one on every later call in this process) if that fails."""
    global _loaded, _failure
    with _lock:
        if _loaded is not None:
            return _loaded
        if _failure is not None:
            raise _failure
        try:
            compiler = find_compiler()
            path = library_path(compiler)
            if not path.exists():
                build(compiler, path)
            try:
                lib = ctypes.CDLL(str(path))
            except OSError as exc:
                raise NativeUnavailable(f"the built library {path} does not load ({exc})") \
                    from None
            _declare(lib)
        except NativeUnavailable as exc:
            _failure = exc
            raise
        _loaded = lib
        return lib


def _declare(lib: ctypes.CDLL) -> None:
    from .abi import Data, Net, Optim  # the structures mirror epoch.cpp

    p = ctypes.POINTER
    lib.sn_workspace_bytes.argtypes = [p(Net)]
    lib.sn_workspace_bytes.restype = ctypes.c_int64
    lib.sn_vector_bytes.argtypes = []
    lib.sn_vector_bytes.restype = ctypes.c_int64
    lib.sn_run.argtypes = [p(Net), p(Data), p(Optim), ctypes.c_int64, ctypes.c_int64,
                           ctypes.c_void_p]
    lib.sn_run.restype = ctypes.c_int
    lib.sn_update.argtypes = [p(Net), p(Optim), ctypes.c_int64]
    lib.sn_update.restype = ctypes.c_int
    lib.sn_math.argtypes = [ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
                            ctypes.c_int64]
    lib.sn_math.restype = ctypes.c_int
    lib.sn_fma_peak.argtypes = [ctypes.c_int64]
    lib.sn_fma_peak.restype = ctypes.c_int64
