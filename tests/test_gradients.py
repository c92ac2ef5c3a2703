"""Hand-written backward passes against torch autograd in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import forward64, params64, quadratic64

import scratchnet as sn

ACTS = ["sigmoid", "tanh", "linear", "relu", "elu", "softmax"]


def random_architecture(rng):
    depth = int(rng.integers(1, 6))
    in_dim = int(rng.integers(1, 65))
    layers = [sn.fully_connected(int(rng.integers(1, 65)), ACTS[int(rng.integers(0, len(ACTS)))])
              for _ in range(depth)]
    return in_dim, layers, int(rng.integers(1, 301))


def check_gradients(device, in_dim, layers, n, seed, convention="standard"):
    rng = np.random.default_rng(seed)
    net = sn.inference_network(in_dim, layers, device=device, dtype=torch.float64,
                               seed=seed, convention=convention)
    x = rng.standard_normal((n, in_dim))
    y = rng.standard_normal((n, net.out_dim))
    params = params64(net)
    sign = -1.0 if convention == "series" else 1.0
    loss = quadratic64(y, forward64(net, params, x, sign))
    loss.backward()

    train = sn.training_network(net, x)
    eta = 0.5
    cost = sn.sgd(train, y, sn.quadratic_cost, 1, eta)
    assert cost == pytest.approx(loss.item(), rel=1e-10, abs=1e-12)
    for i, (layer, tl, (w, b)) in enumerate(zip(net.layers, train.layers, params)):
        # train.grads holds the batch sums δ aᵀ and δ 1; autograd gives the mean.
        np.testing.assert_allclose(sn.to_numpy(tl.dw) / n, w.grad.numpy(), rtol=1e-8,
                                   atol=1e-10, err_msg=f"dW of layer {i}")
        db = sn.to_numpy(tl.db) / n
        # the series' step moves b by +Σδ while its true gradient is −Σδ
        np.testing.assert_allclose(db, sign * b.grad.numpy(), rtol=1e-8, atol=1e-10,
                                   err_msg=f"db of layer {i}")
        # and the step itself: p ← p − η ∇p
        np.testing.assert_allclose(sn.to_numpy(layer.weights),
                                   w.detach().numpy() - eta * w.grad.numpy(),
                                   rtol=1e-8, atol=1e-10)
    train.close()
    net.close()


@pytest.mark.parametrize("act", ACTS)
def test_single_layer_backward(device, act):
    check_gradients(device, 7, [sn.fully_connected(5, act)], 13, seed=3)


@pytest.mark.parametrize("act", ACTS)
def test_hidden_layer_backward(device, act):
    """Each activation as a hidden layer, so its δ travels down (Wᵀδ)."""
    check_gradients(device, 6, [sn.fully_connected(9, act), sn.fully_connected(4, act),
                                sn.fully_connected(2, "sigmoid")], 31, seed=4)


@pytest.mark.parametrize("seed", range(12))
def test_random_architectures(device, seed):
    in_dim, layers, n = random_architecture(np.random.default_rng(100 + seed))
    check_gradients(device, in_dim, layers, n, seed=seed)


def test_batch_of_one(device):
    check_gradients(device, 3, [sn.fully_connected(4, "tanh"), sn.fully_connected(2, "linear")],
                    1, seed=5)


def test_series_convention_gradients(device):
    """convention="series": z = W a − b, and the series' own bias step."""
    check_gradients(device, 4, [sn.fully_connected(8, "tanh"), sn.fully_connected(3, "sigmoid")],
                    20, seed=6, convention="series")
