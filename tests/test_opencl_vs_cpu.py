"""The article's network trains to the same numbers on OpenCL as on the CPU.

Same seed, same data, same schedule: the costs and the weights after 1, 10
and 200 epochs agree within the dtype's rounding.  The comparison stops at
200 epochs on purpose: past a few hundred epochs at eta = 0.1 this training
is chaotic, and differences of one rounding step (different but equally
valid summation orders) grow to 1e-3 even in float64.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import regression_data

import scratchnet as sn

pytest.importorskip("pyopencl", reason="pyopencl is not installed: pip install "
                                       "'scratchnet[opencl]'")

from opencl_ext.backend import OpenCLBackend  # noqa: E402

_REASON = OpenCLBackend.unavailable_reason("opencl")
if _REASON is not None:
    pytest.skip(_REASON, allow_module_level=True)

#: (epochs so far, epochs to run now): checkpoints after 1, 10 and 200 epochs.
CHECKPOINTS = ((1, 1), (10, 9), (200, 190))
TOL = {torch.float32: {"rtol": 2e-5, "atol": 2e-6},
       torch.float64: {"rtol": 1e-11, "atol": 1e-13}}


def _train(device, dtype, convention, x, y):
    """Costs and weights at each checkpoint, trained as the article does."""
    layers = [sn.fully_connected(32, sn.sigmoid), sn.fully_connected(16, sn.tanh),
              sn.fully_connected(1, sn.linear)]
    results = []
    with sn.inference_network(4, layers, device=device, seed=0, dtype=dtype,
                              convention=convention) as net, \
            sn.training_network(net, x) as train:
        assert net.device.startswith(device)
        if device == "opencl":  # the limits took effect
            expected = {**vars(net.backend.limits), **OpenCLBackend.limit_overrides}
            assert vars(net.backend.limits) == expected
        initial = [sn.to_numpy(la.weights) for la in net.layers]
        for _, epochs in CHECKPOINTS:
            cost = sn.sgd(train, y, sn.quadratic_cost, epochs, (0.1, 0.01))
            params = [np.concatenate([sn.to_numpy(la.weights).ravel(), sn.to_numpy(la.bias)])
                      for la in net.layers]
            results.append((cost, params))
        prediction = sn.to_numpy(net(x[:7]))
    return initial, results, prediction


#: Device limits to run under: the device's own, and a GPU as simulated on
#: this one (GPU kernel layout, work-groups of at most 16).
LIMITS = {"native": {}, "gpu-wg16": {"cpu": False, "max_work_group_size": 16}}


# The convention changes no kernel shape: one run under the simulated GPU suffices.
@pytest.mark.parametrize("convention,limits", [("standard", "native"), ("series", "native"),
                                               ("standard", "gpu-wg16")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_article_network_matches_cpu(dtype, convention, limits, monkeypatch):
    monkeypatch.setattr(OpenCLBackend, "limit_overrides", LIMITS[limits])
    x, y = regression_data(10_000, dtype=np.float32 if dtype == torch.float32 else np.float64)
    init_cpu, cpu, pred_cpu = _train("cpu", dtype, convention, x, y)
    init_ocl, ocl, pred_ocl = _train("opencl", dtype, convention, x, y)
    for w_cpu, w_ocl in zip(init_cpu, init_ocl, strict=True):
        np.testing.assert_array_equal(w_ocl, w_cpu)  # same seed, same initial weights
    tol = TOL[dtype]
    for (epochs, _), (cost_cpu, p_cpu), (cost_ocl, p_ocl) in zip(CHECKPOINTS, cpu, ocl,
                                                                 strict=True):
        assert cost_ocl == pytest.approx(cost_cpu, rel=tol["rtol"]), f"cost after {epochs}"
        for layer, (a, b) in enumerate(zip(p_ocl, p_cpu, strict=True)):
            np.testing.assert_allclose(a, b, **tol,
                                       err_msg=f"layer {layer} parameters after {epochs} epochs")
    np.testing.assert_allclose(pred_ocl, pred_cpu, **tol)
