"""Kernel sources, compile options and the per-process binary cache.

The kernels live in ``opencl_ext/kernels/*.cl``; every backend builds them as
one program per (context, dtype).  Compiling OpenCL C from source costs
hundreds of milliseconds on PoCL (it runs clang and LLVM), while loading an
already compiled binary into a new context costs about one, so the first
build for a (device, dtype, options) key keeps the device binary here and
every later context on that device is built from it.  This is what makes
opening and closing a backend (and with it a network) cheap enough to do in a
loop, while still releasing every context and program deterministically.
"""

from __future__ import annotations

import hashlib
import threading
from importlib import resources

import pyopencl as cl

#: Kernel files in the order they are concatenated (common.cl defines the
#: types and helpers the others use).
KERNEL_FILES = ("common.cl", "matmul.cl", "elementwise.cl", "reduce.cl", "beyond.cl")

_lock = threading.Lock()
_source: str | None = None
_binaries: dict[tuple, bytes] = {}


def source() -> str:
    """The concatenated kernel source (read once from the package)."""
    global _source
    if _source is None:
        folder = resources.files("opencl_ext") / "kernels"
        parts = [f"/* ---- {name} ---- */\n" + (folder / name).read_text(encoding="utf-8")
                 for name in KERNEL_FILES]
        _source = "\n".join(parts)
    return _source


def build(context: cl.Context, device: cl.Device, options: list[str]) -> cl.Program:
    """Build the kernel program for ``device`` in ``context`` with ``options``
    (``-D`` macros), from the cached binary when this process already
    compiled the same source for the same device."""
    src = source()
    key = (device.platform.name, device.platform.version, device.name,
           device.driver_version, tuple(options),
           hashlib.sha256(src.encode()).hexdigest())
    with _lock:
        binary = _binaries.get(key)
    if binary is not None:
        try:
            return cl.Program(context, [device], [binary]).build(options=options)
        except cl.Error:  # a driver that refuses its own binary: compile instead
            pass
    program = cl.Program(context, src).build(options=options, devices=[device])
    try:
        binary = program.get_info(cl.program_info.BINARIES)[0]
    except cl.Error:
        binary = None
    if binary:
        with _lock:
            _binaries[key] = binary
    return program
