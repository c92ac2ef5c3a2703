"""Hostile checkpoint files: malformed headers, forged optimizer state, huge
and special files, and a hypothesis suite over generated files.

Every refusal must be a ``CheckpointError`` whose message starts with
``path:`` and names the file and what is wrong, from both ``load`` and
``load_training``, within a time bound, and must leave everything as it
was: a training network already on the device (its parameters, optimizer
state and epoch, bit for bit), the file itself and its folder.

Files are forged by this module's own writer of the format (``forge``:
the safetensors layout and the sha256 rule of ``scratchnet/nn/checkpoint.py``'s
docstring, written independently), so a hostile value arrives with a
correct digest and the refusal is shown to come from validation, not from
the digest.  ``forge`` is itself checked: an unmodified forgery of a saved
network loads equal to it.

``pytest tests/test_checkpoint_hostile.py --hypothesis-show-statistics``
prints the generated-case counts; ``SCRATCHNET_CKPT_EXAMPLES=N`` runs N
generated cases instead of the default.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import resource
import signal
import socket
import struct
import time
import tracemalloc

import numpy as np
import pytest
import torch
from helpers import article_net, regression_data
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import scratchnet as sn
from scratchnet.nn import checkpoint

MiB = 1 << 20
ST_DTYPES = {"<f2": "F16", "<f4": "F32", "<f8": "F64", "<i4": "I32", "<i8": "I64"}
FROM_ST = {"F16": "<f2", "F32": "<f4", "F64": "<f8", "I32": "<i4", "I64": "<i8"}


# ------------------------------------------------------- the test's writer
def digest(meta: dict, arrays: dict) -> str:
    """The format's sha256: the metadata JSON (sorted keys, no spaces,
    without the digest) then every array's name, dtype, shape and bytes."""
    h = hashlib.sha256(json.dumps(meta, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(arrays):
        a = np.asarray(arrays[name])
        h.update(f"|{name}|{a.dtype.str}|{list(a.shape)}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def forge(meta: dict, arrays: dict, *, sign: bool = True, meta_text: str | None = None,
          edit=None, header_text: str | None = None, length: int | None = None) -> bytes:
    """A checkpoint file holding ``meta`` and ``arrays`` (the safetensors
    layout: 8-byte length, JSON header padded to 8 bytes, the arrays in
    name order).  ``sign``: write the correct sha256 for them;
    ``meta_text``: the scratchnet metadata string verbatim; ``edit``: a
    function that changes the safetensors header dict; ``header_text``: the
    whole header verbatim; ``length``: the 8-byte length field."""
    meta = dict(meta)
    if sign:
        meta.pop("sha256", None)
        meta["sha256"] = digest(meta, arrays)
    header = {"__metadata__": {"scratchnet": json.dumps(meta) if meta_text is None
                               else meta_text}}
    blobs, at = [], 0
    for name in sorted(arrays):
        a = np.asarray(arrays[name])   # (ascontiguousarray would make a 0-d array 1-d)
        header[name] = {"dtype": ST_DTYPES[a.dtype.str], "shape": list(a.shape),
                        "data_offsets": [at, at + a.nbytes]}
        blobs.append(a.tobytes())
        at += a.nbytes
    if edit is not None:
        edit(header)
    text = (json.dumps(header) if header_text is None else header_text).encode(
        "utf-8", "surrogatepass")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text) if length is None else length) + text + b"".join(blobs)


def parse(data: bytes) -> tuple[dict, dict]:
    """(metadata, arrays) of a well-formed file, read by this module."""
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = json.loads(header.pop("__metadata__")["scratchnet"])
    arrays = {}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        arrays[name] = np.frombuffer(data[8 + n + begin:8 + n + end],
                                     dtype=FROM_ST[entry["dtype"]]).reshape(entry["shape"])
    return meta, arrays


# ------------------------------------------------------- what must not change
@pytest.fixture
def bystander(device):
    """A training network on ``device``, 3 Adam epochs in (moments and step
    count in ``train.state``): a hostile load must leave it as it was."""
    x, y = regression_data(20)
    train = sn.training_network(article_net(device), x)
    sn.sgd(train, y, sn.quadratic_cost, 3, sn.Adam(0.01))
    yield train
    train.close()


@pytest.fixture
def saved(bystander, tmp_path):
    """The bystander's own checkpoint: (metadata, arrays) as this module reads them."""
    path = tmp_path / "own.ckpt"
    sn.save(bystander, path)
    meta, arrays = parse(path.read_bytes())
    path.unlink()
    assert set(arrays) == {"params", "state.adam.m", "state.adam.v", "state.adam.t"}
    return meta, arrays


def training_state(train):
    return (train.epoch, sn.to_numpy(train.net.params),
            {k: sn.to_numpy(v) for k, v in train.state.items()})


def assert_same_state(train, before) -> None:
    epoch, params, state = before
    assert train.epoch == epoch
    np.testing.assert_array_equal(sn.to_numpy(train.net.params), params)
    assert set(train.state) == set(state)
    for k, v in state.items():
        np.testing.assert_array_equal(sn.to_numpy(train.state[k]), v)


def fingerprint(path) -> tuple:
    """What a load must not change about ``path`` (not following links)."""
    info = os.lstat(path)
    content = None
    if os.path.isfile(path) and not os.path.islink(path) and info.st_size <= MiB:
        with open(path, "rb") as f:
            content = f.read()
    return info.st_mode, info.st_ino, info.st_size, info.st_mtime_ns, content


@contextlib.contextmanager
def within(seconds: float):
    """Fail with TimeoutError instead of hanging (SIGALRM interrupts a
    blocking open or read)."""
    def expired(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def refuse(path, train, device, *words) -> str:
    """``load`` and ``load_training`` of ``path`` on ``device`` both raise
    CheckpointError naming the file and each of ``words``, within 10 s;
    ``train``, the file and its folder are unchanged.  Returns the message."""
    path = str(path)
    before, mark = training_state(train), fingerprint(path)
    folder = os.path.dirname(path)
    listing = sorted(os.listdir(folder))
    x, _ = regression_data(5)
    messages = []
    for call in (lambda: sn.load(path, device=device),
                 lambda: sn.load_training(path, x, device=device)):
        with within(10), pytest.raises(sn.CheckpointError) as info:
            call()
        msg = str(info.value)
        assert msg.startswith(f"path: {path!r} is not a loadable scratchnet checkpoint: "), msg
        for word in words:
            assert word in msg, msg
        messages.append(msg)
    assert messages[0] == messages[1]
    assert_same_state(train, before)
    assert fingerprint(path) == mark
    assert sorted(os.listdir(folder)) == listing
    return messages[0]


def write(tmp_path, data: bytes, name: str = "hostile.ckpt"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def same_as_saved(net_or_train, meta: dict, arrays: dict) -> None:
    """A loaded Network/TrainingNetwork equals what the file holds."""
    train = net_or_train if isinstance(net_or_train, sn.TrainingNetwork) else None
    net = train.net if train is not None else net_or_train
    assert net.in_dim == meta["in_dim"]
    assert [[la.out_dim, la.activation.name] for la in net.layers] == meta["layers"]
    assert net.convention == meta["convention"]
    assert net.dtype == {"float32": torch.float32, "float64": torch.float64}[meta["dtype"]]
    params = sn.to_numpy(net.params)
    assert params.dtype == arrays["params"].dtype
    assert params.tobytes() == arrays["params"].tobytes()   # bit for bit, NaN included
    if train is not None:
        assert train.epoch == (meta["epoch"] or 0)
        assert sorted(train.state) == sorted(meta["state"])
        for name in meta["state"]:
            assert sn.to_numpy(train.state[name]).tobytes() == \
                arrays[f"state.{name}"].tobytes()


# ------------------------------------------------------------- the writer
def test_an_unmodified_forgery_loads_equal(device, bystander, saved, tmp_path):
    """The writer above is right: its file of the bystander's own metadata
    and arrays loads equal to the bystander, on its device."""
    meta, arrays = saved
    path = write(tmp_path, forge(meta, arrays))
    x, _ = regression_data(20)
    with sn.load_training(path, x, device=device) as back:
        same_as_saved(back, meta, arrays)
        assert_same_state(back, training_state(bystander))


# ------------------------------------------------------------- headers
def test_deep_nesting_is_refused_before_parsing(device, bystander, saved, tmp_path):
    meta, arrays = saved
    deep = "[" * 100_000 + "]" * 100_000
    cases = [
        (forge(meta, arrays, header_text='{"__metadata__": ' + deep + "}"),
         ["safetensors header", "nests 100001 levels deep", "at most 8"]),
        (forge(meta, arrays, meta_text='{"format": "scratchnet-checkpoint", "layers": '
               + deep + "}"), ["scratchnet metadata", "nests 100001 levels"]),
        (forge(meta, arrays, header_text='{"__metadata__": {"scratchnet": "x"}, '
               '"params": {"shape": ' + deep + "}}"),
         ["safetensors header", "nests 100002 levels"]),
        (forge(meta, arrays, meta_text='{"a": ' + "[" * 8 + "]" * 8 + "}"),
         ["nests 9 levels"]),                        # one past the bound
        (forge(meta, arrays, header_text='{"__metadata__": "' + "[" * 100_000),
         ["a string is not closed"]),
        (forge(meta, arrays, header_text='{"__metadata__": ' + "{" * 100_000),
         ["nests 100001 levels"]),
        (forge(dict(meta, layers=[[[32, "sigmoid"]], [16, "tanh"], [1, "linear"]]), arrays),
         ["layers[0] should be [out_dim, activation]"]),   # deep enough to parse, wrong
    ]
    for data, words in cases:
        refuse(write(tmp_path, data), bystander, device, *words)


def test_huge_and_out_of_range_numbers(device, bystander, saved, tmp_path):
    meta, arrays = saved
    n_params = arrays["params"].size
    DATA = sum(a.nbytes for a in arrays.values())   # noqa: N806 - the data section's size

    def meta_with(field, raw):
        """The metadata with ``raw`` written verbatim as ``field``."""
        return forge(meta, arrays, meta_text=json.dumps(dict(meta, **{field: "@"})).replace(
            '"@"', raw))

    def entry_with(name, field, raw):
        """The safetensors header with ``raw`` verbatim as ``name``'s ``field``."""
        def edit(header):
            header[name][field] = "@"
        good = forge(meta, arrays, edit=edit)
        n = struct.unpack("<Q", good[:8])[0]
        return forge(meta, arrays, header_text=good[8:8 + n].decode().rstrip().replace(
            '"@"', raw))

    huge = "9" * 5000
    cases = [
        (meta_with("in_dim", huge), ["scratchnet metadata", "integer of 5000 digits",
                                     "at most 20"]),
        (meta_with("epoch", huge), ["integer of 5000 digits"]),
        (meta_with("version", "-" + huge), ["integer of 5000 digits"]),
        (meta_with("in_dim", "1" * 21), ["integer of 21 digits"]),
        (meta_with("in_dim", "1." + "0" * 5000), ["number written with 5002 characters"]),
        (meta_with("in_dim", "1e999"), ["in_dim should be an int >= 1, got inf"]),
        (meta_with("in_dim", "-3"), ["in_dim should be an int >= 1, got -3"]),
        (meta_with("in_dim", "0"), ["in_dim should be an int >= 1, got 0"]),
        (meta_with("epoch", "-1"), ["epoch should be null or an int in [0, 2**63), got -1"]),
        (meta_with("epoch", str(2**63)), ["epoch should be null or an int in [0, 2**63)"]),
        (meta_with("epoch", "NaN"), ["scratchnet metadata holds NaN"]),
        (meta_with("epoch", "-Infinity"), ["holds -Infinity"]),
        (meta_with("version", "1e400"), ["format version inf"]),
        # in range for the parser, absurd for the file: caught by the size checks
        (forge(dict(meta, in_dim=10**19), arrays),
         ["the architecture 10000000000000000000-32-16-1 needs", "bytes of parameters"]),
        (forge(dict(meta, layers=[[10**6, "tanh"], [1, "linear"]]), arrays),
         [f"needs 24000004 bytes of parameters but the file holds {DATA}"]),
        (entry_with("params", "data_offsets", f"[0, {huge}]"),
         ["safetensors header", "integer of 5000 digits"]),
        (entry_with("params", "shape", f"[{huge}]"), ["integer of 5000 digits"]),
        (entry_with("params", "shape", "[-1]"),
         ["'params': shape should be a list of ints >= 0, got [-1]"]),
        (entry_with("params", "shape", f"[{n_params * 2}]"),
         [f"params have shape ({n_params * 2},), the architecture needs ({n_params},)"]),
        (entry_with("params", "data_offsets", f"[0, {2**64}]"),
         ["data_offsets [0, 18446744073709551616] span"]),
        (entry_with("params", "data_offsets", "[-4, 2816]"),
         ["data_offsets should be [begin, end] with 0 <= begin <= end, got [-4, 2816]"]),
        (entry_with("state.adam.t", "data_offsets", "[2816, 2812]"), ["0 <= begin <= end"]),
        (entry_with("state.adam.t", "data_offsets", "[0, 4]"),
         ["starts at byte 0 of the data, expected", "without gaps or overlaps"]),
    ]
    good = forge(meta, arrays)
    for length, words in [(2**64 - 1, ["claims 18446744073709551615 bytes", "at most 1048576"]),
                          (checkpoint.MAX_HEADER_BYTES + 1, ["at most 1048576"]),
                          (len(good) - 7, ["the header claims", "the file has"])]:
        cases.append((struct.pack("<Q", length) + good[8:], words))
    for data, words in cases:
        refuse(write(tmp_path, data), bystander, device, *words)


WRONG = [["x"], {"a": 1}, "3", 2.5, True, False, None, -1, 0, [], "", [[1, "tanh"]]]


def test_wrong_types_in_every_field(device, bystander, saved, tmp_path):
    """Every metadata field, every layer field, every safetensors entry
    field: a value of the wrong type or range, with a correct digest, is a
    CheckpointError naming the field (never TypeError: unhashable, never
    KeyError)."""
    meta, arrays = saved
    well_formed = {("epoch", None), ("epoch", 0), ("state", "[]"), ("layers", "[[1, 'tanh']]")}
    tried = 0
    for field in checkpoint._KEYS:
        for value in WRONG:   # (True and False must be refused as ints: True == 1)
            key = value if value is None or type(value) is int else repr(value)
            if (field, key) in well_formed:
                continue
            data = forge(dict(meta, **{field: value}), arrays, sign=field != "sha256")
            refuse(write(tmp_path, data), bystander, device, field)
            tried += 1
    for field in checkpoint._KEYS:          # a field missing
        less = {k: v for k, v in meta.items() if k != field}
        words = ["metadata format"] if field == "format" else ["format version None"] \
            if field == "version" else [f"the metadata lacks ['{field}']"]
        refuse(write(tmp_path, forge(less, arrays, sign=field != "sha256")), bystander,
               device, *words)
    refuse(write(tmp_path, forge(dict(meta, extra=1), arrays)), bystander, device,
           "unknown fields ['extra']")
    for layer, words in [("tanh", ["layers[0] should be [out_dim, activation]"]),
                         ([32], ["layers[0] should be"]),
                         ([32, "sigmoid", 1], ["layers[0] should be"]),
                         ([32, ["sigmoid"]], ["layers[0]: activation should be one of",
                                              "got ['sigmoid']"]),
                         ([32, {"sigmoid": 1}], ["layers[0]: activation"]),
                         ([32, "swish"], ["activation should be one of"]),
                         ([32, None], ["activation should be one of"]),
                         (["32", "sigmoid"], ["layers[0]: out_dim should be an int >= 1"]),
                         ([32.0, "sigmoid"], ["out_dim should be an int >= 1, got 32.0"]),
                         ([True, "sigmoid"], ["out_dim should be an int >= 1, got True"]),
                         ([0, "sigmoid"], ["out_dim should be an int >= 1, got 0"]),
                         ([[32], "sigmoid"], ["out_dim should be"])]:
        changed = dict(meta, layers=[layer] + meta["layers"][1:])
        refuse(write(tmp_path, forge(changed, arrays)), bystander, device, *words)
        tried += 1
    for names, words in [("adam.m", ["state should be a list of names"]),
                         ([1, 2], ["state should be a list of names"]),
                         ([["adam.m"]], ["state should be a list of names"]),
                         (["adam.m", "adam.m", "adam.t", "adam.v"], ["state names repeat"]),
                         (["adam.m", "adam.t"], ["do not match the state names"]),
                         (["adam.m", "adam.t", "adam.v", "velocity"], ["do not match"])]:
        refuse(write(tmp_path, forge(dict(meta, state=names), arrays)), bystander, device,
               *words)
        tried += 1

    def entry(name, key, value):
        def edit(header):
            if key is None:
                header[name] = value
            else:
                header[name][key] = value
        return edit

    for edit, words in [
            (entry("params", "dtype", ["F32"]), ["params are ['F32'] in safetensors' notation"]),
            (entry("params", "dtype", "F16"), ["params are 'F16'", "expected float32"]),
            (entry("params", "dtype", 5), ["params are 5"]),
            (entry("params", "shape", "705"), ["'params': shape should be a list of ints"]),
            (entry("params", "shape", [705.0]), ["shape should be a list of ints"]),
            (entry("params", "shape", [[705]]), ["shape should be a list of ints"]),
            (entry("params", "shape", {"705": 1}), ["shape should be a list"]),
            (entry("params", "shape", [705, 1]), ["params have shape (705, 1)"]),
            (entry("params", "data_offsets", [0]), ["data_offsets should be [begin, end]"]),
            (entry("params", "data_offsets", "0,2820"), ["data_offsets should be"]),
            (entry("params", "data_offsets", [0, 2820, 1]), ["data_offsets should be"]),
            (entry("params", "data_offsets", [True, 2820]), ["data_offsets should be"]),
            (entry("params", None, []), ["array 'params': the header entry should have"]),
            (entry("params", None, "x"), ["the header entry should have"]),
            (entry("params", "extra", 1), ["the header entry should have"]),
            (entry("state.adam.t", "dtype", ["F32"]), ["state 'adam.t' is ['F32']"]),
            (entry("__metadata__", None, []), ["no 'scratchnet' metadata"]),
            (entry("__metadata__", "scratchnet", ["{}"]), ["no 'scratchnet' metadata"]),
            (entry("__metadata__", "scratchnet", None), ["no 'scratchnet' metadata"]),
            (entry("__metadata__", "other", "x"), ["metadata has fields ['other', "
                                                   "'scratchnet']"]),
            (entry("velocity", None, {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}),
             ["do not match the state names"])]:
        refuse(write(tmp_path, forge(meta, arrays, edit=edit)), bystander, device, *words)
        tried += 1
    for text, words in [("[]", ["the safetensors header is [], not a JSON object"]),
                        ("null", ["is None, not a JSON object"]),
                        ('"x"', ["not a JSON object"]),
                        ('{"__metadata__": {"scratchnet": "[]"}}', ["metadata format is []"]),
                        (json.dumps({"__metadata__": {"scratchnet": json.dumps("\ud800")}}),
                         ["metadata format is '\\ud800'"]),
                        ('{"a": 1, "a": 2}', ["holds the key 'a' twice"]),
                        ("\xff", []), ("{", ["not valid JSON"])]:
        data = forge(meta, arrays, header_text=text)
        if text == "\xff":   # not UTF-8: forge() would encode it
            data = struct.pack("<Q", 8) + b"\xff" * 8 + data[16:]
            words = ["not UTF-8"]
        refuse(write(tmp_path, data), bystander, device, *words)
        tried += 1
    assert tried >= 150


def full_size_headers() -> dict[str, bytes]:
    """Files whose header fills MAX_HEADER_BYTES with what costs a JSON
    parser most: nesting, many small values, many keys, many escapes."""
    room = checkpoint.MAX_HEADER_BYTES - 64

    def file(header: str) -> bytes:
        data = header.encode()
        assert len(data) <= checkpoint.MAX_HEADER_BYTES
        return struct.pack("<Q", len(data)) + data

    def inside(meta_text: str) -> str:
        return '{"__metadata__": {"scratchnet": ' + json.dumps(meta_text) + "}}"

    return {
        "header: [ nested 1 MiB deep": file("[" * room),
        "header: 2^19 small ints": file("[" + "0," * (room // 2 - 1) + "0]"),
        "header: 2^18 short strings": file("[" + '"a",' * (room // 4 - 1) + '"a"]'),
        "header: depth-8 lists, repeated": file("[" + ",".join(
            ["[[[[[[[1]]]]]]]"] * (room // 16)) + "]"),
        "metadata: 2^16 - 1 keys (the item bound)": file(inside("{" + ",".join(
            f'"{i:x}":0' for i in range(checkpoint.MAX_JSON_ITEMS - 1)) + "}")),
        "metadata: 2^16 - 1 strings of 8 bytes": file(inside("[" + ",".join(
            ['"abcdefgh"'] * (checkpoint.MAX_JSON_ITEMS - 2)) + "]")),
        "metadata: 2^17 escaped quotes": file(inside('"' + '\\"' * (room // 8) + '"')),
    }


@pytest.mark.parametrize("kind", list(full_size_headers()))
def test_a_full_size_hostile_header_costs_little(kind, tmp_path):
    """The worst a header can do within MAX_HEADER_BYTES: refused, with a
    traced memory peak under 24 MiB (the figures, with ``-s``, are quoted in
    docs/reliability.md)."""
    path = write(tmp_path, full_size_headers()[kind])
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with within(30), pytest.raises(sn.CheckpointError) as info:
            sn.load(path)
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    print(f"\n{kind}: {path.stat().st_size} bytes, refused in {seconds:.3f} s, traced peak "
          f"{peak / MiB:.1f} MiB: {str(info.value).split(': ', 2)[2][:70]}")
    assert peak < 24 * MiB


# ------------------------------------------------------- optimizer state
def test_optimizer_state_is_validated(device, bystander, saved, tmp_path):
    """Wrong shapes and dtypes, an Adam step count of −5, NaN or 2.5, a
    negative second moment: refused at load time (before, a wrong shape was
    silently reset to zeros and t = −5 failed later with 'math domain
    error')."""
    meta, arrays = saved
    nw = arrays["state.adam.m"].size
    n_params = arrays["params"].size
    f32 = np.float32

    def with_state(**changes):
        new = dict(arrays)
        for name, value in changes.items():
            key = f"state.{name.replace('_', '.')}"
            if value is None:
                new.pop(key)
            else:
                new[key] = value
        names = sorted(k[len("state."):] for k in new if k != "params")
        return forge(dict(meta, state=names), new)

    cases = [
        (dict(adam_m=np.zeros(nw + 1, f32)), ["state 'adam.m' (Adam's first moment) has shape "
                                              f"({nw + 1},), expected ({nw},)"]),
        (dict(adam_m=np.zeros(n_params, f32)), [f"shape ({n_params},), expected ({nw},)"]),
        (dict(adam_m=np.zeros((nw // 2, 2), f32)), [f"shape ({nw // 2}, 2)"]),
        (dict(adam_v=np.zeros((), f32)), ["state 'adam.v'", "shape ()"]),
        (dict(adam_v=np.zeros(nw, np.float64)), ["state 'adam.v' is 'F64' in safetensors' "
                                                 "notation, expected the network's float32"]),
        (dict(adam_m=np.zeros(nw, np.float16)), ["state 'adam.m' is 'F16'"]),
        (dict(adam_t=np.zeros(1, np.int32)), ["state 'adam.t' is 'I32'"]),
        (dict(adam_t=np.zeros(2, f32)), ["state 'adam.t' (Adam's step count) has shape (2,)"]),
        (dict(adam_t=np.array([-5], f32)), ["state 'adam.t' (Adam's step count) should be a "
                                            "whole number >= 0, got -5.0"]),
        (dict(adam_t=np.array([np.nan], f32)), ["should be a whole number >= 0, got nan"]),
        (dict(adam_t=np.array([2.5], f32)), ["got 2.5"]),
        (dict(adam_t=np.array([np.inf], f32)), ["got inf"]),
        (dict(adam_t=np.array([-0.5], f32)), ["got -0.5"]),
        (dict(adam_v=np.where(np.arange(nw) == 7, -1e-9, 1.0).astype(f32)),
         ["state 'adam.v' (Adam's second moment, a mean of squares) holds 1 negative"]),
        (dict(velocity=np.zeros(n_params, f32)), ["state 'velocity' (SGD's momentum velocity) "
                                                  f"has shape ({n_params},)"]),
        (dict(mine=np.zeros(n_params + 1, f32)), [f"state 'mine' has shape ({n_params + 1},)",
                                                  "must be 1-D with at most n_params"]),
        (dict(mine=np.zeros((2, 3), f32)), ["state 'mine' has shape (2, 3)"]),
        (dict(mine=np.zeros(3, np.float64)), ["state 'mine' is 'F64'"]),
    ]
    for changes, words in cases:
        refuse(write(tmp_path, with_state(**changes)), bystander, device, *words)
    # within the rules: loads, equal to the file, and Adam resumes from it
    x, y = regression_data(20)
    for changes in [dict(adam_t=np.array([1e6], f32)), dict(adam_t=np.array([0], f32)),
                    dict(mine=np.arange(n_params, dtype=f32)), dict(mine=np.zeros(0, f32)),
                    dict(adam_m=None, adam_v=None, adam_t=None,
                         velocity=np.ones(nw, f32))]:
        data = with_state(**changes)
        path = write(tmp_path, data)
        file_meta, file_arrays = parse(data)
        with sn.load_training(path, x, device=device) as back:
            same_as_saved(back, file_meta, file_arrays)
            optimizer = sn.Adam(0.01) if "adam.t" in back.state else sn.SGD(0.01, mu=0.5)
            cost = sn.sgd(back, y, sn.quadratic_cost, 2, optimizer)
            assert math.isfinite(cost)
    assert_same_state(bystander, training_state(bystander))


def test_save_refuses_state_that_load_would_refuse(tmp_path):
    """A custom optimizer's state outside the rule is refused when saved,
    not discovered unloadable when resuming; the old file is kept."""
    x, _ = regression_data(10)
    train = sn.training_network(article_net("cpu"), x)
    path = tmp_path / "run.ckpt"
    sn.save(train, path)
    before = path.read_bytes()
    for name, value, words in [
            ("mine", torch.zeros((2, 3)), ["'mine' has shape (2, 3)"]),
            ("mine", torch.zeros(train.net.n_params + 1), ["at most n_params"]),
            ("mine", torch.zeros(3, dtype=torch.float64), ["'mine' is float64"]),
            ("velocity", torch.zeros(train.net.n_params), ["'velocity'"]),
            (7, torch.zeros(3), ["state name 7 is not a string"])]:
        train.state = {name: value}
        with pytest.raises(ValueError) as info:
            sn.save(train, path)
        assert str(info.value).startswith("net_or_train: train.state cannot be saved")
        for word in words:
            assert word in str(info.value)
        assert path.read_bytes() == before and os.listdir(tmp_path) == ["run.ckpt"]


# ------------------------------------------------------- huge and special files
def test_huge_sparse_files_are_refused_without_reading(device, bystander, saved, tmp_path,
                                                       monkeypatch):
    """3 GiB sparse files (no disk used): refused from the header and the
    file's size alone.  Traced Python/numpy memory stays under 1 MiB, the
    process's peak RSS does not grow by 3 GiB, and the reader asks for
    nothing past the header."""
    meta, arrays = saved
    requested = []
    real_read = checkpoint._read_exact
    monkeypatch.setattr(checkpoint, "_read_exact", lambda path, f, buf: (
        requested.append(len(memoryview(buf).cast("B"))), real_read(path, f, buf))[1])
    good = forge(meta, arrays)
    n = struct.unpack("<Q", good[:8])[0]
    size = 3 << 30
    declared = sum(a.nbytes for a in arrays.values())
    cases = [(good, [f"the header declares {declared} bytes of arrays but the file has "
                     f"{size - 8 - n} after the header"], [8, n]),
             (b"", ["the safetensors header is not valid JSON"], [8, 0]),
             (struct.pack("<Q", size - 8) + good[8:], ["claims 3221225464 bytes",
                                                       "at most 1048576"], [8]),
             (forge(dict(meta, in_dim=10**12), arrays), ["needs 128000000002308 bytes"], None)]
    for data, words, reads in cases:
        path = tmp_path / "huge.ckpt"
        path.write_bytes(data)
        os.truncate(path, size)
        assert os.stat(path).st_blocks * 512 < 64 * MiB   # sparse: costs no disk
        requested.clear()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        tracemalloc.start()
        try:
            refuse(path, bystander, device, *words)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < MiB, peak
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss < 256 * MiB
        if reads is not None:
            assert requested == reads * 2   # load and load_training: header only
        path.unlink()


def test_the_reader_reads_exactly_the_declared_bytes(saved, tmp_path, monkeypatch):
    meta, arrays = saved
    requested = []
    real_read = checkpoint._read_exact
    monkeypatch.setattr(checkpoint, "_read_exact", lambda path, f, buf: (
        requested.append(len(memoryview(buf).cast("B"))), real_read(path, f, buf))[1])
    data = forge(meta, arrays)
    sn.load(write(tmp_path, data))
    assert sum(requested) == len(data) and len(requested) == 3
    requested.clear()
    declared = sum(a.nbytes for a in arrays.values())
    with pytest.raises(sn.CheckpointError, match=f"the file has {declared + 1} after the"):
        sn.load(write(tmp_path, data + b"\0"))   # one byte too many: nothing after the header
    assert sum(requested) == len(data) - declared   # is read


def special_files(tmp_path):
    """(path, words) for every kind of non-regular file this system has."""
    out = []
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    out += [(fifo, ["it is a FIFO (named pipe), not a regular file"]),
            (tmp_path / "folder", ["it is a folder, not a regular file"])]
    (tmp_path / "folder").mkdir()
    os.symlink(fifo, tmp_path / "link-to-fifo")
    out.append((tmp_path / "link-to-fifo", ["a FIFO (named pipe)"]))
    if os.path.exists("/dev/zero"):
        out.append(("/dev/zero", ["it is a character device"]))
        os.symlink("/dev/zero", tmp_path / "link-to-zero")
        out.append((tmp_path / "link-to-zero", ["a character device"]))
    if hasattr(socket, "AF_UNIX"):
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(tmp_path / "sock"))
        out.append((tmp_path / "sock", ["it is a socket"]))
    return out


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")
def test_special_files_are_refused_without_blocking(device, bystander, tmp_path):
    """A FIFO (which blocks a reader until a writer comes), /dev/zero
    (endless), a folder, a socket and links to them: refused from
    ``os.stat`` within the 10 s guard, nothing read, nothing changed."""
    for path, words in special_files(tmp_path):
        start = time.perf_counter()
        refuse(path, bystander, device, *words)
        assert time.perf_counter() - start < 5


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")
def test_a_file_swapped_for_a_fifo_after_stat_does_not_block(saved, tmp_path, monkeypatch):
    """The race: os.stat saw a regular file, then a FIFO took its place.
    The open does not block (O_NONBLOCK) and the descriptor's own fstat
    refuses it."""
    meta, arrays = saved
    regular = write(tmp_path, forge(meta, arrays), "regular.ckpt")
    fifo = tmp_path / "fifo.ckpt"
    os.mkfifo(fifo)
    real_stat = os.stat
    monkeypatch.setattr(checkpoint.os, "stat", lambda p, *a, **k: real_stat(
        regular if os.fspath(p) == str(fifo) else p, *a, **k))
    with within(10), pytest.raises(sn.CheckpointError, match="replaced while being opened"):
        sn.load(fifo)


# ------------------------------------------------------- generated files
MODES = ["intact", "truncate", "flip", "length", "extend", "array", "field", "layer", "drop",
         "entry", "header_text", "meta_text"]
#: Generated cases per mode (12 modes): 50 by default, 600 in all (5-10 s).
EXAMPLES = int(os.environ.get("SCRATCHNET_CKPT_EXAMPLES", "50"))
SETTINGS = dict(deadline=None, max_examples=EXAMPLES,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
ACTIVATIONS = ["sigmoid", "tanh", "linear", "relu", "elu"]
FIELDS = list(checkpoint._KEYS)
TIME_BOUND_S = 5.0


class Raw(str):
    """JSON text written verbatim (numbers Python cannot print, NaN, deep
    nesting)."""


def dump(value) -> str:
    """JSON text of a generated value, Raw parts verbatim."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(dump(v) for v in value) + "]"
    return json.dumps(value)


number_text = st.builds(
    lambda sign, digits, frac, exp: Raw(sign + "9" * digits + frac + exp),
    st.sampled_from(["", "-"]), st.sampled_from([1, 2, 19, 20, 21, 40, 300, 4301, 5000]),
    st.sampled_from(["", ".5", ".0"]), st.sampled_from(["", "e999", "e-999", "e3"]))
nesting = st.builds(lambda k, brace: Raw(("[" * k + "]" * k) if not brace else
                                         ('{"a": ' * k + "1" + "}" * k)),
                    st.sampled_from([1, 2, 7, 8, 9, 100, 10_000, 100_000]), st.booleans())
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False,
                                                                   allow_infinity=False),
    st.text(max_size=12), st.sampled_from(["NaN", "Infinity", "-Infinity"]).map(Raw),
    number_text, nesting,
    st.sampled_from(["tanh", "float32", "float64", "standard", "series", "velocity",
                     "adam.t", checkpoint.FORMAT, "0" * 64, "F32", "params"]))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                           max_leaves=10)


@st.composite
def networks(draw):
    """(meta, arrays) of a generated, valid checkpoint."""
    in_dim = draw(st.integers(1, 5))
    outs = draw(st.lists(st.integers(1, 5), min_size=1, max_size=3))
    acts = [draw(st.sampled_from(ACTIVATIONS)) for _ in outs]
    dtype = draw(st.sampled_from(["float32", "float64"]))
    dims = [in_dim] + outs
    nw = sum(o * i for i, o in zip(dims, dims[1:]))
    n_params = nw + sum(outs)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    np_dtype = np.dtype("<f4" if dtype == "float32" else "<f8")
    arrays = {"params": rng.standard_normal(n_params).astype(np_dtype)}
    kind = draw(st.sampled_from(["none", "velocity", "adam", "custom"]))
    if kind == "velocity":
        arrays["state.velocity"] = rng.standard_normal(nw).astype(np_dtype)
    elif kind == "adam":
        arrays["state.adam.m"] = rng.standard_normal(nw).astype(np_dtype)
        arrays["state.adam.v"] = np.abs(rng.standard_normal(nw)).astype(np_dtype)
        arrays["state.adam.t"] = np.array([draw(st.integers(0, 10**6))], np_dtype)
    elif kind == "custom":
        size = draw(st.integers(0, n_params))
        arrays[f"state.{draw(st.text(min_size=1, max_size=8))}"] = \
            rng.standard_normal(size).astype(np_dtype)
    meta = {"format": checkpoint.FORMAT, "version": 1, "in_dim": in_dim,
            "layers": [[o, a] for o, a in zip(outs, acts)],
            "convention": draw(st.sampled_from(["standard", "series"])), "dtype": dtype,
            "epoch": draw(st.none() | st.integers(0, 2**63 - 1)),
            "state": sorted(k[len("state."):] for k in arrays if k != "params")}
    return meta, arrays


@st.composite
def hostile_arrays(draw, meta, arrays):
    """A replaced, added or removed array (any shape, dtype and values)."""
    names = sorted(arrays) + ["state.adam.t", "state.velocity", "state.extra"]
    name = draw(st.sampled_from(names))
    arrays = dict(arrays)
    if draw(st.integers(0, 9)) == 0:
        arrays.pop(name, None)
    else:
        dtype = draw(st.sampled_from(["<f4", "<f8", "<f2", "<i4"]))
        base = arrays.get(name, arrays["params"])
        shape = draw(st.sampled_from(["same", "plus", "minus", "2d", "0d", "empty"]))
        size = base.size
        dims = {"same": (size,), "plus": (size + 1,), "minus": (max(size - 1, 0),),
                "2d": (1, size), "0d": (), "empty": (0,)}[shape]
        values = np.full(dims, draw(st.sampled_from([0.0, 1.0, -5.0, 2.5, 1e6, -1e-9,
                                                     float("nan"), float("inf")])))
        with np.errstate(invalid="ignore", over="ignore"):
            arrays[name] = values.astype(dtype)
    names_listed = sorted(k[len("state."):] for k in arrays if k != "params")
    if draw(st.booleans()):
        meta = dict(meta, state=names_listed)
    return meta, arrays


@st.composite
def cases(draw, mode: str):
    """(file bytes, (metadata, arrays) a successful load must equal, mode):
    a generated network's file, changed as ``mode`` says."""
    meta, arrays = draw(networks())
    base = forge(meta, arrays)
    original = (meta, arrays)
    if mode == "intact":
        return base, original, mode
    if mode == "truncate":
        return base[:draw(st.integers(0, len(base) - 1))], original, mode
    if mode == "flip":
        data = bytearray(base)
        for _ in range(draw(st.integers(1, 4))):
            bit = draw(st.integers(0, 8 * len(data) - 1))
            data[bit // 8] ^= 1 << (bit % 8)
        return bytes(data), original, mode
    if mode == "length":
        n = struct.unpack("<Q", base[:8])[0]
        length = draw(st.integers(0, 2**64 - 1) | st.integers(max(n - 16, 0), n + 16))
        return struct.pack("<Q", length) + base[8:], original, mode
    if mode == "extend":
        return base + bytes(draw(st.integers(1, 64))), original, mode
    if mode == "array":
        meta, arrays = draw(hostile_arrays(meta, arrays))
        return forge(meta, arrays, sign=draw(st.integers(0, 9)) > 0), (meta, arrays), mode
    if mode in ("field", "layer", "drop"):
        if mode == "field":
            changed = dict(meta, **{draw(st.sampled_from(FIELDS)): draw(json_values)})
        elif mode == "layer":
            layers = [list(la) for la in meta["layers"]]
            i = draw(st.integers(0, len(layers) - 1))
            layers[i][draw(st.integers(0, 1))] = draw(json_values)
            changed = dict(meta, layers=layers)
        else:
            changed = {k: v for k, v in meta.items() if k != draw(st.sampled_from(FIELDS))}
            if draw(st.booleans()):
                changed[draw(st.text(max_size=8))] = draw(json_values)
        changed.pop("sha256", None)
        text = dump(changed)
        try:   # what the file says, if Python can read it: sign that
            said = json.loads(text)
        except (ValueError, RecursionError):
            said = None
        if said is not None and isinstance(said, dict) and draw(st.integers(0, 9)) > 0:
            said["sha256"] = digest(said, arrays)
            text = json.dumps(said)
        return forge(meta, arrays, meta_text=text), (said, arrays), mode
    if mode == "entry":
        name = draw(st.sampled_from(sorted(arrays) + ["__metadata__"]))
        key = draw(st.sampled_from(["dtype", "shape", "data_offsets", None]))
        value = draw(json_values)
        n = struct.unpack("<Q", base[:8])[0]
        header = json.loads(base[8:8 + n])
        if key is None or not isinstance(header[name], dict):
            header[name] = value
        else:
            header[name][key] = value
        return forge(meta, arrays, header_text=dump(header)), original, mode
    text = draw(st.one_of(json_values.map(dump), nesting, number_text,
                          st.text(max_size=40)))
    if mode == "header_text":
        return forge(meta, arrays, header_text=text), original, mode
    return forge(meta, arrays, meta_text=text), original, mode


@pytest.mark.parametrize("mode", MODES)
@settings(**SETTINGS)
@given(data=st.data())
def test_generated_files_load_equal_or_are_refused(mode, data, tmp_path_factory):
    """Every generated file either loads (``load`` and ``load_training``)
    equal to what it holds, or both raise CheckpointError; each case within
    TIME_BOUND_S and a traced-memory peak of 2 MiB + 32 x the file's size."""
    data, said, mode = data.draw(cases(mode))
    if mode in ("flip", "length") and data == forge(*said):
        mode += " (unchanged: a bit flipped twice, or the same length)"
    path = tmp_path_factory.mktemp("gen") / "case.ckpt"
    path.write_bytes(data)
    outcome = []
    start = time.perf_counter()
    tracemalloc.start()
    try:
        with within(30):
            try:
                net = sn.load(path)
            except sn.CheckpointError as exc:
                outcome.append(exc)
                net = None
            x = np.zeros((2, net.in_dim if net is not None else said[0]["in_dim"]
                          if isinstance(said[0], dict) and isinstance(said[0].get("in_dim"), int)
                          and 0 < said[0]["in_dim"] < 100 else 1), np.float32)
            try:
                train = sn.load_training(path, x)
            except sn.CheckpointError as exc:
                outcome.append(exc)
                train = None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - start
    assert elapsed < TIME_BOUND_S, f"{mode}: {elapsed:.1f} s"
    assert peak < 2 * MiB + 32 * len(data), f"{mode}: peak {peak} bytes for {len(data)} bytes"
    event(f"mode={mode}")
    if outcome:
        assert len(outcome) == 2 and net is None and train is None, \
            "load and load_training disagree"
        assert str(outcome[0]).startswith(f"path: {str(path)!r} is not a loadable")
        event("refused")
        return
    event("loaded")
    meta, arrays = said
    same_as_saved(net, meta, arrays)
    same_as_saved(train, meta, arrays)
    net.close()
    train.close()


def json_nesting(value, level: int = 0) -> tuple[int, int]:
    """The reference: (how deep ``[``/``{`` nest, containers + commas) of a
    parsed JSON value."""
    if not isinstance(value, (list, dict)):
        return level, 0
    inner = [json_nesting(v, level + 1) for v in
             (value if isinstance(value, list) else value.values())]
    return (max([d for d, _ in inner] + [level + 1]),
            1 + max(len(value) - 1, 0) + sum(n for _, n in inner))


tricky_text = st.text(alphabet='ab\\"[]{},\u00e9', max_size=6)
plain_json = st.recursive(st.none() | st.integers(-9, 9) | tricky_text,
                          lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(tricky_text, inner, max_size=3), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(value=plain_json, ascii_only=st.booleans(), chunk=st.sampled_from([1, 2, 3, 5, 4096]))
def test_the_json_scan_matches_the_parse(value, ascii_only, chunk):
    """The scan that runs before ``json.loads``: on any JSON text (strings
    full of quotes, backslashes and brackets), in chunks of any size, its
    depth and item count are the parsed value's; an unclosed string is None."""
    text = json.dumps(value, ensure_ascii=ascii_only).encode()
    old = checkpoint._CHUNK
    checkpoint._CHUNK = chunk
    try:
        assert checkpoint._json_shape(text) == json_nesting(value)
        assert checkpoint._json_shape(text + b'"') is None
    finally:
        checkpoint._CHUNK = old
