"""Allocation, views and release of ``pyopencl.array.Array`` buffers.

Arrays are C-contiguous; a kernel receives ``array.base_data`` plus
``array.offset`` in elements (:func:`ref`), so the views into a network's
flat parameter buffer are real views.  A registry maps every array this
module made (an allocation or a view of one) to its allocation, and each
allocation to weak references of the arrays that use it, so that
:func:`release` can free the buffer now and detach every one of them: a later
use raises ``ValueError`` instead of touching freed device memory (which
would crash pyopencl).  Entries leave the registry when their arrays die.
"""

from __future__ import annotations

import math
import threading
import weakref
from typing import Any

import numpy as np
import pyopencl as cl
import pyopencl.array as cla

# Reentrant: a weakref callback (forget) can run inside a locked section
# when an allocation there triggers the garbage collector.
_lock = threading.RLock()
# id(array) -> (weak reference to it, its allocation); pyopencl arrays are
# unhashable and buffers cannot be weakly referenced, hence ids.
_registry: dict[int, tuple[weakref.ref, _Allocation]] = {}


class _Allocation:
    """One buffer and the ids of the live arrays that use it."""

    __slots__ = ("buffer", "base", "arrays", "__weakref__")

    def __init__(self, buffer: Any, base: Any):
        self.buffer = buffer
        self.base = id(base)  # only the allocating array frees the buffer
        self.arrays: set[int] = set()

    def free(self) -> None:
        """Release the buffer now and detach every array still using it."""
        with _lock:
            buffer, self.buffer = self.buffer, None
            live = [entry[0]() for entry in map(_registry.get, tuple(self.arrays)) if entry]
        if buffer is None:
            return
        for array in live:
            if array is not None:
                array.base_data = None  # pyopencl's own handle: nothing can reach it now
        buffer.release()


def _track(array: Any, alloc: _Allocation) -> None:
    key = id(array)

    def forget(ref, key=key, alloc=alloc):
        with _lock:
            if _registry.get(key, (None,))[0] is ref:
                del _registry[key]
            alloc.arrays.discard(key)

    with _lock:
        _registry[key] = (weakref.ref(array, forget), alloc)
        alloc.arrays.add(key)


def _allocation(array: Any) -> _Allocation | None:
    with _lock:
        entry = _registry.get(id(array))
    return entry[1] if entry is not None and entry[0]() is array else None


def allocate(queue: Any, shape: tuple[int, ...], dtype: Any) -> Any:
    """A new tracked array (contents undefined; ``shape`` may be empty)."""
    array = cla.Array(queue, shape, dtype)
    if array.base_data is not None:
        _track(array, _Allocation(array.base_data, array))
    return array


def zeros(queue: Any, shape: tuple[int, ...], dtype: Any) -> Any:
    """A new tracked array filled with zeros."""
    array = allocate(queue, shape, dtype)
    if array.size:
        cl.enqueue_fill_buffer(queue, array.base_data, np.dtype(dtype).type(0), 0, array.nbytes)
    return array


def view(flat: Any, offset: int, shape: tuple[int, ...]) -> Any:
    """``prod(shape)`` elements of the 1-D ``flat`` from element ``offset``."""
    size = math.prod(shape)
    if flat.ndim != 1:
        raise ValueError(f"flat: expected a 1-D array, got shape {flat.shape}")
    if not 0 <= offset <= flat.size - size:
        raise ValueError(f"offset: a view of {size} elements at {offset} does not fit in "
                         f"a flat array of {flat.size}")
    buffer, _ = ref(flat)
    out = cla.Array(flat.queue, shape, flat.dtype, data=buffer,
                    offset=flat.offset + offset * flat.dtype.itemsize)
    alloc = _allocation(flat)
    if alloc is not None:
        _track(out, alloc)
    return out


def release(array: Any) -> None:
    """Free ``array``'s buffer now if this module allocated it; a view, an
    untracked array or a second release does nothing."""
    alloc = _allocation(array)
    if alloc is not None and alloc.base == id(array):
        alloc.free()


def users(array: Any) -> int:
    """How many live arrays share ``array``'s allocation (0: untracked)."""
    alloc = _allocation(array)
    return 0 if alloc is None else len(alloc.arrays)


def ref(array: Any) -> tuple[Any, int]:
    """(buffer, offset in elements) to hand a kernel for ``array``."""
    buffer = array.base_data
    if buffer is None and array.size:  # an empty array never had a buffer
        raise ValueError(f"array: this {array.shape} OpenCL array has been released "
                         f"(backend.release) and cannot be used")
    return buffer, array.offset // array.dtype.itemsize
