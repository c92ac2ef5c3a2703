"""sgd: the update rule against torch.optim.SGD, arities, schedules, the
series' printed numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import article_net, forward64, params64, quadratic64, regression_data

import scratchnet as sn

STEPS = 100   # torch.optim comparisons: long enough for any wrong step to show


@pytest.mark.parametrize("lam", [0.0, 0.9, 9.0])
def test_epochs_match_torch_optim_sgd(device, lam):
    """W ← W − (ηλ/n)W − (η/n)δaᵀ equals torch.optim.SGD(lr=η) with
    weight_decay=λ/n on the weights only; biases are not decayed."""
    x, y = regression_data(64, seed=1, dtype=np.float64)
    net = article_net(device, seed=2, dtype=torch.float64)
    params = params64(net)
    eta, n = 0.1, x.shape[0]   # stable for 100 steps at every lam below
    opt = torch.optim.SGD([{"params": [w for w, _ in params], "weight_decay": lam / n},
                           {"params": [b for _, b in params], "weight_decay": 0.0}], lr=eta)
    torch_costs = []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = quadratic64(y, forward64(net, params, x))
        loss.backward()
        opt.step()
        torch_costs.append(loss.item())
    train = sn.training_network(net, x)
    costs = sn.sgd(train, y, sn.quadratic_cost, [(1, (eta, lam))] * STEPS)
    np.testing.assert_allclose(costs, torch_costs, rtol=1e-9)
    for layer, (w, b) in zip(net.layers, params):
        np.testing.assert_allclose(sn.to_numpy(layer.weights), w.detach().numpy(), rtol=1e-9,
                                   atol=1e-12)
        np.testing.assert_allclose(sn.to_numpy(layer.bias), b.detach().numpy(), rtol=1e-9,
                                   atol=1e-12)
    assert train.epoch == STEPS


def test_float32_decay_is_the_requested_one(device):
    """In float32, 1 − ηλ/n rounds: with ηλ/n = 1e-7 the factor becomes
    1 − 1.19e-7 (λ 19% too large).  The decay actually applied, fitted over
    every weight, must be the requested one within a few percent."""
    x, y = regression_data(10_000, seed=1)
    eta, lam = 1e-3, 1.0  # ηλ/n = 1e-7
    plain, decayed = article_net(device, seed=0), article_net(device, seed=0)
    w0 = np.concatenate([sn.to_numpy(la.weights).ravel() for la in plain.layers])
    sn.sgd(sn.training_network(plain, x), y, sn.quadratic_cost, 1, (eta, 0.0))
    sn.sgd(sn.training_network(decayed, x), y, sn.quadratic_cost, 1, (eta, lam))
    w_plain = np.concatenate([sn.to_numpy(la.weights).ravel() for la in plain.layers])
    w_decay = np.concatenate([sn.to_numpy(la.weights).ravel() for la in decayed.layers])
    applied = (w_plain.astype(np.float64) - w_decay) / w0.astype(np.float64)
    # least-squares fit of the factor c in (w_plain − w_decay) = c · W0
    fitted = np.sum(applied * w0.astype(np.float64) ** 2) / np.sum(w0.astype(np.float64) ** 2)
    assert fitted == pytest.approx(eta * lam / x.shape[0], rel=0.05)


def test_single_call_returns_float_and_schedule_returns_list(device):
    x, y = regression_data(100)
    net = article_net(device)
    train = sn.training_network(net, x)
    c = sn.sgd(train, y, sn.quadratic_cost, 3, 0.1)
    assert isinstance(c, float)
    costs = sn.sgd(train, y, sn.quadratic_cost, [(5, 0.05), (3, (0.01, 0.1)), (7, 0.03)])
    assert isinstance(costs, list) and len(costs) == 3
    assert all(isinstance(v, float) for v in costs)
    assert train.epoch == 18
    # a generator works and is consumed eagerly
    costs = sn.sgd(train, y, sn.quadratic_cost, ((1, 0.01) for _ in range(4)))
    assert len(costs) == 4 and train.epoch == 22


def test_cost_is_last_forward_before_update(device):
    """sgd returns the cost of its last epoch's forward pass (the series'
    semantics): running 0 epochs afterwards reports the cost *after* it."""
    x, y = regression_data(200)
    net = article_net(device)
    train = sn.training_network(net, x)
    before = sn.sgd(train, y, sn.quadratic_cost, 0, 0.1)
    assert before == pytest.approx(sn.quadratic_cost(y, net(x)), rel=1e-5)
    first = sn.sgd(train, y, sn.quadratic_cost, 1, 0.1)
    assert first == pytest.approx(before, rel=1e-6)
    after = sn.sgd(train, y, sn.quadratic_cost, 0, 0.1)
    assert after == pytest.approx(sn.quadratic_cost(y, net(x)), rel=1e-5)
    assert after < first


def test_training_updates_the_inference_network(device):
    x, y = regression_data(500)
    net = article_net(device)
    train = sn.training_network(net, x)
    start = sn.quadratic_cost(y, net(x))
    sn.sgd(train, y, sn.quadratic_cost, 200, 0.1)
    assert sn.quadratic_cost(y, net(x)) < start / 2


def part12_net(device, convention):
    net = sn.inference_network(2, [sn.fully_connected(4, sn.tanh),
                                   sn.fully_connected(1, sn.sigmoid)],
                               device=device, convention=convention)
    values = [np.array([[0.3, 0.6], [0.1, 2.0], [0.9, 3.7], [0.0, 1.0]]),
              np.array([0.7, 0.2, 1.1, 2.0]), np.array([[0.75, 0.15, 0.22, 0.33]]),
              np.array([0.3])]
    staged = net.backend.from_host(np.concatenate([values[0].ravel(), values[2].ravel(),
                                                   values[1], values[3]]))
    net.backend.copy_(net.params, staged)
    return net


def test_series_part12_printed_costs(device):
    """Part 12: x = two samples (0.3, 0.9), y = 0.5, η = 0.05, calls of 1, 20,
    200 and 2000 epochs.  The blog printed 0.002098702784638695,
    0.0017663558073730684, 3.046310691223221E-4, 6.079136854164445E-12."""
    x = np.array([[0.3, 0.9], [0.3, 0.9]], np.float32)
    y = np.array([[0.5], [0.5]], np.float32)
    net = part12_net(device, "series")
    np.testing.assert_allclose(sn.to_numpy(net(x)), [[0.4352], [0.4352]], atol=1e-4)
    train = sn.training_network(net, x)
    costs = sn.sgd(train, y, sn.quadratic_cost, [(1, 0.05), (20, 0.05), (200, 0.05)])
    np.testing.assert_allclose(costs, [0.002098702784638695, 0.0017663558073730684,
                                       3.046310691223221e-4], rtol=2e-5)
    last = sn.sgd(train, y, sn.quadratic_cost, 2000, 0.05)
    # At 6e-12, |a − y| = 3.6e-6 is 60 float32 ulps of 0.5: the float32 cost
    # moves in steps of ~3% and stalls for tens of epochs (we get
    # 6.39e-12, a float32 numpy replay 6.5e-12).  7% admits that rounding;
    # a call 200 epochs off (4.1e-12) or the standard bias sign (1.8e-13)
    # fails it.
    assert last == pytest.approx(6.079136854164445e-12, rel=0.07)


def test_standard_convention_differs_from_series(device):
    """The same start with z = W a + b follows gradient descent on its own
    bias (a float64 autograd replay of the same 221 steps is the oracle),
    which is not the series' path: its printed costs are not reproduced.
    A flipped bias sign in either convention fails one of the two."""
    x = np.array([[0.3, 0.9], [0.3, 0.9]], np.float32)
    y = np.array([[0.5], [0.5]], np.float32)
    net = part12_net(device, "standard")
    params = [p for pair in params64(net) for p in pair]
    replay = []
    for _ in range(221):
        loss = quadratic64(y, forward64(net, list(zip(params[::2], params[1::2])), x))
        replay.append(loss.item())
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p -= 0.05 * g
    train = sn.training_network(net, x)
    costs = sn.sgd(train, y, sn.quadratic_cost, [(1, 0.05), (20, 0.05), (200, 0.05)])
    np.testing.assert_allclose(costs, [replay[0], replay[20], replay[220]], rtol=2e-4)
    assert abs(costs[1] - 0.0017663558073730684) > 1e-4


class Recorder(sn.Monitor):
    """A monitor that records what sgd hands it."""

    def __init__(self, chunk, switch_to=None):
        self.chunk, self.switch_to = chunk, switch_to
        self.seen, self.calls = [], []

    def start(self, train, cost, optimizer):
        self.calls.append("start")

    def after_chunk(self, train, first_epoch, costs):
        self.seen.append((first_epoch, costs))
        if self.switch_to is not None and len(self.seen) == 1:
            return self.switch_to
        return None

    def finish(self, train):
        self.calls.append("finish")


@pytest.mark.parametrize("chunk", [1, 3, 10])
def test_monitors_see_every_epoch_cost(device, chunk):
    """Per-epoch costs read in chunks equal the costs of one-epoch calls."""
    x, y = regression_data(300)
    reference = sn.training_network(article_net(device), x)
    expected = sn.sgd(reference, y, sn.quadratic_cost, [(1, (0.1, 0.01))] * 10)
    train = sn.training_network(article_net(device), x)
    rec = Recorder(chunk)
    # guard=False: the guard's own chunk (guard_every=1) would set the pace
    last = sn.sgd(train, y, sn.quadratic_cost, 10, (0.1, 0.01), monitors=[rec], guard=False)
    firsts = [f for f, _ in rec.seen]
    assert firsts == list(range(0, 10, chunk))
    got = [c for _, costs in rec.seen for c in costs]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert last == got[-1]
    assert rec.calls == ["start", "finish"]


def test_monitor_can_replace_the_optimizer(device):
    x, y = regression_data(100)
    a = sn.training_network(article_net(device), x)
    sn.sgd(a, y, sn.quadratic_cost, [(2, 0.1), (3, 0.01)])
    b = sn.training_network(article_net(device), x)
    sn.sgd(b, y, sn.quadratic_cost, 5, 0.1, monitors=[Recorder(2, switch_to=sn.SGD(0.01))],
           guard=False)
    np.testing.assert_allclose(sn.to_numpy(b.net.params), sn.to_numpy(a.net.params), rtol=1e-6)


def test_bad_monitor_is_refused(device):
    x, y = regression_data(10)
    train = sn.training_network(article_net(device), x)
    with pytest.raises(TypeError, match="monitors"):
        sn.sgd(train, y, sn.quadratic_cost, 1, 0.1, monitors=[object()])
    assert train.epoch == 0
