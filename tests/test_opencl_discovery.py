"""OpenCL device discovery tells the truth: a device counts only if it can
compile, ``"opencl"`` picks the first one that can, and a listed but broken
device is reported with its reason and the fix.

Unlike the other OpenCL test files this one does not skip when no device
works: that case is what it checks (the last test hides every working
platform from a child process)."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

cl = pytest.importorskip(
    "pyopencl", reason="pyopencl is not installed: pip install 'scratchnet[opencl]'")

from opencl_ext import devices  # noqa: E402
from opencl_ext.backend import OpenCLBackend  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BROKEN_LOG = ("clBuildProgram failed: BUILD_PROGRAM_FAILURE\n\nBuild on <pyopencl.Device "
              "'pthread-AMD EPYC'>:\n\nerror: unknown target CPU 'generic'\nDevice "
              "pthread-AMD EPYC failed to build the program")


def _fake_device(version="OpenCL 3.0 PoCL 3.0-rc2  Linux, Release, RELOC, LLVM 14.0.6"):
    platform = types.SimpleNamespace(name="Portable Computing Language", version=version)
    return types.SimpleNamespace(platform=platform, name="pthread-AMD EPYC",
                                 driver_version="3.0-rc2", int_ptr=12345)


@pytest.fixture
def fresh_probes(monkeypatch):
    """An empty probe cache, so that this test's probes are its own."""
    monkeypatch.setattr(devices, "_probes", {})


def test_a_broken_compiler_is_reported_with_the_fix():
    reason = devices._build_failure(_fake_device(), cl.RuntimeError(BROKEN_LOG))
    assert reason == ("PoCL 3.0 (LLVM 14) cannot compile for this CPU (error: unknown target "
                      "CPU 'generic'); install Debian's pocl-opencl-icd or a newer PoCL")
    other = devices._build_failure(_fake_device("OpenCL 2.1 Vendor X"),
                                   cl.RuntimeError("build\nerror: out of resources"))
    assert other == "it cannot compile OpenCL C (error: out of resources)"


def test_the_probe_runs_once_per_device(fresh_probes, monkeypatch):
    """The verdict is cached per process: a second probe builds nothing."""
    real = OpenCLBackend.available_devices("opencl")
    if not real:
        pytest.skip(str(OpenCLBackend.unavailable_reason("opencl")))
    device = devices.listed()[real[0]]
    devices._probes.clear()
    builds = []
    program = cl.Program

    def counting(*args, **kw):
        builds.append(args)
        return program(*args, **kw)

    monkeypatch.setattr(cl, "Program", counting)
    assert devices.probe(device) is None
    assert devices.probe(device) is None
    assert len(builds) == 1


def test_opencl_picks_the_first_device_that_compiles(fresh_probes, monkeypatch):
    """A broken device listed first (as the pip PoCL can be) is skipped by
    "opencl", refused by name with its reason, and not counted."""
    working = OpenCLBackend.available_devices("opencl")
    if not working:
        pytest.skip(str(OpenCLBackend.unavailable_reason("opencl")))
    real = devices.listed()[working[0]]
    broken = _fake_device()
    devices._probes[devices._identity(broken)] = devices._build_failure(
        broken, cl.RuntimeError(BROKEN_LOG))
    monkeypatch.setattr(devices, "listed",
                        lambda: {"opencl:0:0": broken, "opencl:1:0": real})
    assert OpenCLBackend.available_devices("opencl") == ["opencl:1:0"]
    assert OpenCLBackend.unavailable_reason("opencl") is None
    with OpenCLBackend.open("opencl", torch.float32) as be:
        assert be.device == "opencl:1:0"
        assert be.amax(be.from_host(torch.tensor([1.0, -4.0]))) == 4.0
    with pytest.raises(ValueError, match=r"device: 'opencl:0:0' \(pthread-AMD EPYC, OpenCL 3.0 "
                                         r"PoCL 3.0-rc2.*\) is listed but unusable: PoCL 3.0 "
                                         r"\(LLVM 14\) cannot compile.*Working OpenCL "
                                         r"devices: opencl:1:0"):
        OpenCLBackend.open("opencl:0:0", torch.float32)


def test_only_broken_devices_make_opencl_unavailable(fresh_probes, monkeypatch):
    broken = _fake_device()
    devices._probes[devices._identity(broken)] = "it cannot compile OpenCL C (error: x)"
    monkeypatch.setattr(devices, "platforms", lambda: [broken.platform])
    monkeypatch.setattr(devices, "listed", lambda: {"opencl:0:0": broken})
    reason = OpenCLBackend.unavailable_reason("opencl")
    assert reason == ("no OpenCL device can compile kernels: opencl:0:0 (pthread-AMD EPYC): "
                      "it cannot compile OpenCL C (error: x)")
    assert OpenCLBackend.available_devices("opencl") == []
    with pytest.raises(ValueError, match="device: 'opencl': no OpenCL device can compile"):
        OpenCLBackend.open("opencl", torch.float32)


def test_importing_the_package_does_not_import_pyopencl():
    """``import opencl_ext`` stays cheap (and works without pyopencl)."""
    code = "import sys, opencl_ext; print('pyopencl' in sys.modules)"
    child = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                           text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "False"


_CHILD = """
import scratchnet as sn
from scratchnet import backends
reason = backends.unavailable_reason("opencl")
print("REASON", reason)
if reason is not None:
    try:
        sn.inference_network(4, [sn.fully_connected(1, sn.linear)], device="opencl")
    except ValueError as exc:
        print("VALUEERROR", exc)
"""


def test_a_machine_with_only_the_broken_pip_pocl(tmp_path):
    """The pip PoCL 3.0 (LLVM 14) alone, through OCL_ICD_VENDORS: where it
    cannot compile for this CPU, device="opencl" raises a ValueError saying
    so and the conformance tests skip instead of failing."""
    icd = Path(cl.__file__).parent / ".libs" / "pocl.icd"
    if not icd.exists():
        pytest.skip("pyopencl has no bundled PoCL ICD here")
    vendors = tmp_path / "vendors"
    vendors.mkdir()
    (vendors / "pocl.icd").write_text(icd.read_text())
    env = {**os.environ, "OCL_ICD_VENDORS": str(vendors), "PYTHONPATH": str(ROOT)}
    child = subprocess.run([sys.executable, "-c", _CHILD], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr
    if "REASON None" in child.stdout:
        pytest.skip("the pip PoCL compiles on this CPU: nothing broken to hide behind")
    assert "cannot compile" in child.stdout
    assert "VALUEERROR device: 'opencl' is not available: no OpenCL device can compile" \
        in child.stdout
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            "-k", "opencl", "tests/test_opencl_vs_cpu.py",
                            "tests/test_opencl_kernels.py", "tests/test_sgd.py"],
                           env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert tests.returncode == 0, tests.stdout[-2000:]
    assert " skipped" in tests.stdout and " passed" not in tests.stdout
    assert "failed" not in tests.stdout and "error" not in tests.stdout
