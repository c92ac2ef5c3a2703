"""Backend registry: device string -> backend, array -> backend.

Backends are found through the entry-point group ``scratchnet.backends``; the
entry-point *name* is the device string's prefix (``"cpu"``, ``"cuda"``,
``"opencl"``, ...) and its value a :class:`~scratchnet.backends.base.Backend`
subclass.  scratchnet registers its torch backend there itself, and the
OpenCL plugin (``opencl_ext``) registers ``"opencl"``; the core never imports
a plugin by name.  The torch entries are also built in, so a source checkout
that was never ``pip install``-ed still runs on CPU and CUDA.
"""

from __future__ import annotations

import functools
from importlib.metadata import entry_points
from typing import Any

import torch

from .base import Backend
from .torch_backend import TorchBackend

GROUP = "scratchnet.backends"
_BUILTIN: dict[str, type[Backend]] = {"cpu": TorchBackend, "cuda": TorchBackend,
                                      "meta": TorchBackend}
_loaded: dict[str, type[Backend]] = dict(_BUILTIN)
_broken: dict[str, str] = {}


@functools.cache
def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def prefixes() -> list[str]:
    """Every registered device prefix (loadable or not)."""
    return sorted(set(_BUILTIN) | set(_entry_points()))


def backend_class(prefix: str) -> type[Backend]:
    """The backend class registered for ``prefix``; ``ValueError`` if none
    or if its plugin cannot be imported (the message says why)."""
    if prefix in _loaded:
        return _loaded[prefix]
    ep = _entry_points().get(prefix)
    if ep is None:
        raise ValueError(
            f"device: unknown device prefix {prefix!r}; registered: "
            f"{', '.join(prefixes())}; available now: {', '.join(available_devices())}")
    if prefix in _broken:
        raise ValueError(_broken[prefix])
    try:
        cls = ep.load()
    except ImportError as exc:
        _broken[prefix] = (
            f"device: the {prefix!r} backend ({ep.value}) cannot be imported: {exc}. "
            f"Install its extra, e.g. pip install 'scratchnet[{prefix}]'")
        raise ValueError(_broken[prefix]) from None
    _loaded[prefix] = cls
    return cls


def unavailable_reason(prefix: str) -> str | None:
    """``None`` when ``prefix`` devices can be used now, else the reason."""
    try:
        return backend_class(prefix).unavailable_reason(prefix)
    except ValueError as exc:
        return str(exc)


def available_devices() -> list[str]:
    """Every device string that can be used right now (``meta`` excluded)."""
    found = []
    for prefix in prefixes():
        if prefix == "meta":
            continue
        try:
            found += backend_class(prefix).available_devices(prefix)
        except Exception:  # noqa: BLE001 - a broken plugin is simply not available
            continue
    return found


def get_backend(device: str | torch.device, dtype: torch.dtype) -> Backend:
    """Open the backend for ``device`` (e.g. ``"cpu"``, ``"cuda:1"``,
    ``"opencl:0:0"``) with element type ``dtype``."""
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str) or not device:
        raise TypeError(f"device: expected a device string such as 'cpu', 'cuda:0' or "
                        f"'opencl', got {device!r}")
    prefix = device.split(":", 1)[0]
    cls = backend_class(prefix)
    reason = cls.unavailable_reason(prefix)
    if reason is not None:
        raise ValueError(f"device: {device!r} is not available: {reason}. "
                         f"Available: {', '.join(available_devices())}")
    return cls.open(device, dtype)


def backend_of(array: Any) -> type[Backend]:
    """The backend class whose array type ``array`` is (loaded plugins
    first, then every registered one); ``TypeError`` if none."""
    for cls in list(_loaded.values()):
        if cls.owns(array):
            return cls
    for prefix in prefixes():
        try:
            cls = backend_class(prefix)
        except ValueError:
            continue
        if cls.owns(array):
            return cls
    raise TypeError(f"array: expected an array of a scratchnet backend (torch.Tensor, "
                    f"...), got {type(array).__name__}")
