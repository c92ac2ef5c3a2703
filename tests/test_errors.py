"""Bad input: a clear ValueError/TypeError naming the argument, and nothing
(weights, biases, epoch count, buffers) modified."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import article_net, assert_unchanged, regression_data, snapshot

import scratchnet as sn


@pytest.fixture
def setup(device):
    x, y = regression_data(50)
    net = article_net(device)
    train = sn.training_network(net, x)
    sn.sgd(train, y, sn.quadratic_cost, 2, 0.1)  # buffers hold a real state
    yield net, train, x, y
    train.close()
    net.close()


def nan_at(a, i, j, value=np.nan):
    """A copy of ``a`` with ``value`` (NaN by default) at (i, j)."""
    a = a.copy()
    a[i, j] = value
    return a


BAD_SGD_CALLS = [
    # (description, kwargs override, expected exception, words in the message)
    ("wrong output width", dict(y=np.zeros((50, 2), np.float32)), ValueError, ["y", "columns"]),
    ("y rows != x rows", dict(y=np.zeros((49, 1), np.float32)), ValueError, ["y", "rows"]),
    ("1-D y", dict(y=np.zeros(50, np.float32)), ValueError, ["y", "2-D"]),
    ("integer y", dict(y=np.zeros((50, 1), np.int64)), TypeError, ["y", "float"]),
    ("bool tensor y", dict(y=torch.zeros((50, 1), dtype=torch.bool)), TypeError, ["y", "float"]),
    ("complex y", dict(y=np.zeros((50, 1), np.complex64)), TypeError, ["y", "float"]),
    ("NaN in y", dict(y=lambda y: nan_at(y, 7, 0)), ValueError, ["y", "finite"]),
    ("inf in y", dict(y=lambda y: nan_at(y, 3, 0, -np.inf)), ValueError,
     ["y", "finite"]),
    ("string y", dict(y="abc"), TypeError, ["y"]),
    ("eta = 0", dict(hyper=0.0), ValueError, ["eta", "> 0"]),
    ("eta < 0", dict(hyper=-0.1), ValueError, ["eta"]),
    ("eta nan", dict(hyper=float("nan")), ValueError, ["eta"]),
    ("eta inf", dict(hyper=(float("inf"), 0.1)), ValueError, ["eta"]),
    ("eta string", dict(hyper="0.1"), TypeError, ["hyper"]),
    ("lam < 0", dict(hyper=(0.1, -1.0)), ValueError, ["lam"]),
    ("lam nan", dict(hyper=(0.1, float("nan"))), ValueError, ["lam"]),
    ("too many hyper", dict(hyper=(0.1, 0.1, 0.1, 0.1)), ValueError, ["hyper"]),
    ("negative epochs", dict(epochs=-1), ValueError, ["epochs"]),
    ("float epochs", dict(epochs=2.5), TypeError, ["epochs"]),
    ("missing hyper", dict(hyper=None), TypeError, ["hyper"]),
    ("schedule entry not a pair", dict(epochs=[(1, 0.1), (2,)], hyper=None), ValueError,
     ["schedule[1]"]),
    ("schedule bad eta", dict(epochs=[(1, 0.1), (2, -0.1)], hyper=None), ValueError,
     ["schedule[1]", "eta"]),
    ("schedule bad epochs", dict(epochs=[(1, 0.1), (-2, 0.1)], hyper=None), ValueError,
     ["schedule[1]", "epochs"]),
    ("schedule not iterable", dict(epochs=object(), hyper=None), TypeError, ["schedule"]),
    ("unknown cost", dict(cost="mse"), TypeError, ["cost"]),
]


@pytest.mark.parametrize("case", BAD_SGD_CALLS, ids=[c[0] for c in BAD_SGD_CALLS])
def test_bad_sgd_call_changes_nothing(setup, case):
    net, train, x, y = setup
    _, override, exc, words = case
    args = dict(y=y, cost=sn.quadratic_cost, epochs=3, hyper=0.1)
    args.update(override)
    if callable(args["y"]):
        args["y"] = args["y"](y)
    before, epoch = snapshot(net), train.epoch
    grads_before = sn.to_numpy(train.grads)
    with pytest.raises(exc) as info:
        sn.sgd(train, args["y"], args["cost"], args["epochs"], args["hyper"])
    for word in words:
        assert word in str(info.value), f"{word!r} not in {info.value}"
    assert_unchanged(net, before)
    assert train.epoch == epoch
    np.testing.assert_array_equal(sn.to_numpy(train.grads), grads_before)


def test_y_on_another_device_is_refused(setup):
    net, train, x, y = setup
    if net.device.startswith("cuda"):
        pytest.skip("needs a net off the meta device to compare")
    before = snapshot(net)
    with pytest.raises(ValueError, match="y: expected data on the CPU or on"):
        sn.sgd(train, torch.zeros((50, 1), device="meta"), sn.quadratic_cost, 1, 0.1)
    assert_unchanged(net, before)


BAD_X = [
    ("wrong feature count", np.zeros((10, 3), np.float32), ValueError, ["x", "4 columns"]),
    ("empty batch", np.zeros((0, 4), np.float32), ValueError, ["x", "at least one"]),
    ("integer x", np.zeros((10, 4), np.int32), TypeError, ["x", "float"]),
    ("NaN in x", nan_at(np.zeros((10, 4), np.float32), 2, 3), ValueError, ["x", "finite"]),
    ("3-D x", np.zeros((2, 5, 4), np.float32), ValueError, ["x", "2-D"]),
    ("not an array", {"a": 1}, TypeError, ["x"]),
]


@pytest.mark.parametrize("case", BAD_X, ids=[c[0] for c in BAD_X])
def test_bad_x_for_training_and_inference(device, case):
    _, x, exc, words = case
    net = article_net(device)
    before = snapshot(net)
    for call in (lambda: sn.training_network(net, x), lambda: net(x)):
        with pytest.raises(exc) as info:
            call()
        for word in words:
            assert word in str(info.value)
    assert_unchanged(net, before)
    assert net.trainings == 0


@pytest.mark.parametrize("kwargs, exc, word", [
    (dict(device="tpu"), ValueError, "device"),
    (dict(device="cpu:0:0:0"), ValueError, "device"),
    (dict(device=3), TypeError, "device"),
    (dict(dtype=torch.int32), TypeError, "dtype"),
    (dict(dtype=torch.float16), TypeError, "dtype"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(convention="blog"), ValueError, "convention"),
])
def test_bad_network_arguments(kwargs, exc, word):
    layers = [sn.fully_connected(3, sn.sigmoid)]
    with pytest.raises(exc, match=word):
        sn.inference_network(4, layers, **kwargs)


def test_unknown_device_lists_the_available_ones():
    with pytest.raises(ValueError) as info:
        sn.inference_network(4, [sn.fully_connected(3, sn.sigmoid)], device="tpu")
    assert "cpu" in str(info.value) and "tpu" in str(info.value)


@pytest.mark.parametrize("call, exc, word", [
    (lambda: sn.fully_connected(3, "softplus"), ValueError, "activation"),
    (lambda: sn.fully_connected(0, sn.tanh), ValueError, "out_dim"),
    (lambda: sn.fully_connected(2.0, sn.tanh), TypeError, "out_dim"),
    (lambda: sn.inference_network(0, [sn.fully_connected(1, sn.tanh)]), ValueError, "in_dim"),
    (lambda: sn.inference_network(4, []), ValueError, "layers"),
    (lambda: sn.inference_network(4, [3]), TypeError, "layers[0]"),
    (lambda: sn.training_network("net", np.zeros((2, 4))), TypeError, "net"),
])
def test_bad_layer_arguments(call, exc, word):
    with pytest.raises(exc) as info:
        call()
    assert word in str(info.value)


def test_closed_networks_refuse_work(device):
    x, y = regression_data(20)
    with article_net(device) as net:
        with sn.training_network(net, x) as train:
            sn.sgd(train, y, sn.quadratic_cost, 1, 0.1)
        with pytest.raises(ValueError, match="closed"):
            sn.sgd(train, y, sn.quadratic_cost, 1, 0.1)
        assert net.trainings == 0
    with pytest.raises(ValueError, match="closed"):
        net(x)


def test_networks_that_cannot_fit_are_refused_before_allocating(device):
    """A layer of 10^10 neurons, or a training batch of 10^10 samples, is
    refused with a ValueError naming the argument, the size asked for and
    the memory it would take, before anything is allocated or scanned
    (the samples below are a zero-stride view: 160 GB that do not exist)."""
    with pytest.raises(ValueError, match=r"layers: a 4-10000000000-1 network's parameters "
                                         r"needs 60,000,000,001 numbers, .* GiB of .* memory"):
        sn.inference_network(4, [sn.fully_connected(10**10, sn.tanh),
                                 sn.fully_connected(1, sn.linear)], device=device)
    net = article_net(device)
    before = snapshot(net)
    huge = np.broadcast_to(np.zeros(4, np.float32), (10**10, 4))
    with pytest.raises(ValueError, match=r"x: training on 10,000,000,000 samples needs .* GiB"):
        sn.training_network(net, huge)
    assert_unchanged(net, before)
    assert net.trainings == 0
