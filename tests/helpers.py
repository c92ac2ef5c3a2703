"""Shared test tools: a float64 autograd replica of a scratchnet network."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import scratchnet as sn

TORCH_ACT = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "linear": lambda z: z,
             "relu": torch.relu, "elu": torch.nn.functional.elu,
             "softmax": lambda z: torch.softmax(z, dim=1)}   # rows are samples here


def params64(net):
    """The network's weights and biases as float64 CPU leaf tensors that
    require grad (copies: the library's arrays never require grad)."""
    out = []
    for layer in net.layers:
        w = torch.tensor(sn.to_numpy(layer.weights), dtype=torch.float64, requires_grad=True)
        b = torch.tensor(sn.to_numpy(layer.bias), dtype=torch.float64, requires_grad=True)
        out.append((w, b))
    return out


def forward64(net, params, x, bias_sign=1.0):
    """a_L for rows-are-samples x, z = a Wᵀ + sign·b, in float64 autograd."""
    a = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    for layer, (w, b) in zip(net.layers, params):
        a = TORCH_ACT[layer.activation.name](a @ w.T + bias_sign * b)
    return a


def quadratic64(y, a):
    y = torch.as_tensor(np.asarray(y), dtype=torch.float64)
    return ((a - y) ** 2).sum() / (2 * y.shape[0])


def snapshot(net):
    """Host copies of every parameter, to prove nothing changed."""
    return [(sn.to_numpy(la.weights), sn.to_numpy(la.bias)) for la in net.layers]


def assert_unchanged(net, before):
    for (w0, b0), layer in zip(before, net.layers):
        np.testing.assert_array_equal(sn.to_numpy(layer.weights), w0)
        np.testing.assert_array_equal(sn.to_numpy(layer.bias), b0)


def regression_data(n, seed=0, dtype=np.float32):
    """The series' regression task: f(x) = sin x0 + cos x1 + tanh x2 + x3²."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 4)).astype(dtype)
    y = (np.sin(x[:, 0]) + np.cos(x[:, 1]) + np.tanh(x[:, 2]) + x[:, 3] ** 2)
    return x, y.reshape(-1, 1).astype(dtype)


def article_net(device, seed=0, dtype=torch.float32, **kw):
    return sn.inference_network(4, [sn.fully_connected(32, sn.sigmoid),
                                    sn.fully_connected(16, sn.tanh),
                                    sn.fully_connected(1, sn.linear)],
                                device=device, dtype=dtype, seed=seed, **kw)


@pytest.fixture(autouse=False)
def one_thread():
    """torch on one CPU thread for the test: these matrices are tiny, and on
    a loaded 2-core machine intra-op threads spin waiting for each other (a
    4-epoch digits run: 57 s with 2 threads, 6 s with 1).  Import it into a
    test module with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Saboteur(sn.SGD):
    """SGD whose update ``at`` (0-based: the update made in epoch ``at``)
    corrupts the parameters; ``times`` limits how often it fires."""

    def __init__(self, eta, at, mode="nan", times=None, lam=0.0):
        super().__init__(eta, lam)
        self.at, self.mode, self.times, self.fired = at, mode, times, 0
        self._base, self._k = None, 0

    def _epoch(self, train):
        """The epoch this step belongs to: the runner counts ``train.epoch``
        after each full-batch step (a replayed CUDA graph counts after its
        whole chunk, so count steps since it last changed)."""
        if train.epoch != self._base:
            self._base, self._k = train.epoch, 0
        epoch = self._base + self._k
        self._k += 1
        return epoch

    def with_eta(self, eta):
        other = Saboteur(eta, self.at, self.mode, self.times, self.lam)
        other.fired = self.fired
        return other

    def step(self, train):
        super().step(train)
        if self._epoch(train) == self.at and (self.times is None or self.fired < self.times):
            self.fired += 1
            be, params = train.backend, train.net.params
            if self.mode == "nan":
                be.axpy_(params, math.nan, params)         # θ + NaN·θ = NaN
            else:                                           # output bias += 100
                bias = be.view(params, train.net.n_params - 1, (1,))
                be.axpy_(bias, 100.0 / max(abs(sn.to_numpy(bias)[0]), 1e-3), bias)


def read_events(log_dir):
    """Every scalar series as {tag: [(step, value), ...]} and the histograms."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "histograms": 0,
                                                        "tensors": 0})
    acc.Reload()
    scalars = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
    hists = {t: acc.Histograms(t) for t in acc.Tags()["histograms"]}
    return scalars, hists, acc


def momentum_formula(eta, lam, mu, nesterov):
    def update(s, w, gw, b, gb, n, t):
        # part 16: v ← μv − (η/n) δaᵀ with δaᵀ = n·gw; W ← (1 − ηλ/n) W + v
        v = s.setdefault("v", torch.zeros_like(w))
        v.mul_(mu).sub_(eta * gw)
        step = mu * v - eta * gw if nesterov else v
        w.copy_((1 - eta * lam / n) * w + step)
        b.sub_(eta * gb)                     # biases: plain SGD
    return update


def adam_formula(eta, lam, beta1, beta2, eps):
    def update(s, w, gw, b, gb, n, t):
        m = s.setdefault("m", torch.zeros_like(w))
        v = s.setdefault("v", torch.zeros_like(w))
        m.copy_(beta1 * m + (1 - beta1) * gw)
        v.copy_(beta2 * v + (1 - beta2) * gw ** 2)
        m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
        w.copy_((1 - eta * lam / n) * w - eta * m_hat / (v_hat.sqrt() + eps))
        b.sub_(eta * gb)                     # biases: plain SGD (Deep Diamond)
    return update


# The series' example network (parts 1-13): 2 inputs, 4 tanh neurons, 1 sigmoid
# output, with its hand-picked weights (W1 written out row by row).
SERIES_W1 = [[0.3, 0.6], [0.1, 2.0], [0.9, 3.7], [0.0, 1.0]]
SERIES_B1 = [0.7, 0.2, 1.1, 2.0]
SERIES_W2 = [[0.75, 0.15, 0.22, 0.33]]
SERIES_B2 = [0.3]


def load_params(net, values):
    """Copy host values into each layer's weights and bias, in the order
    [W_0, b_0, W_1, b_1, ...], on any backend."""
    be = net.backend
    arrays = [a for layer in net.layers for a in (layer.weights, layer.bias)]
    if len(arrays) != len(values):
        raise ValueError(f"values: expected {len(arrays)} arrays, got {len(values)}")
    for array, host in zip(arrays, values):
        staged = be.from_host(np.asarray(host, dtype=np.float64))
        be.copy_(array, staged)
        be.release(staged)
    return net


def series_net(device, convention="series", dtype=torch.float32, values=None):
    """The series' 2-4-1 network (tanh, sigmoid) with its weights, or with
    ``values`` ([W1, b1, W2, b2]) instead."""
    net = sn.inference_network(2, [sn.fully_connected(4, sn.tanh),
                                   sn.fully_connected(1, sn.sigmoid)],
                               device=device, dtype=dtype, convention=convention)
    return load_params(net, values or [SERIES_W1, SERIES_B1, SERIES_W2, SERIES_B2])


class CostRecorder(sn.Monitor):
    """A monitor that keeps every per-epoch cost it is shown, read in
    chunks of ``chunk`` epochs."""

    def __init__(self, chunk: int):
        self.chunk = chunk
        self.costs: list[float] = []

    def after_chunk(self, train, first_epoch, costs):
        self.costs += costs
