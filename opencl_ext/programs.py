"""Kernel sources, the per-process binary cache and the kernel table.

The kernels live in ``opencl_ext/kernels/*.cl``; every backend builds them as
one program per (context, dtype, options).  Compiling OpenCL C from source
runs clang and LLVM on PoCL, while loading an already compiled binary into a
new context does not, so the first build for a (device, options) key keeps
the device binary here and every later context on that device is built from
it.  This is what makes opening and closing a backend (and with it a network)
cheap enough to do in a loop, while still releasing every context and program
deterministically.  :class:`Kernels` creates a program's kernels on first use.
"""

from __future__ import annotations

import hashlib
import threading
from importlib import resources
from typing import Any

import numpy as np
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


class Kernels:
    """The kernels of one program, each created on first use.

    Creating a kernel and declaring its scalar argument types costs about a
    millisecond (PoCL plus pyopencl's generated invoker), so a backend that
    is opened, used for a few operations and closed pays only for those."""

    #: Scalar argument types per kernel (B: a buffer or local memory; r: the dtype).
    SIGNATURES = {
        "small_gemm": "i i i B l i i B l B l r i B l",
        "wgrad_partial": "i i i i B l B l i B l B l B",
        "wgrad_finish": "i i i B B l B l",
        "activation_forward": "i i B l B l",
        "activation_backward": "i i B l B l",
        "axpby": "i r B l B l B l",
        "transpose": "i i B l B l",
        "reduce_partial": "i i i B l i B l B",
        "reduce_finish": "i i B B l",
        "reduce_tree": "i i B l B l B",
        # beyond.cl
        "elu_forward": "i B l B l",
        "elu_backward": "i B l B l",
        "softmax_forward": "i i B l B l",
        "softmax_backward": "i i B l B l",
        "cross_entropy_terms": "i i B l B l B l",
        "momentum_update": "i r r r i B l B l B l",
        "adam_update": "i r r r r r r r B l B l B l B l B l",
        "gather_columns": "i i i B l B l B l",
    }

    def __init__(self, program: Any, device: Any, np_dtype: np.dtype):
        self._program = program
        self._device = device
        self._types = {"i": np.int32, "l": np.int64, "r": np_dtype.type, "B": None}
        self._group_max: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        signature = self.SIGNATURES.get(name)
        if signature is None:
            raise AttributeError(name)
        kernel = cl.Kernel(self._program, name)
        kernel.set_scalar_arg_dtypes([self._types[c] for c in signature.split()])
        setattr(self, name, kernel)
        return kernel

    def group_max(self, name: str) -> int:
        """CL_KERNEL_WORK_GROUP_SIZE of kernel ``name`` on this device."""
        size = self._group_max.get(name)
        if size is None:
            size = self._group_max[name] = int(getattr(self, name).get_work_group_info(
                cl.kernel_work_group_info.WORK_GROUP_SIZE, self._device))
        return size
