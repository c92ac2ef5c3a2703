"""Mini-batch training against a float64 replay of the same batches, the
short last batch, costs, allocation, devices and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import (
    adam_formula,
    article_net,
    assert_unchanged,
    forward64,
    momentum_formula,
    one_thread,  # noqa: F401 - fixture
    params64,
    quadratic64,
    regression_data,
    snapshot,
)

import scratchnet as sn
from scratchnet.engine.reference import MiniBatch

pytestmark = pytest.mark.usefixtures("one_thread")


def replay(net, x, y, update, epochs, batch_size, seed):
    """The batches ``train`` promises, in float64 autograd: epoch e shuffled
    by a generator seeded with (seed, 0, e), consecutive batches of ``batch_size`` and one
    short last batch; ``update`` as in test_optim (n = the batch's size).
    Returns per-epoch costs (sample-weighted batch means) and params."""
    params = [(w.detach(), b.detach()) for w, b in params64(net)]
    state: dict = {"t": 0}
    costs = []
    for epoch in range(epochs):
        order = np.arange(x.shape[0])
        np.random.default_rng([seed, 0, epoch]).shuffle(order)   # (seed, rank, epoch)
        total = 0.0
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            leaves = [(w.clone().requires_grad_(), b.clone().requires_grad_())
                      for w, b in params]
            loss = quadratic64(y[idx], forward64(net, leaves, x[idx]))
            loss.backward()
            total += loss.item() * len(idx)
            state["t"] += 1
            for i, ((w, b), (lw, lb)) in enumerate(zip(params, leaves)):
                update(state.setdefault(i, {}), w, lw.grad, b, lb.grad, len(idx), state["t"])
        costs.append(total / len(order))
    return costs, params


@pytest.mark.parametrize("name,make,formula", [
    ("momentum", lambda: sn.SGD(0.3, 0.5, 0.8), momentum_formula(0.3, 0.5, 0.8, False)),
    ("adam", lambda: sn.Adam(0.01, 1.0), adam_formula(0.01, 1.0, 0.9, 0.999, 1e-8)),
])
def test_minibatches_match_a_float64_replay(device, name, make, formula):
    """23 samples in batches of 5: four full batches and a last one of 3,
    which shares the parameters and the optimizer state (one velocity, one
    Adam t) with the others."""
    x, y = regression_data(23, seed=5, dtype=np.float64)
    net = article_net(device, seed=6, dtype=torch.float64)
    ref_costs, ref_params = replay(net, x, y, formula, 3, 5, seed=7)
    costs = sn.train(net, x, y, sn.quadratic_cost, [(1, make())] * 3, batch_size=5, seed=7,
                     guard=False)   # the float64 replay has no guard either
    np.testing.assert_allclose(costs, ref_costs, rtol=1e-9)
    for layer, (w, b) in zip(net.layers, ref_params):
        np.testing.assert_allclose(sn.to_numpy(layer.weights), w.numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(sn.to_numpy(layer.bias), b.numpy(), rtol=1e-9, atol=1e-12)


def test_one_full_batch_in_order_is_sgd(device):
    x, y = regression_data(40, dtype=np.float64)
    a = article_net(device, seed=1, dtype=torch.float64)
    b = article_net(device, seed=1, dtype=torch.float64)
    with sn.training_network(a, x) as train:
        expected = sn.sgd(train, y, sn.quadratic_cost, 4, (0.2, 0.1, 0.5))
    got = sn.train(b, x, y, sn.quadratic_cost, 4, (0.2, 0.1, 0.5), batch_size=40, shuffle=False)
    assert got == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(sn.to_numpy(b.params), sn.to_numpy(a.params), rtol=1e-12)


def test_zero_epochs_measures_the_cost(device):
    x, y = regression_data(30)
    net = article_net(device)
    before = snapshot(net)
    cost = sn.train(net, x, y, sn.quadratic_cost, 0, 0.1, batch_size=7)
    assert cost == pytest.approx(sn.quadratic_cost(y, net(x)), rel=1e-5)
    assert_unchanged(net, before)


def test_seed_fixes_the_batches_and_shuffle_changes_them(device):
    x, y = regression_data(50)
    runs = {}
    for key, kw in {"a": dict(seed=3), "b": dict(seed=3), "c": dict(seed=4),
                    "fixed": dict(shuffle=False)}.items():
        net = article_net(device, seed=0)
        sn.train(net, x, y, sn.quadratic_cost, 3, 0.1, batch_size=8, **kw)
        runs[key] = sn.to_numpy(net.params)
    np.testing.assert_array_equal(runs["a"], runs["b"])
    assert not np.allclose(runs["a"], runs["c"], rtol=1e-4)
    assert not np.allclose(runs["a"], runs["fixed"], rtol=1e-4)


class Recorder(sn.Monitor):
    chunk = 2

    def __init__(self):
        self.seen = []

    def after_chunk(self, train, first_epoch, costs):
        self.seen.append((first_epoch, list(costs)))


def test_monitors_see_the_per_epoch_costs(device):
    """A monitor reading chunks of 2 epochs sees the costs a schedule of
    one-epoch entries returns (same shuffles, same optimizer state)."""
    x, y = regression_data(45)
    expected = sn.train(article_net(device), x, y, sn.quadratic_cost,
                        [(1, sn.SGD(0.1, 0.0, 0.9))] * 5, batch_size=10, seed=1)
    rec = Recorder()
    last = sn.train(article_net(device), x, y, sn.quadratic_cost, 5, sn.SGD(0.1, 0.0, 0.9),
                    batch_size=10, seed=1, monitors=[rec])
    assert [f for f, _ in rec.seen] == [0, 2, 4]
    np.testing.assert_allclose([c for _, cs in rec.seen for c in cs], expected, rtol=1e-5)
    assert last == rec.seen[-1][1][-1]


def test_every_device_agrees_with_the_cpu(device):
    """Every other backend against the CPU one (the oracle, so the CPU
    itself is skipped): 20 epochs of 5 Adam steps, float32 rounding (the
    largest difference measured on PoCL was 1.6e-5 of a cost)."""
    if device == "cpu":
        pytest.skip("the CPU backend is the oracle")
    x, y = regression_data(70)
    cpu, dev = article_net("cpu", seed=2), article_net(device, seed=2)
    c_cpu = sn.train(cpu, x, y, sn.quadratic_cost, [(1, sn.Adam(0.01))] * 20, batch_size=16,
                     seed=0)
    c_dev = sn.train(dev, x, y, sn.quadratic_cost, [(1, sn.Adam(0.01))] * 20, batch_size=16,
                     seed=0)
    np.testing.assert_allclose(c_dev, c_cpu, rtol=1e-4)
    np.testing.assert_allclose(sn.to_numpy(dev.params), sn.to_numpy(cpu.params), rtol=1e-4,
                               atol=1e-5)


@pytest.mark.parametrize("output,cost,optimizer", [
    ("linear", sn.quadratic_cost, sn.Adam(0.01)),
    ("softmax", sn.cross_entropy, sn.SGD(0.1, 0.1, 0.9, nesterov=True)),
    ("sigmoid", sn.cross_entropy, sn.Adam(0.01, 0.1)),
], ids=["quadratic-adam", "softmax-nesterov", "sigmoid-adam"])
def test_the_epoch_loop_allocates_nothing_after_setup(output, cost, optimizer):
    """Shuffling, uploading the permutation, gathering the batches, the
    costs and the optimizer steps reuse the buffers made at setup: the CPU
    allocator sees no new allocation over 5 epochs."""
    rng = np.random.default_rng(0)
    x = rng.random((300, 4)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 300)]
    net = sn.inference_network(4, [sn.fully_connected(16, sn.elu),
                                   sn.fully_connected(3, output)], seed=0)
    batches = MiniBatch(net, x, y, 64, seed=0)    # 4 batches of 64 and one of 44
    optimizer.prepare(batches.train)
    batches.run(cost, 5, optimizer, record=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                profile_memory=True) as prof:
        batches.run(cost, 5, optimizer)
        batches.run(cost, 5, optimizer, record=True)
    allocations = [e for e in prof.events() if e.cpu_memory_usage > 0]
    assert allocations == [], [e.name for e in allocations][:10]
    assert len(batches.nets) == 2 and batches.nets[1].n == 44
    assert np.isfinite(batches.costs(cost, 5)).all()
    batches.close()


BAD = [
    (dict(batch_size=0), ValueError, ["batch_size"]),
    (dict(batch_size=31), ValueError, ["batch_size", "30"]),
    (dict(batch_size=2.0), TypeError, ["batch_size"]),
    (dict(shuffle=1), TypeError, ["shuffle"]),
    (dict(seed=-1), ValueError, ["seed"]),
    (dict(hyper=(0.1, 0.0, 1.0)), ValueError, ["mu"]),
    (dict(hyper=None), TypeError, ["hyper"]),
    (dict(y=np.zeros((29, 1), np.float32)), ValueError, ["y", "rows"]),
    (dict(x=np.zeros((30, 3), np.float32)), ValueError, ["x", "columns"]),
    (dict(cost="mse"), TypeError, ["cost"]),
    (dict(monitors=[object()]), TypeError, ["monitors"]),
]


@pytest.mark.parametrize("override,exc,words", BAD,
                         ids=[f"{next(iter(b[0]))}{i}" for i, b in enumerate(BAD)])
def test_bad_train_calls_change_nothing(device, override, exc, words):
    x, y = regression_data(30)
    net = article_net(device)
    before = snapshot(net)
    kw = dict(x=x, y=y, cost=sn.quadratic_cost, epochs=2, hyper=0.1, batch_size=8)
    kw.update(override)
    with pytest.raises(exc) as info:
        sn.train(net, kw.pop("x"), kw.pop("y"), kw.pop("cost"), kw.pop("epochs"),
                 kw.pop("hyper"), **kw)
    for word in words:
        assert word in str(info.value)
    assert_unchanged(net, before)
    assert net.trainings == 0


def test_closed_network_is_refused():
    x, y = regression_data(10)
    net = article_net("cpu")
    net.close()
    with pytest.raises(ValueError, match="closed"):
        sn.train(net, x, y, sn.quadratic_cost, 1, 0.1, batch_size=5)
