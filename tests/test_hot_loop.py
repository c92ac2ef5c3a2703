"""The fast paths of the epoch loop keep its guarantees."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import article_net, regression_data

import scratchnet as sn
from scratchnet.backends import get_backend


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 2.4e-7), (torch.float64, 5e-16)])
def test_tanh_kernel_is_tanh(device, dtype, tol):
    """The torch backend computes tanh as 2σ(2z) − 1: within one ulp of 1 of
    the true tanh on the CPU (float64 oracle; two ulps allowed on devices
    whose sigmoid may be less exact), saturating exactly at ±1, keeping NaN."""
    tol = tol if device == "cpu" else 2 * tol
    be = get_backend(device, dtype)
    z64 = torch.cat([torch.linspace(-30, 30, 20001, dtype=torch.float64),
                     torch.tensor([0.0, 1e-30, -1e-8, 1e-4, float("inf"), float("-inf")],
                                  dtype=torch.float64)])
    z = be.from_host(z64.reshape(1, -1))
    a = be.zeros(tuple(z.shape))
    be.activation_forward("tanh", z, a)
    got = torch.from_numpy(sn.to_numpy(a)).reshape(-1).double()
    want = torch.tanh(z64.to(dtype).double())
    assert (got - want).abs().max().item() <= tol
    assert got[-2].item() == 1.0 and got[-1].item() == -1.0
    nan = be.from_host(torch.tensor([[float("nan")]], dtype=dtype))
    be.activation_forward("tanh", nan, nan)
    assert np.isnan(sn.to_numpy(nan)).all()


def test_y_changed_in_place_is_validated_again(device):
    """An in-place change to y after an sgd call, through torch or behind
    its back (``.numpy()``, which torch's version counter does not see), is
    what the next call trains against; a NaN written either way is refused
    with nothing moved."""
    x, y = regression_data(50)
    y = torch.from_numpy(y)
    train = sn.training_network(article_net(device), x)
    sn.sgd(train, y, sn.quadratic_cost, 2, 0.1)
    before = sn.to_numpy(train.net.params)
    for write in ("torch", "numpy"):
        target = y if write == "torch" else y.numpy()
        target[3, 0] = float("nan")
        with pytest.raises(ValueError, match="y: expected finite values"):
            sn.sgd(train, y, sn.quadratic_cost, 2, 0.1)
        np.testing.assert_array_equal(sn.to_numpy(train.net.params), before)
        assert train.epoch == 2
        target[3, 0] = 0.5
    y.numpy()[7, 0] = 3.25                    # a changed, finite target
    sn.sgd(train, y, sn.quadratic_cost, 1, 0.1)
    assert train.epoch == 3
    np.testing.assert_array_equal(sn.to_numpy(train.y)[0], y[:, 0].numpy())
    assert sn.to_numpy(train.y)[0, 7] == np.float32(3.25)


def test_epochs_copy_nothing_beyond_the_products(monkeypatch):
    """Profile three epochs through the public sgd call (y already loaded):
    the only copies are addmm's own (it writes the bias into z before the
    product), one per layer per epoch; no other op touches whole arrays
    except the kernels of the layers, the cost and the update."""
    monkeypatch.setenv("SCRATCHNET_RUNNER", "reference")   # the ATen kernels profiled here
    x, y = regression_data(500)
    y = torch.from_numpy(y)
    train = sn.training_network(article_net("cpu"), x)
    sn.sgd(train, y, sn.quadratic_cost, 2, (0.1, 0.01))
    # guard=False: the divergence guard's snapshot of the parameters is one
    # deliberate copy per call (tests/test_guard.py counts it)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        sn.sgd(train, y, sn.quadratic_cost, 3, (0.1, 0.01), guard=False)
    events = prof.events()

    def under_isfinite(e):   # the finiteness scan of y, once per call
        while e is not None and e.name != "aten::isfinite":
            e = e.cpu_parent
        return e is not None

    copies = [e for e in events if e.name == "aten::copy_" and not under_isfinite(e)]
    # one per call: y into the training network's buffer (every call, see
    # test_y_changed_in_place_is_validated_again)
    loads = [e for e in copies if e.cpu_parent is None]
    assert len(loads) == 1 and len(copies) == 3 * 3 + 1
    assert {e.cpu_parent.name for e in copies if e.cpu_parent is not None} == {"aten::addmm"}
    allowed = {"aten::addmm", "aten::mm", "aten::sum", "aten::sigmoid", "aten::add",
               "aten::add_", "aten::sub", "aten::sigmoid_backward", "aten::tanh_backward",
               "aten::mv", "aten::item", "aten::copy_", "aten::isfinite",
               "aten::all", "aten::is_nonzero"}   # the last three: the scan of y
    top = {e.name for e in events if e.cpu_parent is None and e.name.startswith("aten::")}
    views = {"aten::t", "aten::view", "aten::transpose", "aten::as_strided"}
    assert top - views <= allowed, top - views - allowed
