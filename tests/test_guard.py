"""The divergence guard: which state it restores (exactly), backoff, the
real part 15 blow-up, its arguments, and that it allocates nothing per epoch.

Blow-ups are made deterministic with a *saboteur* optimizer: plain SGD that,
at one chosen update u, also writes NaN into every parameter (θ_{u+1} = NaN)
or shifts the output bias by 100 (a finite explosion).  The oracle for the
restored state is a guard-free run of the same network for the expected
number of epochs: the update arithmetic is the same, so the parameters must
be bit-for-bit equal.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from helpers import Saboteur, article_net, regression_data

import scratchnet as sn


@pytest.fixture(autouse=True)
def reference_runner(monkeypatch):
    """Every run here on the reference runner: a saboteur is a subclass of
    SGD, which the native CPU runner hands to the reference step, and the
    guard-free oracles must take the same path to be equal bit for bit (the
    native kernels sum in another order).  The guard is the same whatever
    the runner; tests/test_engine.py trains it on the automatic one."""
    monkeypatch.setenv("SCRATCHNET_RUNNER", "reference")


def reference_params(device, x, y, schedule, seed=0):
    """Parameters after a guard-free run of ``schedule`` from the same init."""
    net = article_net(device, seed=seed)
    train = sn.training_network(net, x)
    sn.sgd(train, y, sn.quadratic_cost, schedule, guard=False)
    cost = sn.sgd(train, y, sn.quadratic_cost, 0, 0.1, guard=False)   # C of that state
    return sn.to_numpy(net.params), cost


@pytest.mark.parametrize("every, at, epochs", [(1, 6, 12), (1, 11, 12), (1, 0, 12),
                                               (3, 6, 12), (3, 8, 12), (4, 10, 12),
                                               (5, 2, 9)])
def test_restores_the_last_verified_state_exactly(device, every, at, epochs):
    """Update ``at`` makes θ_{at+1} NaN.  C(θ_e) is read before update e, so
    the newest snapshot whose own cost was read good is θ_r with r the
    largest multiple of guard_every <= at; the guard restores exactly that,
    sets train.epoch = r and reports epoch at+1 with a non-finite cost."""
    x, y = regression_data(64)
    net = article_net(device)
    train = sn.training_network(net, x)
    with pytest.raises(sn.DivergenceError) as info:
        sn.sgd(train, y, sn.quadratic_cost, epochs, Saboteur(0.1, at), guard_every=every)
    err = info.value
    r = (at // every) * every
    expected, expected_cost = reference_params(device, x, y, [(r, 0.1)])
    assert (err.epoch, err.restored_epoch, train.epoch) == (at + 1, r, r)
    assert not math.isfinite(err.cost)
    np.testing.assert_array_equal(sn.to_numpy(net.params), expected)
    assert err.restored_cost == pytest.approx(expected_cost, rel=1e-6)
    assert isinstance(err, FloatingPointError) and "epoch" in str(err)
    # still usable: training on continues exactly as from θ_r
    sn.sgd(train, y, sn.quadratic_cost, 5, 0.1)
    again, _ = reference_params(device, x, y, [(r, 0.1), (5, 0.1)])
    np.testing.assert_array_equal(sn.to_numpy(net.params), again)
    assert train.epoch == r + 5


def test_default_guard_every_restores_the_last_multiple_of_16(device):
    """The default checks every 16 epochs when an epoch is large enough
    (n = 2000: 16 epochs hold 63M multiply-adds, more than 2^25): a blow-up in update 40 is
    detected at epoch 41 and θ_32 comes back."""
    x, y = regression_data(2000)
    train = sn.training_network(article_net(device), x)
    with pytest.raises(sn.DivergenceError) as info:
        sn.sgd(train, y, sn.quadratic_cost, 60, Saboteur(0.1, 40))
    assert (info.value.epoch, info.value.restored_epoch, train.epoch) == (41, 32, 32)
    expected, _ = reference_params(device, x, y, [(32, 0.1)])
    np.testing.assert_array_equal(sn.to_numpy(train.net.params), expected)


@pytest.mark.parametrize("n, every", [(2000, 16), (1000, 32), (300, 64), (32, 1024), (1, 32768)])
def test_automatic_guard_every_spaces_reads_by_work(n, every):
    """guard_every=None: 16, doubled until the chunk holds AUTO_WORK
    multiply-adds (article network: 3 · 656 per sample and epoch), so the
    guard's per-chunk host work stays a small part of tiny epochs."""
    from scratchnet.monitors.guard import AUTO_WORK, automatic_every

    net = article_net("cpu")
    assert automatic_every(net, n) == every
    per_epoch = 3 * 656 * n
    assert every * per_epoch >= AUTO_WORK and (every == 16 or every // 2 * per_epoch < AUTO_WORK)


def test_finite_explosion_past_guard_factor(device):
    """A cost that grows past guard_factor × best without becoming NaN is a
    divergence too; with guard_factor = inf only non-finite costs count."""
    x, y = regression_data(64)
    train = sn.training_network(article_net(device), x)
    with pytest.raises(sn.DivergenceError) as info:
        sn.sgd(train, y, sn.quadratic_cost, 10, Saboteur(0.1, 4, mode="bias"), guard_every=1)
    err = info.value
    assert math.isfinite(err.cost) and err.cost > 1e3
    assert (err.epoch, err.restored_epoch) == (5, 4)
    expected, _ = reference_params(device, x, y, [(4, 0.1)])
    np.testing.assert_array_equal(sn.to_numpy(train.net.params), expected)
    relaxed = sn.training_network(article_net(device), x)
    cost = sn.sgd(relaxed, y, sn.quadratic_cost, 10, Saboteur(0.1, 4, mode="bias"),
                  guard_factor=math.inf)
    assert math.isfinite(cost) and relaxed.epoch == 10


def test_guard_false_lets_it_explode(device):
    x, y = regression_data(64)
    train = sn.training_network(article_net(device), x)
    sn.sgd(train, y, sn.quadratic_cost, 6, Saboteur(0.1, 2), guard=False)
    assert train.epoch == 6 and math.isnan(sn.amax(train.net.params))


def test_nan_start_is_reported_and_left_as_given(device):
    """No state of the call was ever good: the guard puts back the one the
    call started from and says so (no backoff can help)."""
    x, y = regression_data(32)
    net = article_net(device)
    train = sn.training_network(net, x)
    sn.sgd(train, y, sn.quadratic_cost, 3, Saboteur(0.1, 2), guard=False)   # NaN weights
    before = sn.to_numpy(net.params)
    for mode in ("raise", "backoff"):
        with pytest.raises(sn.DivergenceError, match="started from") as info:
            sn.sgd(train, y, sn.quadratic_cost, 4, 0.1, on_divergence=mode)
        assert info.value.restored_epoch == 3 and train.epoch == 3
        np.testing.assert_array_equal(sn.to_numpy(net.params), before)


class EtaLog(sn.Monitor):
    """A monitor recording the guard's eta_changed calls (the TensorBoard
    monitor logs train/eta from the same hook)."""

    chunk = 1

    def __init__(self):
        self.events = []

    def eta_changed(self, train, epoch, eta):
        self.events.append((epoch, eta))


def test_backoff_halves_eta_and_reruns_the_lost_epochs(device):
    """The saboteur fires once at update 6: the guard restores θ_6, halves η
    and runs epochs 6..19 again at η/2.  Oracle: 6 epochs at η then 14 at
    η/2 without the guard, bit for bit."""
    x, y = regression_data(64)
    train = sn.training_network(article_net(device), x)
    log = EtaLog()
    with pytest.warns(sn.DivergenceWarning, match="halved eta 0.2 -> 0.1") as caught:
        sn.sgd(train, y, sn.quadratic_cost, 20, Saboteur(0.2, 6, times=1),
               on_divergence="backoff", monitors=[log], guard_every=1)
    assert len([w for w in caught if w.category is sn.DivergenceWarning]) == 1
    assert log.events == [(6, 0.1)]
    assert train.epoch == 20
    expected, _ = reference_params(device, x, y, [(6, 0.2), (14, 0.1)])
    np.testing.assert_array_equal(sn.to_numpy(train.net.params), expected)


def test_backoff_carries_over_to_later_schedule_entries(device):
    x, y = regression_data(64)
    train = sn.training_network(article_net(device), x)
    with pytest.warns(sn.DivergenceWarning):
        sn.sgd(train, y, sn.quadratic_cost, [(8, Saboteur(0.2, 3, times=1)), (5, 0.08)],
               on_divergence="backoff", guard_every=1)
    expected, _ = reference_params(device, x, y, [(3, 0.2), (5, 0.1), (5, 0.04)])
    np.testing.assert_array_equal(sn.to_numpy(train.net.params), expected)


def test_backoffs_run_out(device):
    """A blow-up that no η fixes: max_backoffs warnings, then the error,
    with the network at the verified θ_4."""
    x, y = regression_data(64)
    train = sn.training_network(article_net(device), x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(sn.DivergenceError, match="after 3 backoff") as info:
            sn.sgd(train, y, sn.quadratic_cost, 10, Saboteur(0.1, 4), on_divergence="backoff",
                   max_backoffs=3, guard_every=1)
    assert sum(w.category is sn.DivergenceWarning for w in caught) == 3
    assert info.value.backoffs == 3 and info.value.eta == pytest.approx(0.1 / 8)
    expected, _ = reference_params(device, x, y, [(4, 0.1)])
    np.testing.assert_array_equal(sn.to_numpy(train.net.params), expected)


def part15_data(seed, n=10_000):
    """scripts/weight_decay.py's data for one seed."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 4), dtype=np.float32)
    y = np.sin(x[:, 0]) + np.cos(x[:, 1]) + np.tanh(x[:, 2]) + x[:, 3] ** 2
    return x, y.reshape(-1, 1).astype(np.float32)


def test_the_series_blow_up_is_caught(device):
    """Part 15 at η = 0.3 without decay: seed 1001 of scripts/weight_decay.py
    explodes within 10 epochs.  The guard stops it; the network keeps the
    restored state, whose cost is the one reported, and stays finite."""
    x, y = part15_data(1001)
    net = article_net(device, seed=1001)
    train = sn.training_network(net, x)
    with pytest.raises(sn.DivergenceError) as info:
        sn.sgd(train, y, sn.quadratic_cost, 20, 0.3, guard_every=1)
    err = info.value
    assert err.epoch < 20 and train.epoch == err.restored_epoch == err.epoch - 1
    assert math.isfinite(sn.amax(net.params))
    assert sn.quadratic_cost(y, net(x)) == pytest.approx(err.restored_cost, rel=1e-4)


@pytest.mark.parametrize("kwargs, exc, word", [
    (dict(guard="yes"), TypeError, "guard"),
    (dict(guard_factor=1.0), ValueError, "guard_factor"),
    (dict(guard_factor=float("nan")), ValueError, "guard_factor"),
    (dict(guard_factor="big"), TypeError, "guard_factor"),
    (dict(guard_every=0), ValueError, "guard_every"),
    (dict(guard_every=1.5), TypeError, "guard_every"),
    (dict(on_divergence="retry"), ValueError, "on_divergence"),
    (dict(max_backoffs=-1), ValueError, "max_backoffs"),
    (dict(checkpoint_every=5), ValueError, "checkpoint_every"),
    (dict(checkpoint=3), TypeError, "checkpoint"),
    (dict(checkpoint="/nonexistent-folder/x.ckpt"), ValueError, "checkpoint"),
])
def test_bad_guard_arguments_change_nothing(kwargs, exc, word):
    x, y = regression_data(20)
    net = article_net("cpu")
    train = sn.training_network(net, x)
    before = sn.to_numpy(net.params)
    with pytest.raises(exc, match=word):
        sn.sgd(train, y, sn.quadratic_cost, 3, 0.1, **kwargs)
    np.testing.assert_array_equal(sn.to_numpy(net.params), before)
    assert train.epoch == 0


def test_backoff_needs_an_optimizer_with_eta():
    class Opaque:
        def prepare(self, train):
            pass

        def step(self, train):
            pass

    x, y = regression_data(20)
    train = sn.training_network(article_net("cpu"), x)
    with pytest.raises(TypeError, match="with_eta"):
        sn.sgd(train, y, sn.quadratic_cost, 3, Opaque(), on_divergence="backoff")


def test_optimizer_state_is_restored_with_the_parameters(device):
    """A momentum-like optimizer keeps a velocity buffer in train.state; the
    guard snapshots and restores it together with θ (oracle: the guard-free
    run stopped at the restored epoch)."""

    class Momentum(Saboteur):
        def prepare(self, train):
            if "velocity" not in train.state:
                train.state["velocity"] = train.backend.zeros((train.net.n_params,))

        def step(self, train):
            be, v = train.backend, train.state["velocity"]
            be.axpy_(v, -0.5, v)                     # v ← 0.5 v + g
            be.axpy_(v, 1.0, train.grads)
            be.axpy_(train.net.params, -self.eta / train.n, v)
            if train.epoch == self.at:
                be.axpy_(train.net.params, math.nan, train.net.params)
                be.axpy_(v, math.nan, v)

    x, y = regression_data(64)
    train = sn.training_network(article_net(device), x)
    with pytest.raises(sn.DivergenceError):
        sn.sgd(train, y, sn.quadratic_cost, 10, Momentum(0.1, 5), guard_every=1)
    ref = sn.training_network(article_net(device), x)
    sn.sgd(ref, y, sn.quadratic_cost, 5, Momentum(0.1, 99), guard=False)
    np.testing.assert_array_equal(sn.to_numpy(train.net.params), sn.to_numpy(ref.net.params))
    np.testing.assert_array_equal(sn.to_numpy(train.state["velocity"]),
                                  sn.to_numpy(ref.state["velocity"]))


@pytest.mark.parametrize("every", [1, 16])
def test_guard_allocates_nothing_per_epoch(every):
    """After a first call, a guarded call allocates no more torch memory
    for 48 epochs than for 4 (what it does allocate, staging y from numpy,
    is per call), and the snapshot buffers are the same arrays call after
    call."""
    x, y = regression_data(500)
    train = sn.training_network(article_net("cpu"), x)
    sn.sgd(train, y, sn.quadratic_cost, 48, (0.1, 0.01), guard_every=every)
    ptrs = {k: v.data_ptr() for k, v in train._buffers.items()}
    assert {"guard/0/params", "guard/1/params"} <= set(ptrs)

    def allocations(epochs):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                    profile_memory=True) as prof:
            sn.sgd(train, y, sn.quadratic_cost, epochs, (0.1, 0.01), guard_every=every)
        return [e.cpu_memory_usage for e in prof.events() if e.cpu_memory_usage > 0]

    assert allocations(48) == allocations(4)
    assert ptrs == {k: v.data_ptr() for k, v in train._buffers.items()}
