"""The per-device context, in-order queue and programs, reference counted.

All backends open on one device share a :class:`DeviceState`: one context,
one in-order command queue and one compiled program per (dtype, options).
Sharing matters beyond speed: arrays of two networks on one device can meet
in one kernel, and the in-order queue orders all work without events.  The
state counts the backends :func:`acquire` handed it to and is torn down (queue
finished, programs and context dropped) by the :func:`release` of the last;
the next :func:`acquire` builds a new one from the process's cache of compiled
binaries (:mod:`opencl_ext.programs`), about a millisecond instead of the
compiler's hundreds.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pyopencl as cl

from . import programs

_lock = threading.Lock()
_states: dict[str, DeviceState] = {}  # counted states by canonical device string


class DeviceState:
    """One context + in-order queue + compiled kernels per (dtype, options).

    ``owned`` states come from :func:`acquire` (counted in ``users``); the
    others wrap a context somebody else made (see :func:`borrow`)."""

    def __init__(self, name: str, device: Any, context: Any, queue: Any, owned: bool):
        self.name = name
        self.device = device
        self.context = context
        self.queue = queue
        self.owned = owned
        self.users = 0
        self.closed = False
        self._kernels: dict[tuple, programs.Kernels] = {}

    def kernels(self, np_dtype: np.dtype, tune: dict[str, int]) -> programs.Kernels:
        """The kernels for ``np_dtype`` built with ``tune``'s macros, built on
        first use (from the cached binary after the first context)."""
        real = "double" if np_dtype == np.float64 else "float"
        options = [f"-DREAL={real}"] + [f"-D{key}={tune[key]}"
                                        for key in ("VW", "TM", "TI", "TK", "STRIDED")]
        if real == "float":
            options.append("-DREAL_IS_FLOAT")
        key = (np_dtype, tuple(options))
        k = self._kernels.get(key)
        if k is None:
            program = programs.build(self.context, self.device, options)
            k = self._kernels[key] = programs.Kernels(program, self.device, np_dtype)
        return k

    def teardown(self) -> None:
        """Finish queued work and drop kernels, programs, queue and context
        (buffers still alive keep the context alive, as OpenCL requires)."""
        if self.closed:
            return
        self.closed = True
        try:
            self.queue.finish()
        except cl.Error:
            pass
        self._kernels.clear()
        self.queue = self.context = None


def acquire(name: str, device: Any) -> DeviceState:
    """The shared state of ``device``, created if none is live; counted."""
    with _lock:
        state = _states.get(name)
        if state is None:
            context = cl.Context([device])
            state = _states[name] = DeviceState(name, device, context,
                                                cl.CommandQueue(context), owned=True)
        state.users += 1
    return state


def release(state: DeviceState) -> None:
    """Uncount one user of ``state``; the last one tears it down."""
    with _lock:
        state.users -= 1
        last = state.users == 0
        if last and _states.get(state.name) is state:
            del _states[state.name]
    if last:
        state.teardown()


def find(context: Any) -> DeviceState | None:
    """The live counted state that uses ``context``, if any."""
    with _lock:
        return next((s for s in _states.values() if s.context == context), None)


def borrow(name: str, device: Any, context: Any, queue: Any) -> DeviceState:
    """An uncounted state on somebody else's context and queue."""
    return DeviceState(name, device, context, queue, owned=False)
