"""The conformance suite's device parametrisation.

Every test that takes the ``device`` fixture runs once per registered backend
prefix (cpu, cuda, opencl, and any plugin found through the
``scratchnet.backends`` entry points).  A device that cannot be used here is
skipped with the backend's own reason (no GPU, no OpenCL platform, plugin not
installed), never an error at collection.
"""

from __future__ import annotations

import pytest
import torch

from scratchnet import backends

torch.set_grad_enabled(True)  # tests use autograd as the oracle
# One intra-op thread per test process: `pytest -n 2` already fills two cores,
# and on a shared machine OpenMP's spinning second thread made small-batch
# epochs ~200x slower (9.8 s vs 0.04 s for 200 epochs of 300 samples).
torch.set_num_threads(1)


def _device_params():
    params = []
    for prefix in backends.prefixes():
        if prefix == "meta":
            continue
        reason = backends.unavailable_reason(prefix)
        params.append(pytest.param(prefix, id=prefix,
                                   marks=pytest.mark.skipif(reason is not None,
                                                            reason=str(reason))))
    return params


DEVICES = _device_params()


def pytest_report_header(config):
    """One line naming every backend and why any is skipped."""
    parts = []
    for prefix in backends.prefixes():
        if prefix != "meta":
            reason = backends.unavailable_reason(prefix)
            parts.append(f"{prefix}: " + ("runs" if reason is None else f"skipped ({reason})"))
    return "scratchnet devices: " + "; ".join(parts)


@pytest.fixture(params=DEVICES)
def device(request):
    """A device string usable now; the test runs once per backend."""
    return request.param
