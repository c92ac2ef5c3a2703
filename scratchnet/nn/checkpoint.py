"""Checkpoints: save a network (or a training network) and load it back on
any device, bit for bit, without ever running code from the file.

File format (one file, version 1)
---------------------------------
A safetensors file (8-byte little-endian header length, a JSON header, the
raw arrays): no pickle, so loading a file can never execute anything.  The
arrays:

    params          the flat parameter array [W_0 … W_{L−1} | b_0 … b_{L−1}]
                    in the network's dtype, exactly as on the device
    state.<name>    each optimizer state buffer of ``train.state``

The header's ``__metadata__`` holds one entry, ``"scratchnet"``: a JSON object
with ``format`` ("scratchnet-checkpoint"), ``version`` (1), ``in_dim``,
``layers`` ([[out_dim, activation], …]), ``convention``, ``dtype``,
``epoch`` (the training network's epoch count, or null for a bare network),
``state`` (the state names) and ``sha256``: a digest over that JSON (minus
the digest) and every array's name, dtype, shape and bytes.  A flipped bit
anywhere (arrays, metadata, safetensors header) is therefore an error, not a
silently different network.

Atomic writes
-------------
``save`` writes the bytes to a temporary file in the target's folder,
fsyncs it, renames it over the target (``os.replace``: atomic on POSIX and
Windows) and fsyncs the folder, so the rename itself survives a crash.  A
process killed at any moment leaves either the old checkpoint or the new one
(plus, if killed before the rename, a stray ``.<name>.*.tmp`` file).

Loading
-------
``load`` reads and verifies the whole file on the host before it allocates
anything on a device: a corrupt, truncated, foreign or newer-version file
raises :class:`CheckpointError` (a ``ValueError``) saying what is wrong, and
nothing is half-loaded.  ``load`` returns an inference :class:`Network`;
``load_training`` returns a :class:`TrainingNetwork` for a batch ``x`` with
the stored epoch count and optimizer state, whose ``close()`` also closes the
network it loaded: resume with ``sgd(load_training(path, x), y, …)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile

import numpy as np
import torch

from .. import validation as check
from ..arrays import to_numpy
from ..backends import get_backend
from .activations import BY_NAME
from .layers import LayerSpec
from .network import CONVENTIONS, Network, TrainingNetwork

FORMAT = "scratchnet-checkpoint"
VERSION = 1
_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_NUMPY = {"float32": np.dtype("<f4"), "float64": np.dtype("<f8")}


class CheckpointError(ValueError):
    """A file that is not a loadable scratchnet checkpoint (corrupt,
    truncated, foreign, or written by a newer format version)."""


# ------------------------------------------------------------------ saving
def check_path(path) -> str:
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a file path (str or os.PathLike), got {path!r}")
    path = os.fspath(path)
    if not path or os.path.isdir(path):
        raise ValueError(f"path: expected a file path, got the folder {path!r}")
    return path


def _digest(meta: dict, arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256(json.dumps(meta, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(arrays):
        a = arrays[name]
        h.update(f"|{name}|{a.dtype.str}|{list(a.shape)}|".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _encode(net: Network, params: np.ndarray, epoch: int | None,
            state: dict[str, np.ndarray]) -> bytes:
    import safetensors.numpy  # imported here: only checkpoints need it

    dtype = str(net.dtype).replace("torch.", "")
    arrays = {"params": np.ascontiguousarray(params, dtype=_NUMPY[dtype])}
    for name, value in state.items():
        arrays[f"state.{name}"] = np.ascontiguousarray(value)
    meta = {"format": FORMAT, "version": VERSION, "in_dim": net.in_dim,
            "layers": [[la.out_dim, la.activation.name] for la in net.layers],
            "convention": net.convention, "dtype": dtype, "epoch": epoch,
            "state": sorted(state)}
    meta["sha256"] = _digest(meta, arrays)
    return safetensors.numpy.save(arrays, metadata={"scratchnet": json.dumps(meta)})


def atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash at any moment leaves the
    old file or the new one: temp file in the same folder, fsync, rename,
    fsync the folder."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                               dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)   # mkstemp's 0600 would make checkpoints private
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if hasattr(os, "O_DIRECTORY"):   # POSIX: make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def save(net_or_train, path) -> None:
    """Save a :class:`Network` (architecture, convention, dtype, weights and
    biases) or a :class:`TrainingNetwork` (the same plus its epoch count and
    optimizer state) to ``path``, atomically.  See the module docstring."""
    path = check_path(path)
    if not isinstance(net_or_train, (Network, TrainingNetwork)):
        raise TypeError(f"net_or_train: expected a scratchnet Network or TrainingNetwork, "
                        f"got {type(net_or_train).__name__}")
    # Under the network's lock: training in another thread holds it while
    # epochs run, so weights, epoch and state are read between two chunks.
    with net_or_train.lock:
        if isinstance(net_or_train, TrainingNetwork):
            train = net_or_train
            train._check_open()
            net, epoch = train.net, train.epoch
            state = {k: to_numpy(v) for k, v in train.state.items()}
        else:
            net, epoch, state = net_or_train, None, {}
            net._check_open()
        params = net.backend.to_numpy(net.params)
    atomic_write(path, _encode(net, params, epoch, state))


def save_snapshot(train: TrainingNetwork, path: str, params, epoch: int, state: dict) -> None:
    """Save device buffers that hold a state of ``train`` (the guard's
    verified snapshot) rather than the live parameters."""
    be = train.backend
    atomic_write(path, _encode(train.net, be.to_numpy(params), epoch,
                               {k: be.to_numpy(v) for k, v in state.items()}))


# ----------------------------------------------------------------- loading
def _fail(path: str, what: str):
    raise CheckpointError(f"path: {path!r} is not a loadable scratchnet checkpoint: {what}")


def read(path) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and verify a checkpoint on the host: (metadata, arrays).
    Raises :class:`CheckpointError` naming what is wrong."""
    import safetensors.numpy

    path = check_path(path)
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        _fail(path, f"{len(raw)} bytes, shorter than a safetensors header (truncated or "
                    f"empty file)")
    n = int.from_bytes(raw[:8], "little")
    if n > len(raw) - 8:
        _fail(path, f"the header claims {n} bytes but the file has {len(raw) - 8} after the "
                    f"length field (truncated, or not a safetensors file)")
    try:
        header = json.loads(raw[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        _fail(path, f"the safetensors header is not valid JSON ({exc}): corrupt or foreign")
    meta_str = header.get("__metadata__", {}).get("scratchnet") if isinstance(
        header, dict) and isinstance(header.get("__metadata__", {}), dict) else None
    if not isinstance(meta_str, str):
        _fail(path, "no 'scratchnet' metadata: a foreign safetensors file, not a checkpoint")
    try:
        meta = json.loads(meta_str)
    except json.JSONDecodeError as exc:
        _fail(path, f"the scratchnet metadata is not valid JSON ({exc}): corrupt")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else meta
        _fail(path, f"metadata format is {found!r}, expected {FORMAT!r}")
    version = meta.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        _fail(path, f"format version {version!r} is not a version number: corrupt")
    if version > VERSION:
        _fail(path, f"format version {version} was written by a newer scratchnet; this one "
                    f"reads version {VERSION} (upgrade scratchnet)")
    try:
        arrays = safetensors.numpy.load(raw)
    except Exception as exc:  # noqa: BLE001 - SafetensorError and friends
        _fail(path, f"the arrays do not decode ({exc}): truncated or corrupt")
    expected = meta.pop("sha256", None)
    if expected != _digest(meta, arrays):
        _fail(path, "the sha256 digest does not match the contents: corrupt")
    _check_meta(path, meta, arrays)
    return meta, arrays


def _check_meta(path: str, meta: dict, arrays: dict) -> None:
    """The digest proves the file is what was written; this proves what was
    written is a network this version can build (defence in depth)."""
    in_dim, layers = meta.get("in_dim"), meta.get("layers")

    def ints(v):
        return isinstance(v, int) and not isinstance(v, bool) and v >= 1

    if not ints(in_dim) or not isinstance(layers, list) or not layers or not all(
            isinstance(la, list) and len(la) == 2 and ints(la[0]) and la[1] in BY_NAME
            for la in layers):
        _fail(path, f"bad architecture in_dim={in_dim!r} layers={layers!r}")
    if meta.get("convention") not in CONVENTIONS or meta.get("dtype") not in _DTYPES:
        _fail(path, f"bad convention {meta.get('convention')!r} or dtype {meta.get('dtype')!r}")
    epoch = meta.get("epoch")
    if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0):
        _fail(path, f"bad epoch {epoch!r}")
    dims = [in_dim] + [la[0] for la in layers]
    n_params = sum(o * i + o for i, o in zip(dims, dims[1:]))
    params = arrays.get("params")
    if params is None or params.shape != (n_params,) or params.dtype != _NUMPY[meta["dtype"]]:
        _fail(path, f"params should be {meta['dtype']} of shape ({n_params},), got "
                    f"{None if params is None else (params.dtype, params.shape)}")
    names = meta.get("state")
    if not isinstance(names, list) or sorted(arrays) != sorted(
            ["params"] + [f"state.{k}" for k in names]):
        _fail(path, f"arrays {sorted(arrays)} do not match the state names {names!r}")


def _build(meta: dict, arrays: dict, device, dtype) -> Network:
    """Allocate a network on ``device`` and copy the verified arrays in; on
    any failure release what was allocated."""
    dtype = _DTYPES[meta["dtype"]] if dtype is None else check.check_dtype(dtype)
    backend = get_backend(device, dtype)
    specs = [LayerSpec(out, BY_NAME[act]) for out, act in meta["layers"]]
    net = Network(backend, meta["in_dim"], specs, meta["convention"])
    try:
        staged = backend.from_host(arrays["params"])
        backend.copy_(net.params, staged)
        backend.release(staged)
    except BaseException:
        net.close()
        raise
    return net


def load(path, device="cpu", dtype=None) -> Network:
    """The :class:`Network` saved in ``path``, on ``device`` (any device,
    whatever the one it was saved from), in the saved dtype (bit for bit)
    or in ``dtype`` when given (converted)."""
    meta, arrays = read(path)
    return _build(meta, arrays, device, dtype)


def load_training(path, x, device="cpu", dtype=None) -> TrainingNetwork:
    """A :class:`TrainingNetwork` for batch ``x`` resumed from ``path``:
    the saved weights, epoch count (0 for a bare network) and optimizer
    state (``train.state``).  Its ``close()`` closes its network too."""
    meta, arrays = read(path)
    if dtype is not None:
        check.check_dtype(dtype)
    net = _build(meta, arrays, device, dtype)
    try:
        x = check.matrix("x", x, net.backend, cols=net.in_dim)
        train = TrainingNetwork(net, x)
    except BaseException:
        net.close()
        raise
    train.owns_net = True
    try:
        train.epoch = meta["epoch"] or 0
        for name in meta["state"]:
            train.state[name] = net.backend.from_host(arrays[f"state.{name}"])
    except BaseException:
        train.close()
        raise
    return train
