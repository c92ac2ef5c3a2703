"""Cross-entropy after a blow-up: a non-finite output is divergence.

With η = 1e10 a relu or linear hidden layer overflows within a few epochs and
the output turns NaN.  The cost must then be NaN (not an error from a
kernel that checks its input range, not the −100 floor applied to NaN), so
the divergence guard restores the last verified state and raises
:class:`scratchnet.DivergenceError`, on every backend.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import scratchnet as sn
from scratchnet.backends import get_backend


def _data(output, n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4))
    if output == "sigmoid":
        return x, (rng.random((n, 1)) > 0.5).astype(float)
    return x, np.eye(3)[rng.integers(0, 3, n)]


@pytest.mark.parametrize("output", ["sigmoid", "softmax"])
@pytest.mark.parametrize("hidden", ["relu", "linear"])
def test_a_blow_up_under_cross_entropy_is_divergence(device, hidden, output):
    x, y = _data(output)
    layers = [sn.fully_connected(8, getattr(sn, hidden)),
              sn.fully_connected(y.shape[1], getattr(sn, output))]
    net = sn.inference_network(4, layers, device=device, seed=0)
    train = sn.training_network(net, x)
    with pytest.raises(sn.DivergenceError) as info:
        sn.sgd(train, y, sn.cross_entropy, 200, 1e10)
    err = info.value
    params = sn.to_numpy(net.params)
    assert np.isfinite(params).all()
    assert train.epoch == err.restored_epoch
    assert math.isfinite(err.restored_cost)
    # the restored network still runs and gives a finite cost
    assert math.isfinite(sn.sgd(train, y, sn.cross_entropy, 0, 0.1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_cross_entropy_of_a_non_finite_output_is_nan(device, dtype):
    """NaN anywhere in the output, or a value outside [0, 1], makes the
    cost NaN, whether or not its target is 0 (0 · NaN is NaN)."""
    if device.startswith("opencl") and dtype == torch.float64:
        from opencl_ext import devices

        if not devices.Limits.of(devices.resolve("opencl")[1]).fp64:
            pytest.skip("the OpenCL device has no double precision")
    be = get_backend(device, dtype)
    try:
        y = be.from_host(np.array([[1.0, 0.0, 1.0, 0.0]]))
        out, scratch = be.zeros((1,)), be.zeros((1, 4))
        for bad, binary in (([0.5, np.nan, 0.5, 0.5], True), ([0.5, 0.5, np.nan, 0.5], True),
                            ([0.5, 1.5, 0.5, 0.5], True), ([-0.5, 0.5, 0.5, 0.5], True),
                            ([0.5, np.nan, 0.5, 0.5], False), ([0.5, 0.5, np.nan, 0.5], False),
                            ([0.5, -0.5, 0.5, 0.5], False)):
            be.cross_entropy_sum(scratch, be.from_host(np.array([bad])), y, out, binary)
            assert math.isnan(be.read_scalar(out)), (bad, binary)
    finally:
        be.close()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_cross_entropy_keeps_torchs_values_for_finite_outputs(device, dtype):
    """Finite outputs in [0, 1] cost what torch's binary_cross_entropy
    says, with each log floored at −100 (0 and 1 included, exactly)."""
    if device.startswith("opencl") and dtype == torch.float64:
        from opencl_ext import devices

        if not devices.Limits.of(devices.resolve("opencl")[1]).fp64:
            pytest.skip("the OpenCL device has no double precision")
    rng = np.random.default_rng(3)
    a = rng.random((3, 1001))
    y = (rng.random((3, 1001)) > 0.5).astype(float)
    y[1] = rng.random(1001)                       # soft targets too
    a[0, :4], y[0, :4] = [0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 1.0]
    expected = F.binary_cross_entropy(torch.tensor(a, dtype=dtype), torch.tensor(y, dtype=dtype),
                                      reduction="sum").item()
    be = get_backend(device, dtype)
    try:
        out = be.zeros((1,))
        be.cross_entropy_sum(be.zeros(a.shape), be.from_host(a), be.from_host(y), out, True)
        rtol = 1e-12 if dtype == torch.float64 else 1e-5
        assert be.read_scalar(out) == pytest.approx(expected, rel=rtol)
        # the floor alone: confidently wrong twice, confidently right twice
        corner = be.from_host(np.array([[0.0, 1.0, 0.0, 1.0]]))
        target = be.from_host(np.array([[1.0, 0.0, 0.0, 1.0]]))
        be.cross_entropy_sum(be.zeros((1, 4)), corner, target, out, True)
        assert be.read_scalar(out) == 200.0
        be.cross_entropy_sum(be.zeros((1, 4)), corner, target, out, False)
        assert be.read_scalar(out) == 100.0
    finally:
        be.close()
