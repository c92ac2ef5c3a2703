"""Device discovery: device strings, a compile probe, limits and kernel tuning.

Devices are ``"opencl"`` (the first listed device that can compile kernels)
and ``"opencl:P:D"`` (device D of platform P, as numbered by
``pyopencl.get_platforms()``).  A device counts as available only when a
trivial program builds on it: an ICD can list a device whose compiler is
broken (PoCL 3.0 with LLVM 14 lists a Zen 5 CPU, then fails every build with
"unknown target CPU 'generic'").  The probe runs once per device and process.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from typing import Any

import numpy as np
import pyopencl as cl

PREFIX = "opencl"

INSTALL_HINT = ("install PoCL, a CPU OpenCL platform, with pip install 'scratchnet[opencl]' "
                "(pyopencl + pocl-binary-distribution) or your distribution's package "
                "(Debian: pocl-opencl-icd), or your GPU vendor's OpenCL driver")

_PROBE_SOURCE = "__kernel void scratchnet_probe(__global int *x) { x[0] = 1; }"

_probe_lock = threading.Lock()
_probes: dict[tuple, str | None] = {}  # device identity -> None (builds) or why not


# ----------------------------------------------------------------- listing
def platforms() -> list[Any]:
    """``pyopencl.get_platforms()``, or ``[]`` when no ICD/platform exists."""
    try:
        return list(cl.get_platforms())
    except cl.Error:
        return []


def listed() -> dict[str, Any]:
    """Canonical device string -> ``pyopencl.Device`` for every listed device."""
    found = {}
    for p, platform in enumerate(platforms()):
        try:
            devices = platform.get_devices()
        except cl.Error:  # a platform with no devices raises DEVICE_NOT_FOUND
            continue
        for d, device in enumerate(devices):
            found[f"{PREFIX}:{p}:{d}"] = device
    return found


def name_of(device: Any) -> str:
    """The canonical device string of a ``pyopencl.Device``."""
    return next((name for name, dev in listed().items() if dev == device), PREFIX)


def describe(device: Any) -> str:
    """A device's name and platform version, for messages."""
    return f"{device.name.strip()}, {device.platform.version.strip()}"


# ------------------------------------------------------------------- probe
def _identity(device: Any) -> tuple:
    # int_ptr tells two devices of one platform apart; the strings survive a
    # platform reloaded at another address.
    platform = device.platform
    return (platform.name, platform.version, device.name, device.driver_version,
            device.int_ptr)


def probe(device: Any) -> str | None:
    """``None`` when a trivial program builds on ``device``, else why not."""
    key = _identity(device)
    with _probe_lock:
        if key in _probes:
            return _probes[key]
    try:
        context = cl.Context([device])
        cl.Program(context, _PROBE_SOURCE).build(devices=[device])
        reason = None
    except cl.Error as exc:
        reason = _build_failure(device, exc)
    with _probe_lock:
        _probes[key] = reason
    return reason


def _build_failure(device: Any, exc: Exception) -> str:
    """Why ``device`` cannot compile, with the fix where it is known."""
    text = str(exc)
    errors = [line.strip() for line in text.splitlines() if "error" in line.lower()
              and "clBuildProgram" not in line]
    detail = errors[0] if errors else text.splitlines()[0] if text else type(exc).__name__
    version = device.platform.version
    pocl = re.search(r"PoCL (\d+\.\d+)", version)
    llvm = re.search(r"LLVM (\d+)", version)
    if "unknown target CPU" in text and pocl:
        return (f"PoCL {pocl.group(1)}{f' (LLVM {llvm.group(1)})' if llvm else ''} cannot "
                f"compile for this CPU ({detail}); install Debian's pocl-opencl-icd or a "
                f"newer PoCL")
    return f"it cannot compile OpenCL C ({detail})"


def usable() -> dict[str, Any]:
    """The listed devices that pass the compile probe, in listing order."""
    return {name: dev for name, dev in listed().items() if probe(dev) is None}


def unavailable_reason() -> str | None:
    """``None`` when some device can compile kernels, else why none can."""
    if not platforms():
        return f"no OpenCL platform found (pyopencl sees no installable client driver); " \
               f"{INSTALL_HINT}"
    devices = listed()
    if not devices:
        return f"OpenCL platforms exist but none has a device; {INSTALL_HINT}"
    broken: dict[str, list[str]] = {}  # reason -> devices, so that each reason shows once
    for name, dev in devices.items():
        reason = probe(dev)
        if reason is None:
            return None
        broken.setdefault(reason, []).append(f"{name} ({dev.name.strip()})")
    return "no OpenCL device can compile kernels: " + "; ".join(
        f"{', '.join(names)}: {reason}" for reason, names in broken.items())


def resolve(spec: str) -> tuple[str, Any]:
    """(canonical string, ``pyopencl.Device``) for a device string that works;
    ``ValueError`` naming the string, what is wrong and what exists otherwise."""
    devices = listed()
    if not devices:
        raise ValueError(f"device: {spec!r}: no OpenCL platform with a device was found; "
                         f"{INSTALL_HINT}")
    parts = spec.split(":")
    if parts[0] != PREFIX or len(parts) > 3 or not all(s.isdigit() for s in parts[1:]):
        raise ValueError(f"device: {spec!r} is not an OpenCL device string; expected "
                         f"'opencl' or 'opencl:P:D' (platform P, device D), e.g. "
                         f"{', '.join(devices)}")
    if len(parts) == 1:
        for name, dev in devices.items():
            if probe(dev) is None:
                return name, dev
        raise ValueError(f"device: {spec!r}: {unavailable_reason()}")
    name = f"{PREFIX}:{int(parts[1])}:{int(parts[2]) if len(parts) == 3 else 0}"
    if name not in devices:
        raise ValueError(f"device: {spec!r} does not exist; OpenCL devices here: "
                         f"{', '.join(f'{k} ({v.name.strip()})' for k, v in devices.items())}")
    reason = probe(devices[name])
    if reason is not None:
        working = ", ".join(usable()) or "none"
        raise ValueError(f"device: {spec!r} ({describe(devices[name])}) is listed but "
                         f"unusable: {reason}. Working OpenCL devices: {working}")
    return name, devices[name]


# ------------------------------------------------------------------ limits
@dataclasses.dataclass(frozen=True)
class Limits:
    """What the kernels may assume of a device; a backend can be opened with
    some fields overridden to simulate another device on this one."""

    max_work_group_size: int
    max_work_item_sizes: tuple[int, ...]
    local_mem_size: int
    compute_units: int
    fp64: bool
    cpu: bool  # True: the CPU kernel layout (SIMD vectors, chunked reductions)

    @classmethod
    def of(cls, device: Any, overrides: Limits | dict | None = None) -> Limits:
        """``device``'s own limits with ``overrides`` (a dict of fields, or a
        whole :class:`Limits`) applied."""
        if isinstance(overrides, Limits):
            return overrides
        limits = cls(max_work_group_size=int(device.max_work_group_size),
                     max_work_item_sizes=tuple(int(s) for s in device.max_work_item_sizes),
                     local_mem_size=int(device.local_mem_size),
                     compute_units=int(device.max_compute_units),
                     fp64=bool(device.double_fp_config),
                     cpu=bool(device.type & cl.device_type.CPU))
        if not overrides:
            return limits
        if not isinstance(overrides, dict):
            raise TypeError(f"limits: expected a dict of Limits fields or a Limits, got "
                            f"{type(overrides).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(f"limits: unknown fields {unknown}; expected some of "
                             f"{sorted(fields)}")
        if "max_work_item_sizes" in overrides:
            overrides = {**overrides,
                         "max_work_item_sizes": tuple(overrides["max_work_item_sizes"])}
        for key in ("max_work_group_size", "local_mem_size", "compute_units"):
            value = overrides.get(key, 1)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"limits: {key} must be a positive int, got {value!r}")
        sizes = overrides.get("max_work_item_sizes", (1,))
        if not sizes or not all(isinstance(v, int) and v >= 1 for v in sizes):
            raise ValueError(f"limits: max_work_item_sizes must be positive ints, got "
                             f"{overrides['max_work_item_sizes']!r}")
        return dataclasses.replace(limits, **overrides)


def tuning(device: Any, limits: Limits, np_dtype: np.dtype) -> dict[str, int]:
    """Kernel shape parameters: explicit SIMD vectors and one work-item per
    reduction chunk on CPUs; scalar work-items, strided (coalesced) sample
    loops and tree reductions on GPUs, whose hardware vectorises across
    work-items.

    CPU vectors are capped at 256 bits: PoCL 3.0 (LLVM 14) reports a
    preferred width of 16 floats on AVX-512 machines it does not know (Zen 4)
    but generates code for an AVX2 target there, where 512-bit vectors are
    split in two at best and, built with its AVX-512 kernel library, abort
    LLVM's code generator (``fma`` on ``float16``) or yield an empty program
    at worst."""
    if limits.cpu:
        width = (device.preferred_vector_width_double if np_dtype == np.float64
                 else device.preferred_vector_width_float)
        width = min(max(int(width), 1), 32 // np_dtype.itemsize)
        vw = max(w for w in (1, 2, 4, 8, 16) if w <= width)
        return {"VW": vw, "TM": 8, "TI": 4, "TK": 4, "STRIDED": 0,
                "min_items": 4 * limits.compute_units}
    return {"VW": 1, "TM": 4, "TI": 2, "TK": 2, "STRIDED": 1,
            "min_items": 64 * limits.compute_units}


def check_dtype(name: str, device: Any, limits: Limits, np_dtype: np.dtype, arg: str) -> None:
    """``ValueError`` (naming ``arg``) when float64 is asked of a device
    without double precision."""
    if np_dtype == np.float64 and not limits.fp64:
        raise ValueError(f"{arg}: torch.float64 needs double precision, which OpenCL device "
                         f"{name} ({device.name.strip()}) lacks (no cl_khr_fp64); use "
                         f"torch.float32")


# ------------------------------------------------------------ local sizes
def pow2_at_most(x: int) -> int:
    """The largest power of two <= ``x`` (1 for ``x`` < 2)."""
    return 1 << (max(int(x), 1).bit_length() - 1)


def group_1d(want: int, cap: int, limits: Limits) -> int:
    """A 1-D local size: ``want`` (a power of two) shrunk to fit ``cap`` (the
    kernel's and device's work-group maximum) and the first item size."""
    return pow2_at_most(min(want, cap, limits.max_work_item_sizes[0]))


def group_2d(want: int, cap: int, limits: Limits) -> tuple[int, int]:
    """A 2-D local size of at most ``want`` x ``want`` work-items (``want``
    a power of two), as square as ``cap`` and the item sizes allow."""
    items = limits.max_work_item_sizes
    tx = pow2_at_most(min(want, cap, items[0]))
    ty = pow2_at_most(min(want, cap // tx, items[1] if len(items) > 1 else 1))
    return tx, ty
