"""Classification pieces: softmax, elu and cross-entropy against torch
autograd in float64 (the fused δ = a − y included), their numerical
stability, and the errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import (
    assert_unchanged,
    forward64,
    one_thread,  # noqa: F401 - fixture
    params64,
    snapshot,
)

import scratchnet as sn

pytestmark = pytest.mark.usefixtures("one_thread")


def one_hot(rng, n, k):
    return np.eye(k)[rng.integers(0, k, n)]


def check_cross_entropy(device, in_dim, layers, n, seed, y):
    """One sgd step with cross_entropy against autograd on torch's own
    cross-entropy: cost, ∇W, ∇b and the step."""
    rng = np.random.default_rng(seed)
    net = sn.inference_network(in_dim, layers, device=device, dtype=torch.float64, seed=seed)
    x = rng.standard_normal((n, in_dim))
    params = params64(net)
    a = forward64(net, params, x)
    yt = torch.as_tensor(y)
    if net.layers[-1].activation.name == "softmax":
        loss = -(yt * torch.log(a)).sum() / n
    else:
        loss = F.binary_cross_entropy(a, yt, reduction="sum") / n
    loss.backward()
    with sn.training_network(net, x) as train:
        cost = sn.sgd(train, y, sn.cross_entropy, 1, 0.5)
        assert cost == pytest.approx(loss.item(), rel=1e-10)
        for i, (tl, (w, b)) in enumerate(zip(train.layers, params)):
            np.testing.assert_allclose(sn.to_numpy(tl.dw) / n, w.grad.numpy(), rtol=1e-8,
                                       atol=1e-11, err_msg=f"dW of layer {i}")
            np.testing.assert_allclose(sn.to_numpy(tl.db) / n, b.grad.numpy(), rtol=1e-8,
                                       atol=1e-11, err_msg=f"db of layer {i}")
    for layer, (w, _) in zip(net.layers, params):
        np.testing.assert_allclose(sn.to_numpy(layer.weights),
                                   w.detach().numpy() - 0.5 * w.grad.numpy(), rtol=1e-9)


@pytest.mark.parametrize("hidden", ["relu", "elu", "tanh"])
def test_softmax_cross_entropy_backward(device, hidden):
    """δ_L = a − y (the fused form) gives autograd's gradients of
    −(1/n) Σ y ln softmax(z) through every layer."""
    y = one_hot(np.random.default_rng(1), 37, 5)
    check_cross_entropy(device, 6, [sn.fully_connected(9, hidden),
                                    sn.fully_connected(5, sn.softmax)], 37, seed=2, y=y)


def test_softmax_cross_entropy_soft_targets(device):
    """Targets may be any distribution per sample, not only one-hot."""
    rng = np.random.default_rng(3)
    y = rng.random((20, 4))
    y /= y.sum(axis=1, keepdims=True)
    check_cross_entropy(device, 3, [sn.fully_connected(4, "softmax")], 20, seed=3, y=y)


def test_sigmoid_binary_cross_entropy_backward(device):
    rng = np.random.default_rng(4)
    y = (rng.random((25, 3)) > 0.5).astype(np.float64)   # three independent labels
    check_cross_entropy(device, 5, [sn.fully_connected(7, "elu"),
                                    sn.fully_connected(3, "sigmoid")], 25, seed=4, y=y)


def test_softmax_is_stable_and_columnwise(device):
    """z of ±1000 overflows a naive e^z; inference (rows are samples) gives
    each sample's own distribution, equal to torch.softmax."""
    net = sn.inference_network(2, [sn.fully_connected(3, "softmax")], device=device,
                               dtype=torch.float64, seed=0)
    w = np.array([[1000.0, 0.0], [0.0, 1000.0], [-1000.0, 500.0]])
    staged = net.backend.from_host(np.concatenate([w.ravel(), np.zeros(3)]))
    net.backend.copy_(net.params, staged)
    x = np.array([[1.0, 0.0], [0.0, 1.0], [0.3, 0.3], [-1.0, 2.0]])
    a = sn.to_numpy(net(x))
    assert np.isfinite(a).all()
    np.testing.assert_allclose(a, torch.softmax(torch.tensor(x @ w.T), dim=1).numpy(),
                               rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=1e-12)


def test_cross_entropy_of_a_confident_mistake_is_finite(device):
    """float32 softmax rounds the true class's a to 0 for a confidently wrong
    net: the cost is capped (ln a ≥ −100 per entry), never inf or NaN, and
    so is the binary form where σ(z) rounds to 1."""
    for act, k in [("softmax", 2), ("sigmoid", 1)]:
        net = sn.inference_network(1, [sn.fully_connected(k, act)], device=device, seed=0)
        w = np.array([200.0, -200.0][:k])
        staged = net.backend.from_host(np.concatenate([w, np.zeros(k)]))
        net.backend.copy_(net.params, staged)
        x = np.ones((4, 1), np.float32)
        y = np.zeros((4, k), np.float32)
        y[:, -1] = 1.0 if act == "softmax" else 0.0     # the wrong class / label 0
        with sn.training_network(net, x) as train:
            cost = sn.sgd(train, y, sn.cross_entropy, 0, 0.1)
        assert cost == pytest.approx(100.0, rel=1e-6)
        assert sn.cross_entropy(y, sn.to_numpy(net(x))) == pytest.approx(100.0, rel=1e-6)


def test_host_cross_entropy_matches_torch():
    rng = np.random.default_rng(5)
    logits = torch.tensor(rng.standard_normal((30, 4)))
    labels = torch.tensor(rng.integers(0, 4, 30))
    a = torch.softmax(logits, dim=1).numpy()
    y = np.eye(4)[labels.numpy()]
    assert sn.cross_entropy(y, a) == pytest.approx(F.cross_entropy(logits, labels).item(),
                                                   rel=1e-12)
    p = torch.sigmoid(logits[:, :1])
    t = (torch.rand(30, 1, generator=torch.Generator().manual_seed(0)) > 0.5).double()
    assert sn.cross_entropy(t.numpy(), p.numpy()) == pytest.approx(
        F.binary_cross_entropy(p, t).item(), rel=1e-12)


@pytest.mark.parametrize("act,y,words", [
    ("linear", None, ["cost", "softmax", "linear"]),
    ("tanh", None, ["cost", "sigmoid", "tanh"]),
    ("softmax", lambda y: y * 0.5, ["y", "sum to 1"]),
    ("softmax", lambda y: y - 0.5, ["y", "[0, 1]"]),
    ("sigmoid", lambda y: y + 1, ["y", "[0, 1]"]),
])
def test_cross_entropy_refuses_what_it_cannot_train(device, act, y, words):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((10, 3)).astype(np.float32)
    targets = one_hot(rng, 10, 4).astype(np.float32)
    targets = targets if y is None else y(targets)
    with sn.inference_network(3, [sn.fully_connected(4, act)], device=device, seed=0) as net:
        with sn.training_network(net, x) as train:
            before = snapshot(net)
            for call in (lambda: sn.sgd(train, targets, sn.cross_entropy, 2, 0.1),
                         lambda: sn.train(net, x, targets, sn.cross_entropy, 2, 0.1,
                                          batch_size=4)):
                with pytest.raises(ValueError) as info:
                    call()
                for word in words:
                    assert word in str(info.value)
            assert_unchanged(net, before)
            assert train.epoch == 0


def test_tensorboard_test_cost_with_cross_entropy(device, tmp_path):
    """sgd's TensorBoard logger measures the test cost through the cost's
    own device kernels: with cross_entropy its last value is the host
    cross-entropy of the trained network."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rng = np.random.default_rng(7)
    x = rng.standard_normal((50, 3)).astype(np.float32)
    y = one_hot(rng, 50, 4).astype(np.float32)
    x_test = rng.standard_normal((20, 3)).astype(np.float32)
    y_test = one_hot(rng, 20, 4).astype(np.float32)
    with sn.inference_network(3, [sn.fully_connected(8, sn.elu),
                                  sn.fully_connected(4, sn.softmax)], device=device,
                              seed=0) as net, sn.training_network(net, x) as train:
        sn.sgd(train, y, sn.cross_entropy, 6, sn.Adam(0.01), log_dir=tmp_path,
               test=(x_test, y_test))
        expected = sn.cross_entropy(y_test, net(x_test))
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    test_costs = [e.value for e in events.Scalars("cost/test")]
    assert len(test_costs) == 6
    assert test_costs[-1] == pytest.approx(expected, rel=1e-5)


def test_a_backend_without_the_new_ops_says_which_op_is_missing():
    """The ops beyond the series are optional in the backend contract (a
    plugin written against the series' ops keeps importing); calling one
    that a backend lacks names the op and the backend."""
    from scratchnet.backends.base import Backend

    be = sn.inference_network(1, [sn.fully_connected(1, "linear")]).backend
    z = be.zeros((2, 3))
    with pytest.raises(NotImplementedError) as info:
        Backend.softmax_forward(be, z, z, be.zeros((3,)))
    assert "softmax_forward" in str(info.value) and "torch" in str(info.value)
    with pytest.raises(NotImplementedError, match="gather_columns"):
        Backend.gather_columns(be, z, z, None)
