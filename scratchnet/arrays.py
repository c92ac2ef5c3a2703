"""Backend-independent helpers on arrays: ``to_numpy``, ``amax`` and ``transfer_``."""

from __future__ import annotations

import numpy as np
import torch

from .backends import backend_of


def to_numpy(array) -> np.ndarray:
    """A host numpy copy of ``array`` (a torch tensor on any device, a numpy
    array, or an array of any scratchnet backend)."""
    if isinstance(array, np.ndarray):
        return array.copy()
    if isinstance(array, torch.Tensor):
        if array.dtype == torch.bfloat16:   # numpy has no bfloat16: widen, exactly
            array = array.float()
        return array.detach().to("cpu").numpy().copy()
    return backend_of(array).for_array(array).to_numpy(array)


def amax(array) -> float:
    """The largest absolute entry of ``array`` (the series' ``amax``), as a
    float; NaN if any entry is NaN."""
    if isinstance(array, np.ndarray):
        if array.dtype.kind not in "biufc":
            raise TypeError(f"array: expected numeric data, got numpy dtype {array.dtype}")
        return float(np.max(np.abs(array))) if array.size else 0.0
    if isinstance(array, torch.Tensor) and array.dtype == torch.bool:
        return float(bool(array.any()))   # |True| = 1; torch has no abs for bool
    return backend_of(array).for_array(array).amax(array)


def transfer_(dst, src) -> None:
    """dst := src, the series' ``transfer!``: copy ``src`` (a numpy array, a
    torch tensor, a nested list, or an array of any backend) into the device
    array ``dst`` (a layer's ``weights`` or ``bias``, say), in ``dst``'s
    dtype.  ``src`` must have ``dst``'s shape; nothing is copied otherwise."""
    be = backend_of(dst).for_array(dst)
    if isinstance(src, (list, tuple)):
        try:
            src = np.asarray(src, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"src: expected real numbers in a regular nested list ({exc})") \
                from None
    host = src if isinstance(src, np.ndarray) else to_numpy(src)
    if host.dtype.kind not in "biuf":
        raise TypeError(f"src: expected real numbers, got dtype {host.dtype}")
    shape = tuple(int(s) for s in dst.shape)
    if tuple(host.shape) != shape:
        raise ValueError(f"src: expected the shape of dst {shape}, got {tuple(host.shape)}")
    staged = be.from_host(np.ascontiguousarray(host, dtype=np.float64))
    try:
        be.copy_(dst, staged)
    finally:
        be.release(staged)
