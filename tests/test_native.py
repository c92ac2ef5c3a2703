"""The native epoch runner (scratchnet/engine/native) against the reference
runners: every activation, cost and optimizer, full batch and mini-batches,
float32 and float64, both bias conventions; the optimizer updates bit for
bit; the kernels' exp, log, sigmoid and tanh against float64; the contract
(epochs, stop, costs, fallbacks, no allocation); and the build (cache,
failure, concurrent builds)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CostRecorder, regression_data

import scratchnet as sn
from scratchnet.engine import RUNNER_ENV, minibatch_runner, runner_for
from scratchnet.engine.base import Stop
from scratchnet.engine.native import NativeUnavailable, load
from scratchnet.engine.reference import FullBatch, MiniBatch
from scratchnet.nn.costs import QuadraticCost

try:
    load()
except NativeUnavailable as exc:   # no compiler here: say so, do not fail
    pytest.skip(f"the native runner is unavailable: {exc}", allow_module_level=True)

from scratchnet.engine.native import NativeFullBatch, NativeMiniBatch, runner  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

#: name -> (layers, cost, target kind)
NETS = {
    "article": ([(32, "sigmoid"), (16, "tanh"), (1, "linear")], "quadratic", "regression"),
    "relu-elu": ([(24, "relu"), (12, "elu"), (1, "linear")], "quadratic", "regression"),
    "softmax-hidden": ([(8, "tanh"), (6, "softmax"), (2, "sigmoid")], "quadratic", "unit"),
    "softmax-quadratic": ([(12, "sigmoid"), (3, "softmax")], "quadratic", "onehot"),
    "binary-ce": ([(16, "tanh"), (1, "sigmoid")], "cross_entropy", "binary"),
    "categorical-ce": ([(16, "elu"), (3, "softmax")], "cross_entropy", "onehot"),
}
#: Settings that stay out of chaos for 200 epochs on every network above,
#: both conventions (at η = 0.1, Nesterov at η = 0.05 and μ = 0.7, or Adam
#: at η = 0.01 with mini-batches, some runs amplify a one-ulp difference a
#: thousandfold or more within 200 epochs, equally in float64: dynamics,
#: not arithmetic).
OPTIMIZERS = {
    "sgd": lambda: sn.SGD(0.05),
    "sgd-decay": lambda: sn.SGD(0.05, 0.5),
    "momentum": lambda: sn.SGD(0.02, 0.5, 0.8),
    "nesterov": lambda: sn.SGD(0.02, 0.5, 0.9, nesterov=True),
    "adam": lambda: sn.Adam(0.005, 0.5),
}
COSTS = {"quadratic": sn.quadratic_cost, "cross_entropy": sn.cross_entropy}
DTYPES = {"float32": torch.float32, "float64": torch.float64}

#: Agreement after 200 epochs, in ulps of the dtype: |native − reference| ≤
#: ULPS · eps · max|reference| for the parameters and for the costs over
#: the run, and FIRST_ULPS · eps · |reference| for the first epoch's cost
#: (one forward pass, nothing amplified yet).  The two runners sum the same
#: terms in other orders (the products are blocked over samples) and use
#: their own exp and log, so they differ by an ulp or so per operation; the
#: rest is what 200 epochs of training make of that.
ULPS = 16
FIRST_ULPS = 8
#: The optimizer state (velocity, Adam's m and v) follows the gradient, a
#: sum over the samples of terms far larger than itself near a minimum, so
#: its rounding differences are large relative to its own size (up to a few
#: hundred ulps here); it is checked coarsely, the parameters it moved finely.
STATE_RTOL = 1e-4


def data(kind: str, n: int, out: int, dtype=np.float32):
    x, f = regression_data(n, seed=1, dtype=np.float64)
    if kind == "regression":
        y = f
    elif kind == "unit":      # targets in (0, 1), one column per output
        y = np.column_stack([1 / (1 + np.exp(-(f[:, 0] - 1.5) * k)) for k in range(1, out + 1)])
    elif kind == "binary":
        y = (f > np.median(f)).astype(np.float64)
    else:                     # one-hot classes from the regression value
        labels = np.digitize(f[:, 0], np.quantile(f[:, 0], np.linspace(0, 1, out + 1)[1:-1]))
        y = np.eye(out)[labels]
    return x.astype(dtype), y.astype(dtype)


def make_net(layers, dtype, convention="standard", seed=3):
    specs = [sn.fully_connected(o, a) for o, a in layers]
    return sn.inference_network(4, specs, dtype=dtype, seed=seed, convention=convention)


def fit(mode, monkeypatch, net_name, opt_name, dtype, batch, convention="standard",
        epochs=200):
    """Train a fresh network on one runner (SCRATCHNET_RUNNER=mode); the
    per-epoch costs, the final parameters, and the runner class used."""
    layers, cost_name, kind = NETS[net_name]
    monkeypatch.setenv(RUNNER_ENV, mode)
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    rec = CostRecorder(50)
    net = make_net(layers, dtype, convention)
    cost = COSTS[cost_name]
    if batch is None:
        x, y = data(kind, 600, layers[-1][0], np_dtype)        # blocks 256 + 256 + 88
        train = sn.training_network(net, x)
        sn.sgd(train, y, cost, epochs, OPTIMIZERS[opt_name](), monitors=[rec])
        used = type(train.runner)
        state = {k: sn.to_numpy(v).copy() for k, v in train.state.items()}
        train.close()
    else:
        x, y = data(kind, 203, layers[-1][0], np_dtype)        # 3 batches of 64, one of 11
        sn.train(net, x, y, cost, epochs, OPTIMIZERS[opt_name](), batch_size=batch, seed=5,
                 monitors=[rec])
        used, state = None, {}
    params = sn.to_numpy(net.params).copy()
    net.close()
    return np.array(rec.costs), params, state, used


def assert_agree(native, reference, dtype, what, ulps=ULPS):
    eps = torch.finfo(dtype).eps
    scale = max(float(np.abs(reference).max()), eps)
    worst = float(np.abs(native - reference).max()) / (eps * scale)
    assert worst <= ulps, f"{what}: differ by {worst:.1f} ulps of the largest (> {ulps})"


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("batch", [None, 64], ids=["full-batch", "mini-batch"])
@pytest.mark.parametrize("opt_name", OPTIMIZERS)
@pytest.mark.parametrize("net_name", NETS)
def test_native_equals_reference(monkeypatch, net_name, opt_name, batch, dtype):
    """200 epochs on each runner from the same start: every epoch's cost and
    the final weights agree to a few ulps."""
    c_ref, p_ref, s_ref, used_ref = fit("reference", monkeypatch, net_name, opt_name, dtype,
                                        batch)
    c_nat, p_nat, s_nat, used_nat = fit("native", monkeypatch, net_name, opt_name, dtype, batch)
    if batch is None:
        assert used_ref is FullBatch and used_nat is NativeFullBatch
    assert len(c_nat) == len(c_ref) == 200
    eps = torch.finfo(dtype).eps
    first = abs(c_nat[0] - c_ref[0]) / abs(c_ref[0]) / eps
    assert first <= FIRST_ULPS, f"first costs differ by {first:.1f} ulps"
    assert_agree(c_nat, c_ref, dtype, "costs")
    assert_agree(p_nat, p_ref, dtype, "parameters")
    assert s_nat.keys() == s_ref.keys()
    for key in s_ref:
        np.testing.assert_allclose(s_nat[key], s_ref[key], rtol=0, err_msg=key,
                                   atol=STATE_RTOL * np.abs(s_ref[key]).max())


@pytest.mark.parametrize("batch", [None, 64], ids=["full-batch", "mini-batch"])
@pytest.mark.parametrize("opt_name", OPTIMIZERS)
def test_series_convention(monkeypatch, opt_name, batch):
    """z = W a − b with the series' bias step, on both runners."""
    ref = fit("reference", monkeypatch, "article", opt_name, torch.float32, batch, "series")
    nat = fit("native", monkeypatch, "article", opt_name, torch.float32, batch, "series")
    assert_agree(nat[0], ref[0], torch.float32, "costs")
    assert_agree(nat[1], ref[1], torch.float32, "parameters")


# ------------------------------------------------------- bit-exact updates
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("opt_name", OPTIMIZERS)
def test_updates_are_bit_exact(opt_name, dtype):
    """Given the same gradient, parameters and state, the kernels' update
    is the torch backend's, bit for bit, three steps in a row.  Adam: m, v
    and t bit for bit; its step divides by √v, and torch's CPU sqrt is not
    correctly rounded (one ulp off for ~16% of float32 inputs, ~1.5% of
    float64 ones) where the kernels' is, so the step may differ by an ulp."""
    layers = [(32, "sigmoid"), (16, "tanh"), (1, "linear")]
    gen = torch.Generator().manual_seed(0)
    nets, trains = [], []
    for _ in range(2):
        net = make_net(layers, dtype)
        trains.append(sn.training_network(net, np.zeros((37, 4))))
        nets.append(net)
    ref, nat = trains
    optimizer = OPTIMIZERS[opt_name]()
    for tn in trains:
        optimizer.prepare(tn)
    kernels = runner._Kernels(nat.net, nat.grads, nat.x, nat.y, [nat.n], 256)
    for _ in range(3):
        grads = torch.randn(ref.grads.shape, generator=gen, dtype=torch.float64) * 3
        ref.grads.copy_(grads)
        nat.grads.copy_(grads)
        optimizer.step(ref)
        assert kernels.set_optimizer(optimizer, nat.state)
        kernels.update(nat.n)
        if opt_name == "adam":   # the step (in grads) within 4 ulps, w + step within 2 more
            step, want = sn.to_numpy(nat.grads), sn.to_numpy(ref.grads)
            np.testing.assert_array_max_ulp(step, want, maxulp=4)
            got, want = sn.to_numpy(nat.net.params), sn.to_numpy(ref.net.params)
            eps = torch.finfo(dtype).eps
            assert (np.abs(got - want) <= 2 * eps * (np.abs(want) + np.abs(step))).all()
            ref.net.params.copy_(nat.net.params)                    # the next step: same start
        else:
            np.testing.assert_array_equal(sn.to_numpy(nat.net.params),
                                          sn.to_numpy(ref.net.params))
        if opt_name != "adam":
            np.testing.assert_array_equal(sn.to_numpy(nat.grads), sn.to_numpy(ref.grads))
        for key in ref.state:
            np.testing.assert_array_equal(sn.to_numpy(nat.state[key]),
                                          sn.to_numpy(ref.state[key]), err_msg=key)


# ------------------------------------------------------ the kernels' maths
def kernel_math(fn: str, x: torch.Tensor) -> torch.Tensor:
    codes = {"exp": 0, "log": 1, "sigmoid": 2, "tanh": 3, "relu": 4, "elu": 5, "log1m": 6}
    x = x.contiguous()
    out = torch.empty_like(x)
    load().sn_math(codes[fn], int(x.dtype == torch.float64), x.data_ptr(), out.data_ptr(),
                   x.numel())
    return out


ORACLES = {"exp": torch.exp, "sigmoid": torch.sigmoid, "elu": torch.nn.functional.elu,
           "relu": torch.relu, "log": torch.log, "log1m": lambda a: torch.log1p(-a)}
#: Largest error in ulps of the result (tanh: of 1, as the reference's
#: 2σ(2z) − 1, see test_hot_loop.py).
BOUNDS = {"exp": 2, "sigmoid": 3, "elu": 2, "relu": 0, "log": 2, "log1m": 3}


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("fn", ["exp", "sigmoid", "tanh", "elu", "relu", "log", "log1m"])
def test_kernel_math_against_float64(fn, dtype):
    """Within a few ulps of the float64 (float32 inputs) or libm-exact
    (float64 inputs) value over the whole range, subnormals and the
    overflow edges included; NaN stays NaN."""
    eps, info = torch.finfo(dtype).eps, torch.finfo(dtype)
    if fn in ("log", "log1m"):
        x64 = torch.cat([torch.rand(50_000, dtype=torch.float64),
                         torch.rand(5_000, dtype=torch.float64) * 1e-6,
                         torch.logspace(-40, 30, 5_000, dtype=torch.float64)])
        if fn == "log1m":
            x64 = x64[x64 < 1]
    else:
        top = 100.0 if dtype == torch.float32 else 720.0
        x64 = torch.linspace(-1.2 * top, top, 200_001, dtype=torch.float64)
    x = x64.to(dtype)
    got = kernel_math(fn, x)
    if fn == "tanh":
        want = torch.tanh(x.double())
        assert (got.double() - want).abs().max().item() <= 2 * eps
    else:
        want = ORACLES[fn](x.double()).to(dtype)   # correctly rounded, then compared
        ok = torch.isfinite(want) & (want.abs() >= info.tiny)
        err = (got.double() - want.double()).abs()
        ulp = want.double().abs() * eps
        assert (err[ok] <= BOUNDS[fn] * ulp[ok] + 1e-300).all(), \
            f"{fn}: {(err[ok] / ulp[ok]).max().item():.2f} ulps"
        inf = torch.isinf(want)   # overflow: the same infinity
        assert torch.equal(got[inf], want[inf])
        # underflow: within two subnormal steps (sigmoid: 1 / (1 + e^-z) is 0
        # once e^-z overflows, below the subnormals, as ATen's sigmoid is)
        sub = want.abs() < info.tiny
        bound = info.tiny if fn == "sigmoid" else 2 * info.tiny * eps
        assert (err[sub] <= bound).all(), f"{fn}: subnormal results"
    special = torch.tensor([float("nan"), float("inf"), float("-inf")], dtype=dtype)
    got = kernel_math(fn, special)
    assert torch.isnan(got[0])
    if fn in ("exp", "sigmoid", "tanh", "elu", "relu", "log"):
        assert got[1].item() == {"exp": np.inf, "sigmoid": 1.0, "tanh": 1.0, "elu": np.inf,
                                 "relu": np.inf, "log": np.inf}[fn]
    if fn in ("exp", "sigmoid", "tanh", "elu", "relu"):
        assert got[2].item() == {"exp": 0.0, "sigmoid": 0.0, "tanh": -1.0, "elu": -1.0,
                                 "relu": 0.0}[fn]


# ------------------------------------------------------------ the contract
def article(dtype=torch.float32, seed=0):
    return make_net([(32, "sigmoid"), (16, "tanh"), (1, "linear")], dtype, seed=seed)


def test_runner_choice(monkeypatch):
    """auto and native pick the native runners on the CPU, reference the
    reference ones; anything else in SCRATCHNET_RUNNER is refused."""
    x, y = regression_data(40)
    for mode, full, mini in [("auto", NativeFullBatch, NativeMiniBatch),
                             ("", NativeFullBatch, NativeMiniBatch),
                             ("native", NativeFullBatch, NativeMiniBatch),
                             ("reference", FullBatch, MiniBatch)]:
        monkeypatch.setenv(RUNNER_ENV, mode)
        net = article()
        train = sn.training_network(net, x)
        assert type(runner_for(train)) is full
        with minibatch_runner(net, x, y, 16) as mb:
            assert type(mb) is mini
        train.close()
    monkeypatch.setenv(RUNNER_ENV, "fast")
    with pytest.raises(ValueError, match=f"{RUNNER_ENV}: expected one of auto, reference, "
                                         f"native, got 'fast'"):
        runner_for(sn.training_network(article(), x))


def test_large_multithreaded_products_stay_on_the_reference_runner(monkeypatch):
    """The native runner has one thread: where the largest product reaches
    SMALL_PRODUCT and several threads are allowed, torch's BLAS keeps it;
    with one thread, or below SMALL_PRODUCT whatever the setting, native."""
    import scratchnet.engine as engine

    monkeypatch.setenv(RUNNER_ENV, "auto")
    x, _ = regression_data(50)
    product = 32 * 16 * 50   # the article network's largest product at n = 50
    # (SMALL_PRODUCT, sn.set_num_threads, torch's threads) -> runner
    cases = [(product, 2, 1, FullBatch), (product, 1, 2, NativeFullBatch),
             (product, None, 2, FullBatch), (product, None, 1, NativeFullBatch),
             (product + 1, 2, 2, NativeFullBatch)]
    for limit, threads, torch_threads, kind in cases:
        monkeypatch.setattr(engine, "SMALL_PRODUCT", limit)
        sn.set_num_threads(threads)
        torch.set_num_threads(torch_threads)
        try:
            train = sn.training_network(article(), x)
            assert type(runner_for(train)) is kind, (limit, threads, torch_threads)
            train.close()
        finally:
            sn.set_num_threads(None)
            torch.set_num_threads(1)


def test_chunked_calls_equal_one_call(monkeypatch):
    """Cut into one-epoch calls (as a slow epoch would be, to answer Ctrl-C
    quickly) a run gives the same bits, and train.epoch counts every epoch."""
    x, y = regression_data(300)
    results = []
    for seconds in (10.0, 0.0):
        monkeypatch.setattr(runner, "CALL_SECONDS", seconds)
        train = sn.training_network(article(), x)
        costs = sn.sgd(train, y, sn.quadratic_cost, [(37, (0.1, 0.01)), (5, sn.Adam(0.01))],
                       guard=False)
        assert train.epoch == 42
        results.append((costs, sn.to_numpy(train.net.params)))
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_stop_is_seen_between_calls(monkeypatch):
    """A raised stop flag ends run() before the next call: no epoch more."""
    monkeypatch.setattr(runner, "CALL_SECONDS", 0.0)   # one epoch per call
    x, y = regression_data(100)
    train = sn.training_network(article(), x)
    train.load_y(y)
    native = NativeFullBatch(train)
    calls = []
    original = native.kernels.call

    def call(*args, **kw):
        calls.append(args[0])
        if len(calls) == 3:
            native.stop.requested = True
        return original(*args, **kw)

    native.kernels.call = call
    native.stop = Stop()
    native.run(sn.quadratic_cost, 10, sn.SGD(0.1))
    assert calls == [1, 1, 1] and train.epoch == 3


def test_divergence_reaches_the_guard(monkeypatch):
    """A run that explodes writes inf/NaN costs; the guard sees them and
    raises at the epoch the reference runner raises at."""
    x, y = regression_data(200)
    seen = []
    for mode in ("reference", "native"):
        monkeypatch.setenv(RUNNER_ENV, mode)
        train = sn.training_network(article(), x)
        with pytest.raises(sn.DivergenceError) as err:
            sn.sgd(train, y, sn.quadratic_cost, 400, 9.0, guard_every=4)
        seen.append((err.value.epoch, err.value.restored_epoch))
        rec = CostRecorder(50)
        train2 = sn.training_network(article(), x)
        sn.sgd(train2, y, sn.quadratic_cost, 200, 9.0, guard=False, monitors=[rec])
        assert not np.isfinite(rec.costs[-1])
    assert seen[0] == seen[1]


class MyQuadratic(QuadraticCost):
    """A user's cost: the native kernels do not know it."""


class MySGD(sn.SGD):
    """A user's optimizer: the native kernels do not know it."""


@pytest.mark.parametrize("batch", [None, 16], ids=["full-batch", "mini-batch"])
def test_unknown_costs_and_optimizers_take_the_reference_step(monkeypatch, batch):
    """A subclass of a library cost or optimizer is trained by the reference
    step, bit for bit what the reference runner does, and the native runner
    takes over again for the library's own; Adam's t stays in step across
    the switch."""
    x, y = regression_data(100)
    plan = [(5, sn.Adam(0.01)), (5, MySGD(0.1)), (5, sn.Adam(0.01))]
    out = []
    for mode, cost in [("reference", sn.quadratic_cost), ("native", MyQuadratic()),
                       ("native", sn.quadratic_cost)]:
        monkeypatch.setenv(RUNNER_ENV, mode)
        net = article()
        if batch is None:
            train = sn.training_network(net, x)
            costs = sn.sgd(train, y, cost, plan, guard=False)
            assert train.state["adam.t"].item() == 10
        else:
            costs = sn.train(net, x, y, cost, plan, batch_size=batch, seed=0, guard=False)
        out.append((costs, sn.to_numpy(net.params)))
    assert out[0][0] == out[1][0]                               # all on the reference step
    np.testing.assert_array_equal(out[0][1], out[1][1])
    assert_agree(out[2][1], out[0][1], torch.float32, "parameters")


def test_measure_and_zero_epoch_entries(monkeypatch):
    """An entry of 0 epochs returns the cost of the current parameters
    (forward only) on both runners, and changes nothing."""
    x, y = regression_data(333)
    got = []
    for mode in ("reference", "native"):
        monkeypatch.setenv(RUNNER_ENV, mode)
        train = sn.training_network(article(), x)
        before = sn.to_numpy(train.net.params)
        costs = sn.sgd(train, y, sn.quadratic_cost, [(0, 0.1)])
        np.testing.assert_array_equal(sn.to_numpy(train.net.params), before)
        assert train.epoch == 0
        mb = sn.train(train.net, x, y, sn.quadratic_cost, [(0, 0.1)], batch_size=50)
        got.append((costs[0], mb[0]))
    for (a, b), (c, d) in [(got[0], got[1])]:
        assert c == pytest.approx(a, rel=4e-7) and d == pytest.approx(b, rel=4e-7)
        assert b == pytest.approx(a, rel=1e-6)


@pytest.mark.parametrize("batch", [None, 64], ids=["full-batch", "mini-batch"])
def test_epochs_allocate_nothing(batch):
    """After setup, native epochs allocate no torch memory (the kernels
    themselves never allocate: their workspace is made with the runner)."""
    rng = np.random.default_rng(0)
    x = rng.random((300, 4)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 300)]
    net = sn.inference_network(4, [sn.fully_connected(16, sn.elu),
                                   sn.fully_connected(3, sn.softmax)], seed=0)
    optimizer = sn.Adam(0.01, 0.1)
    if batch is None:
        train = sn.training_network(net, x)
        train.load_y(y)
        run = NativeFullBatch(train)
    else:
        run = NativeMiniBatch(net, x, y, batch, seed=0)
    optimizer.prepare(run.train)
    run.run(sn.cross_entropy, 5, optimizer, record=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                profile_memory=True) as prof:
        run.run(sn.cross_entropy, 5, optimizer)
        run.run(sn.cross_entropy, 5, optimizer, record=True)
    allocations = [e for e in prof.events() if e.cpu_memory_usage > 0]
    assert allocations == [], [e.name for e in allocations][:10]
    assert np.isfinite(run.costs(sn.cross_entropy, 5)).all()
    workspace = run.kernels.workspace
    assert workspace is not None and workspace.numel() > 0
    run.close()
    assert run.kernels.workspace is None and run.kernels.c_net.workspace is None


# ---------------------------------------------------------------- the build
def _python(code: str, env: dict, cwd=ROOT) -> subprocess.CompletedProcess:
    full = {**os.environ, RUNNER_ENV: "auto", **env, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=full, cwd=cwd, timeout=300)


TRAIN = """
    import warnings, numpy as np, scratchnet as sn
    from scratchnet.engine import runner_for
    x = np.random.default_rng(0).random((50, 4)).astype(np.float32)
    net = sn.inference_network(4, [sn.fully_connected(8, 'tanh'), sn.fully_connected(1, 'linear')])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        for _ in range(3):
            t = sn.training_network(net, x)
            sn.sgd(t, x[:, :1], sn.quadratic_cost, 3, 0.1)
            kind = type(runner_for(t)).__name__
            t.close()
    first = caught[0] if caught else None
    print(kind, len(caught), first and first.category.__name__, first and first.message)
"""


def test_no_compiler_warns_once_and_trains_on_the_reference(tmp_path):
    """Without a compiler, auto mode warns once per process, naming why,
    and trains on the reference runner; SCRATCHNET_RUNNER=native raises."""
    env = {"CXX": str(tmp_path / "no-such-compiler"), "SCRATCHNET_CACHE_DIR": str(tmp_path)}
    done = _python(TRAIN, env)
    assert done.returncode == 0, done.stderr
    kind, count, category, message = done.stdout.split(" ", 3)
    assert (kind, count, category) == ("FullBatch", "1", "RuntimeWarning")
    assert "no-such-compiler" in message and "reference runner" in message
    done = _python(TRAIN, {**env, RUNNER_ENV: "native"})
    assert done.returncode != 0
    assert f"{RUNNER_ENV}=native, but $CXX=" in done.stderr


def test_a_failed_build_warns_with_the_compiler_output(tmp_path):
    fake = tmp_path / "broken-cxx"
    fake.write_text("#!/bin/sh\n[ \"$1\" = --version ] && echo broken 1.0 && exit 0\n"
                    "echo 'epoch.cpp:1: error: this compiler is broken' >&2\nexit 1\n")
    fake.chmod(0o755)
    done = _python(TRAIN, {"CXX": str(fake), "SCRATCHNET_CACHE_DIR": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("FullBatch 1 RuntimeWarning")
    assert "this compiler is broken" in done.stdout
    assert "building the native epoch runner" in done.stderr      # the progress line
    assert not any((tmp_path / "cache").glob(".build-*"))          # nothing left behind


def test_concurrent_builds_are_atomic(tmp_path):
    """Two processes building into one empty cache at once: each loads a
    complete library (the compiler here writes its output slowly, in two
    halves), one file ends up in the cache and no temporary is left."""
    built = Path(load()._name)
    fake = tmp_path / "slow-cxx"
    fake.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        [ "$1" = --version ] && echo slow 1.0 && exit 0
        while [ "$1" != -o ]; do shift; done
        head -c 100000 {built} > "$2"; sleep 1; cat {built} > "$2"
        """))
    fake.chmod(0o755)
    env = {**os.environ, "CXX": str(fake), "SCRATCHNET_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": str(ROOT), RUNNER_ENV: "auto"}
    code = "from scratchnet.engine.native import load; print(load().sn_vector_bytes())"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert int(out) in (16, 32, 64)
    cache = list((tmp_path / "cache").iterdir())
    assert len(cache) == 1 and cache[0].suffix == ".so"
    assert cache[0].read_bytes() == built.read_bytes()
