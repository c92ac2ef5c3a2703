"""Backend-independent helpers on arrays: ``to_numpy`` and ``amax``."""

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
