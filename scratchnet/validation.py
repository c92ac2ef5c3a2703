"""Checks on user input, done before anything is touched.

Every public entry point validates all of its arguments first and only then
modifies state, so a rejected call leaves weights, biases and buffers as they
were.  Messages name the argument, what was expected and what came.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch

_TORCH_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_dtype(dtype: Any) -> torch.dtype:
    """The network's element type: torch.float32 or torch.float64."""
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype: expected torch.float32 or torch.float64, got {dtype!r}")
    return dtype


def check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    bound = f">= {minimum}" + ("" if maximum is None else f" and <= {maximum}")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int {bound}, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{name}: expected an int {bound}, got {value}")
    return int(value)


def check_real(name: str, value: Any, *, positive: bool = False) -> float:
    """A finite real number, > 0 when ``positive`` else >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a finite real number, got {value!r}")
    try:
        value = float(value)
    except OverflowError:   # an int such as 10**400
        value = math.inf
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name}: expected a finite number {bound}, got {value}")
    return value


def matrix(name: str, data: Any, backend, *, cols: int | None = None,
           rows: int | None = None, check_values: bool = True):
    """Validate a rows-are-samples matrix and return it ready to transfer.

    Accepts a torch tensor (on the CPU, or on the network's own torch
    device), a numpy array, a (nested) list, or an array of the network's
    backend.  Must be 2-D, floating point, non-empty, finite, with ``cols``
    columns and ``rows`` rows when given.  float16, float64, non-contiguous,
    transposed or byte-swapped data is fine: it is converted once, when
    copied to the device.  Values that are finite but beyond the network
    dtype's range (1e300 into float32) are refused: the conversion would
    silently turn them into inf.
    """
    kind = "array"
    if isinstance(data, torch.Tensor):
        kind = "tensor"
        if data.dtype not in _TORCH_FLOATS:
            raise TypeError(f"{name}: expected a floating-point tensor, got dtype {data.dtype}")
        if data.device.type != "cpu" and str(data.device) != backend.device:
            raise ValueError(f"{name}: expected data on the CPU or on {backend.device}, got a "
                             f"tensor on {data.device}; move it with .to({backend.device!r})")
        if data.layout != torch.strided:
            raise TypeError(f"{name}: expected a dense tensor, got layout {data.layout}; "
                            f"use .to_dense()")
        if data.requires_grad:
            data = data.detach()
    elif isinstance(data, np.ndarray) or isinstance(data, (list, tuple)):
        if isinstance(data, (list, tuple)):
            try:
                data = np.asarray(data)
            except ValueError as exc:
                raise ValueError(f"{name}: a ragged list is not a matrix ({exc})") from None
        if data.dtype.kind != "f":
            raise TypeError(f"{name}: expected floating-point data, got numpy dtype {data.dtype}")
        if data.dtype.itemsize > 8:   # long double: torch has no such dtype
            with np.errstate(over="ignore"):
                data = data.astype(np.float64)
        if not data.dtype.isnative:   # big-endian data: torch reads native only
            data = data.astype(data.dtype.newbyteorder("="))
    elif type(backend).owns(data):
        kind = "backend"
    else:
        raise TypeError(f"{name}: expected a torch tensor, numpy array or list, "
                        f"got {type(data).__name__}")
    shape = tuple(data.shape)
    if len(shape) != 2:
        hint = " (for one feature use x.reshape(-1, 1))" if len(shape) == 1 else ""
        raise ValueError(f"{name}: expected a 2-D matrix with one sample per row, got shape "
                         f"{shape}{hint}")
    if shape[0] == 0:
        raise ValueError(f"{name}: expected at least one sample (row), got shape {shape}")
    if cols is not None and shape[1] != cols:
        raise ValueError(f"{name}: expected {cols} columns (features), got {shape[1]} "
                         f"(shape {shape})")
    if rows is not None and shape[0] != rows:
        raise ValueError(f"{name}: expected {rows} rows (one per sample of the training "
                         f"input), got {shape[0]} (shape {shape})")
    if check_values:
        if kind == "tensor":
            finite = bool(torch.isfinite(data).all())
        elif kind == "backend":
            finite = backend.all_finite(data)
        else:
            finite = bool(np.isfinite(data).all())
        if not finite:
            raise ValueError(f"{name}: expected finite values, got NaN or inf")
        _check_range(name, data, kind, backend)
    return data


def _check_range(name: str, data, kind: str, backend) -> None:
    """Finite values wider than the network's dtype must fit in it."""
    limit = torch.finfo(backend.dtype).max
    if kind == "tensor" and torch.finfo(data.dtype).max > limit and data.numel():
        big = float(data.abs().max())
    elif kind == "array" and float(np.finfo(data.dtype).max) > limit and data.size:
        big = float(np.abs(data).max())
    else:
        return
    if big > limit:
        raise ValueError(f"{name}: expected values within the {backend.dtype} range "
                         f"(|v| <= {limit:.4g}), got |v| = {big:.4g}")


def to_columns(data, backend):
    """Copy validated rows-are-samples ``data`` to the device as a new
    contiguous (features, n) array: the one transpose at the API's edge."""
    if isinstance(data, torch.Tensor):
        return backend.from_host(data.t())
    if isinstance(data, np.ndarray):
        return backend.from_host(data.T)
    return backend.transpose(data)
