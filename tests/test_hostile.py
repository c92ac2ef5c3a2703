"""Hostile input, tried systematically (hypothesis).

Every public entry point is fed generated arguments: random shapes (empty,
one sample, wrong width, 1-D, 3-D), dtypes (bool, int, uint, float16,
bfloat16, float32, float64, long double, big-endian, complex), containers
(numpy, strided/Fortran numpy, torch, transposed torch, requires_grad
torch, lists), NaN/inf at random places, values beyond float32's range, and
extreme hyperparameters (0, negative, inf, NaN, 1e30, 10**400).  For each
call the test decides independently whether the input is valid, then checks:

* valid: the call works and the result matches a float64 reference
  (torch autograd for training, numpy for the rest);
* invalid: ``ValueError`` or ``TypeError`` whose message starts with the
  offending argument's name, and the network is bit-for-bit unchanged.

Extreme but valid hyperparameters (η = 1e30) may blow the network up: with
the guard on that must end in ``DivergenceError`` with finite parameters,
with ``guard=False`` the run completes and reports its cost.

Budget: ``max_examples`` per test below, no deadline; the whole file runs
in well under a minute.  ``pytest tests/test_hostile.py
--hypothesis-show-statistics`` prints the counts quoted in docs/reliability.md.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import forward64, params64
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import scratchnet as sn

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                      HealthCheck.too_slow])
F32_MAX = float(np.finfo(np.float32).max)
FLOATS = ["float16", "bfloat16", "float32", "float64", "longdouble", ">f8"]
OTHERS = ["bool", "int8", "int32", "int64", "uint8", "complex64", "complex128"]


@st.composite
def matrices(draw, rows: int, cols: int, any_rows: bool = False):
    """(data, valid, note): a generated would-be (rows, cols) matrix
    (``any_rows``: any number of rows >= 1 is right, as for inputs x)."""
    clean = draw(st.booleans())   # half the cases: a well-formed matrix of some float type
    shape = "right" if clean else draw(st.sampled_from(["right", "rows", "cols", "1d", "3d"]))
    r, c = rows, cols
    if shape == "rows":
        r = draw(st.sampled_from([0, rows + 1] if rows > 1 else [0, 2]))
    elif shape == "cols":
        c = draw(st.sampled_from([0, cols + 1, max(cols - 1, 0)]))
    dims = {"right": (r, c), "rows": (r, c), "cols": (r, c), "1d": (r * c,),
            "3d": (1, r, c)}[shape]
    dtype = draw(st.sampled_from(FLOATS if clean else FLOATS + OTHERS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    base = rng.uniform(-2, 2, size=dims)
    poison = None if clean else draw(st.sampled_from([None, np.nan, np.inf, -np.inf, 1e300]))
    if poison is not None and base.size:
        base.flat[draw(st.integers(0, base.size - 1))] = poison
    container = draw(st.sampled_from(["numpy", "strided", "fortran", "torch", "torch_t",
                                      "grad", "list"]))
    if dtype in ("bool",):
        data = base > 0
    elif dtype.startswith(("int", "uint")):
        data = np.nan_to_num(base, nan=0, posinf=1, neginf=-1).clip(-100, 100).astype(dtype)
    elif dtype.startswith("complex"):
        with np.errstate(over="ignore", invalid="ignore"):
            data = (base + 1j).astype(dtype)
    elif dtype == "bfloat16":
        data = base   # made a torch tensor below
        container = draw(st.sampled_from(["torch", "torch_t", "grad"]))
    else:
        with np.errstate(over="ignore"):
            data = base.astype(np.dtype(dtype))
    if dtype in ("longdouble", ">f8") and container in ("torch", "torch_t", "grad"):
        container = "numpy"   # torch has no such dtypes
    if container == "strided":
        wide = np.zeros(dims[:-1] + (2 * dims[-1],), dtype=data.dtype)
        wide[..., ::2] = data
        data = wide[..., ::2]
    elif container == "fortran":
        data = np.asfortranarray(data)
    elif container in ("torch", "torch_t", "grad"):
        tdtype = torch.bfloat16 if dtype == "bfloat16" else None
        t = torch.from_numpy(np.ascontiguousarray(data))
        t = t.to(tdtype) if tdtype is not None else t
        if container == "torch_t" and t.dim() == 2:
            t = t.t().contiguous().t()     # same values, column-major strides
        if container == "grad" and t.is_floating_point():
            t = t.clone().requires_grad_()
        data = t
    elif container == "list":
        data = data.tolist()
    # what the library should decide
    kind = "float" if dtype in FLOATS else dtype
    if container == "list":   # a list is read by numpy.asarray
        arr = np.asarray(data)
        kind = "float" if arr.dtype.kind == "f" else arr.dtype.name
    values = base.astype(np.float64)
    valid = (len(dims) == 2 and (dims[0] == rows or any_rows) and dims[0] >= 1
             and dims[1] == cols
             and kind == "float" and bool(np.all(np.abs(values) <= F32_MAX)))
    if dtype == "float16" and np.any(np.abs(values) > 65504):
        valid = False   # 1e300 became inf in float16: a non-finite value
    return data, valid, f"{shape} {dtype} {container} poison={poison}"


def as_float32(data) -> np.ndarray:
    """What the network reads: the data converted once to float32."""
    if isinstance(data, torch.Tensor):
        return data.detach().to(torch.float32).numpy()
    return np.asarray(data, dtype=np.float64).astype(np.float32)


def small_net(seed=0, dtype=torch.float32):
    return sn.inference_network(3, [sn.fully_connected(4, sn.tanh),
                                    sn.fully_connected(2, sn.sigmoid)], seed=seed, dtype=dtype)


def refused(exc: BaseException, *names: str) -> None:
    assert isinstance(exc, (ValueError, TypeError)), f"{type(exc).__name__}: {exc}"
    assert str(exc).split(":")[0].split()[0].split("[")[0] in names, str(exc)


@settings(max_examples=300, **SETTINGS)
@given(case=st.one_of(matrices(rows=5, cols=3, any_rows=True),
                     matrices(rows=1, cols=3, any_rows=True)))
def test_inference_and_training_input(case):
    data, valid, note = case
    event(f"x valid={valid}")
    net = small_net()
    before = sn.to_numpy(net.params)
    for call in (lambda: net(data), lambda: sn.training_network(net, data)):
        try:
            out = call()
        except Exception as exc:  # noqa: BLE001 - the property is about the type
            assert not valid, f"valid input refused ({note}): {exc!r}"
            refused(exc, "x")
            np.testing.assert_array_equal(sn.to_numpy(net.params), before)
            assert net.trainings == 0
            continue
        assert valid, f"invalid input accepted ({note})"
        x32 = as_float32(data)
        if isinstance(out, sn.TrainingNetwork):
            np.testing.assert_array_equal(sn.to_numpy(out.x), x32.T)
            out.close()
        else:
            ref = forward64(net, params64(net), x32.astype(np.float64)).detach().numpy()
            np.testing.assert_allclose(sn.to_numpy(out), ref, rtol=1e-5, atol=1e-6)


_GOOD_ETA = st.floats(1e-3, 0.5)
ETAS = st.one_of(_GOOD_ETA, _GOOD_ETA, _GOOD_ETA, _GOOD_ETA,
                 st.sampled_from([1e30, 3.0, 50.0, 1e6]), st.sampled_from(
    [0.0, -0.1, math.inf, -math.inf, math.nan, 1e30, 10**400, "0.1", None, True, 3]))
_GOOD_LAM = st.floats(0, 1)
LAMS = st.one_of(_GOOD_LAM, _GOOD_LAM, _GOOD_LAM, _GOOD_LAM,
                 st.sampled_from([-1.0, math.nan, math.inf, 1e30, "0"]))
EPOCHS = st.sampled_from([0, 1, 2, 3, np.int64(2)] * 3 + [-1, 2.5, True, "2"])


def eta_ok(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return 0 < float(v) < math.inf
    except OverflowError:   # 10**400
        return False


def lam_ok(v):
    return isinstance(v, float) and v == v and 0 <= v < math.inf


@st.composite
def hypers(draw):
    """(hyper, eta, lam, valid)."""
    eta, lam = draw(ETAS), draw(LAMS)
    form = draw(st.sampled_from(["eta", "eta", "pair", "pair", "tuple1", "list", "triple",
                                 "empty"]))
    if form == "eta":
        return eta, eta, 0.0, eta_ok(eta) and eta is not None
    if form in ("pair", "list"):
        hyper = (eta, lam) if form == "pair" else [eta, lam]
        return hyper, eta, lam, eta_ok(eta) and lam_ok(lam)
    if form == "tuple1":
        return (eta,), eta, 0.0, eta_ok(eta)
    # (eta, lam, mu) is momentum (part 16); mu = 1.5 is out of [0, 1): refused
    return ((eta, lam, 1.5) if form == "triple" else ()), eta, lam, False


def reference_train(net, x32, y32, steps) -> np.ndarray:
    """Float64 autograd replay of full-batch steps (eta, lam):
    W ← W − η (∂C/∂W + (λ/n) W), b ← b − η ∂C/∂b."""
    params = params64(net)
    n = x32.shape[0]
    for eta, lam in steps:
        a = forward64(net, params, x32.astype(np.float64))
        loss = ((a - torch.from_numpy(y32.astype(np.float64))) ** 2).sum() / (2 * n)
        loss.backward()
        with torch.no_grad():
            for w, b in params:
                w -= eta * (w.grad + lam / n * w)
                b -= eta * b.grad
                w.grad = b.grad = None
    return np.concatenate([w.detach().numpy().ravel() for w, _ in params]
                          + [b.detach().numpy().ravel() for _, b in params])


def check_trained(net, train, start, x32, y32, steps, guard, extreme, call):
    try:
        call()
    except sn.DivergenceError as err:
        assert guard and extreme, f"unexpected divergence: {err}"
        assert math.isfinite(sn.amax(net.params))
        assert train.epoch == err.restored_epoch
        return
    total = sum(1 for _ in steps)
    assert train.epoch == total
    if extreme:
        assert not guard or math.isfinite(sn.amax(net.params))
        return
    ref = reference_train_from(start, net, x32, y32, steps)
    np.testing.assert_allclose(sn.to_numpy(net.params), ref, rtol=2e-4, atol=2e-5)


def reference_train_from(start, net, x32, y32, steps):
    twin = small_net()
    twin.backend.copy_(twin.params, twin.backend.from_host(start))
    return reference_train(twin, x32, y32, steps)


@settings(max_examples=300, **SETTINGS)
@given(ycase=matrices(rows=5, cols=2), hyper=hypers(), epochs=EPOCHS, guard=st.booleans())
def test_sgd_arguments(ycase, hyper, epochs, guard):
    ydata, y_valid, note = ycase
    hyper, eta, lam, h_valid = hyper
    e_valid = isinstance(epochs, (int, np.integer)) and not isinstance(epochs, bool) \
        and epochs >= 0
    x32 = np.random.default_rng(1).uniform(-1, 1, (5, 3)).astype(np.float32)
    net = small_net()
    train = sn.training_network(net, x32)
    start = sn.to_numpy(net.params)
    grads = sn.to_numpy(train.grads)
    valid = y_valid and h_valid and e_valid
    event("refused" if not valid else "extreme" if not (
        eta <= 0.5 and (lam if isinstance(hyper, (tuple, list)) and len(hyper) == 2 else 0.0)
        <= 1) else "checked against float64 autograd")
    if not valid:
        with pytest.raises(Exception) as info:  # noqa: B017 - the type is the property
            sn.sgd(train, ydata, sn.quadratic_cost, epochs, hyper, guard=guard)
        bad = [n for n, ok in (("y", y_valid), ("epochs", e_valid)) if not ok]
        bad += [] if h_valid else ["hyper", "eta", "lam", "mu"]
        bad += ["schedule"] if hyper is None else []   # sgd(train, y, cost, schedule)
        refused(info.value, *bad)
        np.testing.assert_array_equal(sn.to_numpy(net.params), start)
        np.testing.assert_array_equal(sn.to_numpy(train.grads), grads)
        assert train.epoch == 0
        return
    lam_used = lam if isinstance(hyper, (tuple, list)) and len(hyper) == 2 else 0.0
    extreme = not (eta <= 0.5 and lam_used <= 1)
    steps = [(float(eta), float(lam_used))] * int(epochs)
    check_trained(net, train, start, x32, as_float32(ydata), steps, guard, extreme,
                  lambda: sn.sgd(train, ydata, sn.quadratic_cost, epochs, hyper, guard=guard))


@st.composite
def schedules(draw):
    """(schedule, steps or None when invalid)."""
    entries, steps, valid = [], [], True
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["ok"] * 20 + ["bad_epochs", "bad_hyper", "short",
                                                   "long", "scalar", "string", "dict"]))
        epochs = draw(st.integers(0, 2))
        eta = draw(st.floats(1e-3, 0.3))
        if kind == "ok":
            entries.append(draw(st.sampled_from([(epochs, eta), [epochs, (eta, 0.01)]])))
            lam = 0.01 if isinstance(entries[-1], list) else 0.0
            steps += [(eta, lam)] * epochs
            continue
        valid = False
        entries.append({"bad_epochs": (-1, eta), "bad_hyper": (epochs, -eta),
                        "short": (epochs,), "long": (epochs, eta, 0.1), "scalar": 3,
                        "string": "1,0.1", "dict": {"epochs": 1}}[kind])
    form = draw(st.sampled_from(["list"] * 6 + ["tuple", "generator", "array", "string",
                                                 "int", "dict"]))
    if form == "tuple":
        return tuple(entries), steps if valid else None
    if form == "generator":
        return (e for e in entries), steps if valid else None
    if form == "array":   # rows of a numpy array are not (epochs, hyper) pairs
        return np.zeros((len(entries), 2)), (steps if valid and not entries else None)
    if form == "string":
        return "1,0.1", None
    if form == "int":
        return 7, None
    if form == "dict":
        return {1: 0.1}, None
    return entries, steps if valid else None


@settings(max_examples=200, **SETTINGS)
@given(case=schedules())
def test_schedules(case):
    schedule, steps = case
    event("refused" if steps is None else "checked against float64 autograd")
    x32 = np.random.default_rng(2).uniform(-1, 1, (4, 3)).astype(np.float32)
    y32 = np.random.default_rng(3).uniform(0, 1, (4, 2)).astype(np.float32)
    net = small_net()
    train = sn.training_network(net, x32)
    start = sn.to_numpy(net.params)
    if steps is None:
        with pytest.raises(Exception) as info:  # noqa: B017
            sn.sgd(train, y32, sn.quadratic_cost, schedule)
        refused(info.value, "schedule", "hyper")
        np.testing.assert_array_equal(sn.to_numpy(net.params), start)
        assert train.epoch == 0
        return
    costs = sn.sgd(train, y32, sn.quadratic_cost, schedule)
    assert isinstance(costs, list)
    assert train.epoch == len(steps)
    np.testing.assert_allclose(sn.to_numpy(net.params),
                               reference_train_from(start, net, x32, y32, steps),
                               rtol=2e-4, atol=2e-5)


INTS = st.sampled_from([1, 2, 3, np.int64(2)] * 8 + [0, -1, 2.0, True, "3", None])


def int_ok(v, minimum=1):
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= minimum


@settings(max_examples=300, **SETTINGS)
@given(in_dim=INTS, outs=st.one_of(st.lists(INTS, min_size=1, max_size=3), st.just([])),
       acts=st.lists(st.sampled_from(["tanh", "relu", sn.sigmoid, sn.linear] * 6
                                     + ["softplus", 3, None]), min_size=3, max_size=3),
       dtype=st.sampled_from([torch.float32, torch.float64] * 6
                             + [torch.float16, torch.int32, "float32", None]),
       device=st.sampled_from(["cpu"] * 12 + ["tpu", "", 3, None, "cuda:99"]),
       seed=st.sampled_from([None, 0, 7, 2**64 - 1] * 4 + [2**64, -1, 1.5, "1"]),
       convention=st.sampled_from(["standard", "series"] * 6 + ["blog", None, []]))
def test_network_construction(in_dim, outs, acts, dtype, device, seed, convention):
    specs = []
    for i, out in enumerate(outs):
        act = acts[i]
        try:
            specs.append(sn.fully_connected(out, act))
        except Exception as exc:  # noqa: BLE001
            assert not (int_ok(out) and act in ("tanh", "relu", sn.sigmoid, sn.linear))
            refused(exc, "out_dim", "activation")
            return
        assert int_ok(out) and act in ("tanh", "relu", sn.sigmoid, sn.linear)
    valid = (int_ok(in_dim) and bool(specs) and dtype in (torch.float32, torch.float64)
             and device == "cpu" and convention in ("standard", "series")
             and (seed is None or (int_ok(seed, 0) and seed < 2**64)))
    try:
        net = sn.inference_network(in_dim, specs, device=device, dtype=dtype, seed=seed,
                                   convention=convention)
    except Exception as exc:  # noqa: BLE001
        assert not valid, f"valid construction refused: {exc!r}"
        refused(exc, "in_dim", "layers", "dtype", "device", "seed", "convention")
        return
    assert valid
    event("built and checked")
    dims = [int(in_dim)] + [int(o) for o in outs]
    assert [tuple(la.weights.shape) for la in net.layers] == list(zip(dims[1:], dims))
    if seed is not None:   # the documented init rule, drawn on the host in float64
        gen = torch.Generator().manual_seed(seed)
        for layer in net.layers:
            w = torch.randn((layer.out_dim, layer.in_dim), generator=gen, dtype=torch.float64)
            b = torch.randn(layer.out_dim, generator=gen, dtype=torch.float64)
            np.testing.assert_array_equal(sn.to_numpy(layer.weights),
                                          (w / layer.in_dim).to(dtype).numpy())
            np.testing.assert_array_equal(sn.to_numpy(layer.bias), b.to(dtype).numpy())


@settings(max_examples=200, **SETTINGS)
@given(y=matrices(rows=3, cols=2), a=matrices(rows=3, cols=2))
def test_cost_amax_to_numpy(y, a):
    ydata, _, _ = y
    adata, _, _ = a

    def real(d):
        arr = sn.to_numpy(d) if isinstance(d, torch.Tensor) else np.asarray(d)
        return arr, arr.dtype.kind in "iuf"

    (yarr, y_real), (aarr, a_real) = real(ydata), real(adata)
    ok = y_real and a_real and yarr.ndim == 2 and yarr.shape == aarr.shape
    event(f"cost valid={ok}")
    try:
        cost = sn.quadratic_cost(ydata, adata)
    except Exception as exc:  # noqa: BLE001
        assert not ok, f"refused: {exc!r}"
        refused(exc, "y", "a")
    else:
        assert ok
        y64, a64 = yarr.astype(np.float64), aarr.astype(np.float64)
        with np.errstate(all="ignore"):
            expected = np.sum((y64 - a64) ** 2) / (2 * y64.shape[0])
        np.testing.assert_allclose(cost, expected, rtol=1e-12)
    for data, arr in ((ydata, yarr), (adata, aarr)):
        if isinstance(data, list):
            with pytest.raises(TypeError, match="array"):
                sn.amax(data)
            continue
        with np.errstate(all="ignore"):
            expected = float(np.max(np.abs(arr.astype(np.complex128 if arr.dtype.kind == "c"
                                                      else np.float64)))) if arr.size else 0.0
        got = sn.amax(data)
        assert got == pytest.approx(expected, rel=1e-6) or (math.isnan(got) and
                                                             math.isnan(expected))
        np.testing.assert_array_equal(sn.to_numpy(data), arr)
