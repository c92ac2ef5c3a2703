"""The conformance suite's device parametrisation.

Every test that takes the ``device`` fixture runs once per registered backend
prefix (cpu, cuda, opencl, and any plugin found through the
``scratchnet.backends`` entry points).  A device that cannot be used here is
skipped with the backend's own reason (no GPU, no OpenCL platform, plugin not
installed), never an error at collection.

The CPU runs twice: ``cpu`` on the runner the engine picks (the native one
where it can be built) and ``cpu-reference`` on the readable reference
runner (``SCRATCHNET_RUNNER=reference`` for the test), so the conformance
suite holds both to the same standard.
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
        if prefix == "cpu":
            params.append(pytest.param(REFERENCE_CPU, id="cpu-reference"))
    return params


#: The ``device`` parameter that runs a CPU test on the reference runner.
REFERENCE_CPU = "cpu with SCRATCHNET_RUNNER=reference"


DEVICES = _device_params()


def pytest_report_header(config):
    """One line naming every backend and why any is skipped, and the CPU's
    automatic runner."""
    parts = []
    for prefix in backends.prefixes():
        if prefix != "meta":
            reason = backends.unavailable_reason(prefix)
            parts.append(f"{prefix}: " + ("runs" if reason is None else f"skipped ({reason})"))
    from scratchnet.engine import native  # built here once, before any worker needs it

    try:
        native.load()
        runner = "native (the 'cpu' tests) and reference (the 'cpu-reference' tests)"
    except native.NativeUnavailable as exc:
        runner = f"reference only: the native runner is unavailable ({exc})"
    return ["scratchnet devices: " + "; ".join(parts), f"scratchnet CPU runners: {runner}"]


@pytest.fixture(params=DEVICES)
def device(request, monkeypatch):
    """A device string usable now; the test runs once per backend (and the
    CPU once more on the reference runner)."""
    if request.param == REFERENCE_CPU:
        monkeypatch.setenv("SCRATCHNET_RUNNER", "reference")
        return "cpu"
    return request.param
