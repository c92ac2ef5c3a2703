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
``load`` reads and verifies the file on the host before it allocates
anything on a device: a corrupt, truncated, foreign, hostile or
newer-version file raises :class:`CheckpointError` (a ``ValueError``) naming
the file and what is wrong, and nothing is half-loaded.  ``read`` refuses
cheaply first and never reads more than the header declares:

1. ``os.stat``: a FIFO, device, socket or folder is refused without being
   opened (a FIFO's open would block, /dev/zero never ends);
2. the 8-byte header length, at most ``MAX_HEADER_BYTES`` and within the
   file;
3. exactly that many bytes of header;
4. its JSON and the metadata's, scanned before ``json.loads`` for nesting
   (``MAX_JSON_DEPTH``) and size (``MAX_JSON_ITEMS``), parsed with integers
   of at most ``MAX_INT_DIGITS`` digits, no NaN/Infinity, no repeated key;
5. the metadata, field by field, and the byte size its architecture needs;
6. every array's declared dtype, shape and offsets against that
   architecture, and the total against the file's real size;
7. only then exactly the declared bytes, the sha256 digest, and the ranges
   the optimizers rely on (Adam's step count a whole number >= 0, its second
   moment >= 0).

Optimizer state follows one rule, checked by ``save`` and by ``load``
(:func:`state_problem`): ``velocity``, ``adam.m`` and ``adam.v`` have shape
(n_weights,), ``adam.t`` (1,), and any other name (a custom optimizer's
state) is a 1-D array of at most n_params values; all in the network's
dtype.  ``save`` refuses state outside the rule rather than write a file
``load`` would refuse.  A missing or unreadable file raises the usual
``OSError`` (``FileNotFoundError``, ``PermissionError``).

``load`` returns an inference :class:`Network`; ``load_training`` returns a
:class:`TrainingNetwork` for a batch ``x`` with the stored epoch count and
optimizer state, whose ``close()`` also closes the network it loaded: resume
with ``sgd(load_training(path, x), y, …)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import reprlib
import stat
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


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 3, 6, 6, 60, 60


def _short(value) -> str:
    """A short repr of ``value`` for messages, computed without walking all
    of it: a hostile header can hold a megabyte where a name belongs."""
    return _REPR.repr(value)


#: Optimizer state of the built-in optimizers (``scratchnet/nn/optim.py``):
#: name -> what it is, for messages.  Their shapes are fixed by the network.
KNOWN_STATE = {"velocity": "SGD's momentum velocity", "adam.m": "Adam's first moment",
               "adam.v": "Adam's second moment", "adam.t": "Adam's step count"}


def state_problem(name, shape: tuple, dtype: str, expected_dtype: str, n_weights: int,
                  n_params: int) -> str | None:
    """What is wrong with optimizer state ``name`` of ``shape`` and
    ``dtype`` for a network of ``n_weights`` weights and ``n_params``
    parameters, or None.  The rule, the same for ``save`` and ``load``:

    * ``velocity``, ``adam.m``, ``adam.v``: shape (n_weights,);
    * ``adam.t``: shape (1,);
    * any other name (a custom optimizer's state): a 1-D array of at most
      n_params values;

    every one a string name and in the network's dtype."""
    if not isinstance(name, str):
        return f"state name {_short(name)} is not a string"
    if dtype != expected_dtype:
        return f"state {name!r} is {dtype}, expected the network's {expected_dtype}"
    if name in KNOWN_STATE:
        want = (1,) if name == "adam.t" else (n_weights,)
        if tuple(shape) != want:
            return (f"state {name!r} ({KNOWN_STATE[name]}) has shape {tuple(shape)}, "
                    f"expected {want}")
    elif len(shape) != 1 or shape[0] > n_params:
        return (f"state {name!r} has shape {tuple(shape)}: optimizer state other than "
                f"{', '.join(KNOWN_STATE)} must be 1-D with at most n_params = {n_params} "
                f"values")
    return None


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
        h.update(np.ascontiguousarray(a).data)   # no copy of the bytes
    return h.hexdigest()


def _encode(net: Network, params: np.ndarray, epoch: int | None,
            state: dict[str, np.ndarray]) -> bytes:
    import safetensors.numpy  # imported here: only checkpoints need it

    dtype = str(net.dtype).replace("torch.", "")
    for name, value in state.items():   # never write a file that load would refuse
        problem = state_problem(name, value.shape, value.dtype.name, dtype, net.n_weights,
                                net.n_params)
        if problem:
            raise ValueError(f"net_or_train: train.state cannot be saved: {problem}")
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
#: The largest safetensors header read (the JSON after the 8-byte length).
#: A version-1 header is about 600 bytes plus ~20 per layer and ~80 per
#: state buffer; anything near this bound is not a checkpoint.
MAX_HEADER_BYTES = 1 << 20
#: The deepest JSON nesting read.  Version 1 needs 3 levels
#: (``{"layers": [[32, "tanh"]]}``); the check runs before ``json.loads``,
#: whose recursion a deeply nested header would otherwise exhaust.
MAX_JSON_DEPTH = 8
#: The most items (commas and opened ``[``/``{`` outside strings) a JSON
#: text may hold: what bounds the time and memory ``json.loads`` spends on
#: one.  Version 1 writes about 7 per array and 3 per layer.
MAX_JSON_ITEMS = 1 << 16
#: The most digits an integer in a header may have: 2**64 has 20.  Python
#: refuses to convert 4,300 digits and spends quadratic time below that.
MAX_INT_DIGITS = 20
#: The longest number text accepted where a float is written (none belongs
#: in a version-1 header, but the error then names the field).
MAX_NUMBER_CHARS = 40
#: The largest epoch count stored: an int64, what TensorBoard's step is.
MAX_EPOCH = 2**63 - 1

_SAFETENSORS = {"float32": "F32", "float64": "F64"}
_KEYS = ("format", "version", "in_dim", "layers", "convention", "dtype", "epoch", "state",
         "sha256")
_ENTRY_KEYS = {"dtype", "shape", "data_offsets"}
_CHUNK = 1 << 15   # bytes of JSON text _json_shape looks at in one go


def _fail(path: str, what: str):
    raise CheckpointError(f"path: {path!r} is not a loadable scratchnet checkpoint: {what}")


class _Refused(ValueError):
    """A JSON hook's refusal (a huge number, a repeated key, NaN)."""


def _bounded_int(text: str) -> int:
    digits = len(text) - text.startswith("-")
    if digits > MAX_INT_DIGITS:
        raise _Refused(f"an integer of {digits} digits (at most {MAX_INT_DIGITS} are read)")
    return int(text)


def _bounded_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise _Refused(f"a number written with {len(text)} characters (at most "
                       f"{MAX_NUMBER_CHARS} are read)")
    return float(text)


def _no_constant(text: str):
    raise _Refused(f"{text} (not JSON)")


def _unique_keys(pairs: list) -> dict:
    out = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(f"the key {_short(key)} twice")
        out[key] = value
    return out


def _json_shape(raw: bytes) -> tuple[int, int] | None:
    """(deepest nesting of ``[``/``{``, number of items) of the JSON text
    ``raw``, counting only what is outside strings, or None if a string is
    not closed.  Items are commas plus opened containers: each bounds a
    value ``json.loads`` would make.  Linear, without recursion, in chunks
    of ``_CHUNK`` bytes so it needs a fixed ~1 MiB whatever the text: a byte
    after an odd run of backslashes is escaped, an unescaped quote opens or
    closes a string, and the depth is the running sum of the brackets
    outside strings.  (On invalid JSON the figures may be off; ``json.loads``
    then refuses the text anyway.)"""
    depth = deepest = items = 0
    inside = 0        # 1: the chunk starts inside a string
    escaped = False   # the chunk's first byte is escaped by the chunk before
    for start in range(0, len(raw), _CHUNK):
        c = np.frombuffer(raw, dtype=np.uint8, offset=start,
                          count=min(_CHUNK, len(raw) - start))
        slash = c == 0x5C
        slash[0] &= not escaped          # an escaped backslash escapes nothing
        edges = np.flatnonzero(np.diff(slash.view(np.int8), prepend=np.int8(0),
                                       append=np.int8(0)))
        ends = edges[1::2][(edges[1::2] - edges[0::2]) % 2 == 1]   # after odd runs
        after = np.zeros(c.size + 1, dtype=bool)
        after[0], after[ends] = escaped, True
        escaped = bool(after[-1])
        quote = (c == 0x22) & ~after[:-1]
        outside = (np.cumsum(quote, dtype=np.int32) + inside) % 2 == 0
        inside = (inside + int(np.count_nonzero(quote))) % 2
        opens = ((c == 0x5B) | (c == 0x7B)) & outside
        closes = ((c == 0x5D) | (c == 0x7D)) & outside
        running = np.cumsum(opens.astype(np.int32) - closes, dtype=np.int32) + depth
        deepest = max(deepest, int(running.max()))
        depth = int(running[-1])
        items += int(np.count_nonzero(opens)) + int(np.count_nonzero((c == 0x2C) & outside))
    return None if inside else (deepest, items)


def _parse_json(path: str, text: str, what: str):
    """``json.loads`` with the nesting depth checked first and every number,
    constant and key bounded: any failure is a CheckpointError."""
    shape = _json_shape(text.encode("utf-8", "surrogatepass"))
    if shape is None:
        _fail(path, f"{what} is not valid JSON (a string is not closed): corrupt")
    depth, items = shape
    if depth > MAX_JSON_DEPTH:
        _fail(path, f"{what} nests {depth} levels deep (at most {MAX_JSON_DEPTH} are read): "
                    f"corrupt or hostile")
    if items > MAX_JSON_ITEMS:
        _fail(path, f"{what} holds {items} items (at most {MAX_JSON_ITEMS} are read): "
                    f"corrupt or hostile")
    try:
        return json.loads(text, parse_int=_bounded_int, parse_float=_bounded_float,
                          parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except _Refused as exc:
        _fail(path, f"{what} holds {exc}: corrupt or hostile")
    except (ValueError, RecursionError) as exc:   # JSONDecodeError is a ValueError
        _fail(path, f"{what} is not valid JSON ({exc}): corrupt or foreign")


def _is_int(value, minimum: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _open_regular(path: str):
    """Open ``path`` for reading if it is a regular file: (fd, size).
    A FIFO, device, socket or folder is refused from ``os.stat`` alone,
    before any ``open`` that could block (a FIFO's) or never end
    (/dev/zero); O_NONBLOCK and a second check on the open descriptor
    cover a file swapped for one of those in between."""
    info = os.stat(path)   # a missing file: FileNotFoundError, as for open()
    if not stat.S_ISREG(info.st_mode):
        _fail(path, f"it is {_kind(info.st_mode)}, not a regular file")
    flags = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
             | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0))
    fd = os.open(path, flags)
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (
                info.st_dev, info.st_ino):
            _fail(path, "it was replaced while being opened")
    except BaseException:
        os.close(fd)
        raise
    return fd, opened.st_size


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _read_exact(path: str, f, buffer) -> None:
    """Fill ``buffer`` from ``f``; a file that ends first (it shrank after
    its size was read) is an error.  Never reads past the buffer."""
    view, done = memoryview(buffer).cast("B"), 0
    while done < len(view):
        got = f.readinto(view[done:])
        if not got:
            _fail(path, f"it ended after {done} of {len(view)} bytes being read (truncated "
                        f"while it was read)")
        done += got


def _check_meta(path: str, meta) -> tuple[int, int]:
    """The scratchnet metadata, field by field, before any array is read:
    (n_weights, n_params) of the network it describes."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else meta
        _fail(path, f"metadata format is {_short(found)}, expected {FORMAT!r}")
    version = meta.get("version")
    if not _is_int(version, 1):
        _fail(path, f"format version {_short(version)} is not a version number: corrupt")
    if version > VERSION:
        _fail(path, f"format version {version} was written by a newer scratchnet; this one "
                    f"reads version {VERSION} (upgrade scratchnet)")
    missing = [k for k in _KEYS if k not in meta]
    extra = sorted(k for k in meta if k not in _KEYS)
    if missing or extra:
        _fail(path, f"the metadata lacks {missing} / has unknown fields "
                    f"{_short(extra)}: corrupt")
    in_dim, layers = meta["in_dim"], meta["layers"]
    if not _is_int(in_dim, 1):
        _fail(path, f"in_dim should be an int >= 1, got {_short(in_dim)}")
    if not isinstance(layers, list) or not layers:
        _fail(path, f"layers should be a non-empty list of [out_dim, activation], "
                    f"got {_short(layers)}")
    for i, layer in enumerate(layers):
        if not isinstance(layer, list) or len(layer) != 2:
            _fail(path, f"layers[{i}] should be [out_dim, activation], got {_short(layer)}")
        if not _is_int(layer[0], 1):
            _fail(path, f"layers[{i}]: out_dim should be an int >= 1, got {_short(layer[0])}")
        if not isinstance(layer[1], str) or layer[1] not in BY_NAME:
            _fail(path, f"layers[{i}]: activation should be one of "
                        f"{', '.join(sorted(BY_NAME))}, got {_short(layer[1])}")
    for key, allowed in (("convention", CONVENTIONS), ("dtype", _DTYPES)):
        value = meta[key]
        if not isinstance(value, str) or value not in allowed:
            _fail(path, f"{key} should be one of {', '.join(allowed)}, got {_short(value)}")
    epoch = meta["epoch"]
    if epoch is not None and not (_is_int(epoch) and epoch <= MAX_EPOCH):
        _fail(path, f"epoch should be null or an int in [0, 2**63), got {_short(epoch)}")
    digest = meta["sha256"]
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        _fail(path, f"sha256 should be 64 hex digits, got {_short(digest)}")
    names = meta["state"]
    if not isinstance(names, list) or not all(isinstance(k, str) for k in names):
        _fail(path, f"state should be a list of names, got {_short(names)}")
    if len(set(names)) != len(names):
        _fail(path, f"state names repeat: {_short(names)}")
    dims = [in_dim] + [la[0] for la in layers]
    n_weights = sum(o * i for i, o in zip(dims, dims[1:]))
    return n_weights, n_weights + sum(dims[1:])


def _check_entries(path: str, header: dict, meta: dict, n_weights: int,
                   n_params: int) -> dict[str, tuple[int, tuple, int]]:
    """The safetensors entries against the metadata: exactly ``params`` and
    one ``state.<name>`` per state name, in the network's dtype, of the
    shapes the architecture fixes, tiling the data section without gaps or
    overlaps.  Returns name -> (begin, shape, nbytes)."""
    dtype, st_dtype = meta["dtype"], _SAFETENSORS[meta["dtype"]]
    itemsize = _NUMPY[dtype].itemsize
    wanted = ["params"] + [f"state.{k}" for k in meta["state"]]
    present = sorted(k for k in header if k != "__metadata__")
    if present != sorted(wanted):
        _fail(path, f"arrays {_short(present)} do not match the state names "
                    f"{_short(meta['state'])}")
    entries = {}
    for name in wanted:
        entry = header[name]
        if not isinstance(entry, dict) or set(entry) != _ENTRY_KEYS:
            _fail(path, f"array {name!r}: the header entry should have the fields "
                        f"{sorted(_ENTRY_KEYS)}, got {_short(entry)}")
        shape, offsets = entry["shape"], entry["data_offsets"]
        if not isinstance(shape, list) or not all(_is_int(s) for s in shape):
            _fail(path, f"array {name!r}: shape should be a list of ints >= 0, "
                        f"got {_short(shape)}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(
                _is_int(o) for o in offsets) and offsets[0] <= offsets[1]):
            _fail(path, f"array {name!r}: data_offsets should be [begin, end] with "
                        f"0 <= begin <= end, got {_short(offsets)}")
        raw = entry["dtype"]
        found = dtype if raw == st_dtype else f"{_short(raw)} in safetensors' notation"
        if name == "params":
            problem = None if found == dtype else (
                f"params are {found}, expected {dtype} ({st_dtype!r})")
            if problem is None and tuple(shape) != (n_params,):
                problem = (f"params have shape {tuple(shape)}, the architecture needs "
                           f"({n_params},)")
        else:
            problem = state_problem(name[len("state."):], tuple(shape), found, dtype,
                                    n_weights, n_params)
        if problem:
            _fail(path, problem)
        size = 1
        for s in shape:
            size *= s
        if offsets[1] - offsets[0] != size * itemsize:
            _fail(path, f"array {name!r}: data_offsets {offsets} span "
                        f"{offsets[1] - offsets[0]} bytes, its shape needs {size * itemsize}")
        entries[name] = (offsets[0], tuple(shape), size * itemsize)
    end = 0
    for name, (begin, _, nbytes) in sorted(entries.items(), key=lambda e: e[1][0]):
        if begin != end:
            _fail(path, f"array {name!r} starts at byte {begin} of the data, expected {end} "
                        f"(arrays must tile the data without gaps or overlaps)")
        end = begin + nbytes
    return entries


def read(path) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and verify a checkpoint on the host: (metadata, arrays).
    Raises :class:`CheckpointError` naming the file and what is wrong.

    Cheap checks come first and nothing is read that the header does not
    declare: the file type (``os.stat``: no FIFO, device or folder is
    opened), the header length (at most ``MAX_HEADER_BYTES``), the header
    JSON (nesting, numbers and keys bounded before it is parsed), the
    architecture and state it describes, the arrays' declared offsets
    against that architecture and against the file's real size; only then
    the declared bytes, the sha256 digest and the values' ranges."""
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a file path (str or os.PathLike), got {path!r}")
    path = os.fspath(path)
    if not isinstance(path, str) or not path:
        raise ValueError(f"path: expected a file path, got {path!r}")
    fd, size = _open_regular(path)
    with os.fdopen(fd, "rb", buffering=0) as f:
        if size < 8:
            _fail(path, f"{size} bytes, shorter than a safetensors header (truncated or "
                        f"empty file)")
        length = bytearray(8)
        _read_exact(path, f, length)
        n = int.from_bytes(length, "little")
        if n > MAX_HEADER_BYTES:
            _fail(path, f"the header claims {n} bytes; a checkpoint's header is at most "
                        f"{MAX_HEADER_BYTES} (corrupt, or not a safetensors file)")
        if n > size - 8:
            _fail(path, f"the header claims {n} bytes but the file has {size - 8} after the "
                        f"length field (truncated, or not a safetensors file)")
        raw = bytearray(n)
        _read_exact(path, f, raw)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            _fail(path, f"the safetensors header is not UTF-8 ({exc}): corrupt or foreign")
        header = _parse_json(path, text, "the safetensors header")
        if not isinstance(header, dict):
            _fail(path, f"the safetensors header is {_short(header)}, not a JSON object: "
                        f"corrupt or foreign")
        extra = header.get("__metadata__", {})
        if not isinstance(extra, dict) or not isinstance(extra.get("scratchnet"), str):
            _fail(path, "no 'scratchnet' metadata: a foreign safetensors file, not a "
                        "checkpoint")
        if list(extra) != ["scratchnet"]:
            _fail(path, f"the safetensors metadata has fields {_short(sorted(extra))}, "
                        f"expected only 'scratchnet': corrupt")
        meta = _parse_json(path, extra["scratchnet"], "the scratchnet metadata")
        n_weights, n_params = _check_meta(path, meta)
        itemsize = _NUMPY[meta["dtype"]].itemsize
        available = size - 8 - n
        if n_params * itemsize > available:
            arch = "-".join(str(d) for d in [meta["in_dim"]] + [la[0] for la in meta["layers"]])
            arch = arch if len(arch) <= 80 else f"{arch[:80]}..."
            _fail(path, f"the architecture {arch} needs {n_params * itemsize} bytes "
                        f"of parameters but the file holds {available} after the header "
                        f"(truncated or corrupt)")
        entries = _check_entries(path, header, meta, n_weights, n_params)
        declared = sum(nbytes for _, _, nbytes in entries.values())
        if declared != available:
            _fail(path, f"the header declares {declared} bytes of arrays but the file has "
                        f"{available} after the header (truncated, extended or corrupt)")
        data = np.empty(declared, dtype=np.uint8)   # aligned for every dtype
        _read_exact(path, f, data)
    arrays = {name: data[begin:begin + nbytes].view(_NUMPY[meta["dtype"]]).reshape(shape)
              for name, (begin, shape, nbytes) in entries.items()}
    expected = meta.pop("sha256")
    if expected != _digest(meta, arrays):
        _fail(path, "the sha256 digest does not match the contents: corrupt")
    _check_values(path, arrays)
    return meta, arrays


def _check_values(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Ranges the optimizers rely on.  NaN and inf elsewhere load as saved
    (a run with ``guard=False`` may save them; the guard sees them on the
    first epoch of a resumed run)."""
    t = arrays.get("state.adam.t")
    if t is not None:
        value = float(t[0])
        if not (math.isfinite(value) and value >= 0 and value == math.floor(value)):
            _fail(path, f"state 'adam.t' (Adam's step count) should be a whole number >= 0, "
                        f"got {value}")
    v = arrays.get("state.adam.v")
    if v is not None and v.size and bool(np.any(v < 0)):
        _fail(path, f"state 'adam.v' (Adam's second moment, a mean of squares) holds "
                    f"{int(np.count_nonzero(v < 0))} negative values: corrupt")


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
