"""The package as an index would show it: the version written in one place,
MIT licence file, ``py.typed``, and the metadata a build produces."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
from pathlib import Path

import pytest

import scratchnet as sn

tomllib = pytest.importorskip("tomllib")   # Python 3.11+

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PEP440 = re.compile(r"^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?$")


def test_the_version_is_written_once():
    project = PYPROJECT["project"]
    assert "version" not in project and project["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "scratchnet.__version__"}
    assert PEP440.match(sn.__version__)
    # no other file of the package writes a version number
    written = [p for p in (ROOT / "scratchnet").rglob("*.py")
               if re.search(r"^__version__\s*=", p.read_text(encoding="utf-8"), re.M)]
    assert written == [ROOT / "scratchnet" / "__init__.py"]


def test_licence_and_typing_marker_ship():
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License\n")
    assert PYPROJECT["project"]["license"] == "MIT"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]
    assert (ROOT / "scratchnet" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["scratchnet"]


def test_built_metadata(tmp_path):
    """What setuptools writes for an index: the version from the source,
    the licence expression and file, URLs, classifiers and keywords."""
    code = ("import setuptools.build_meta as b, sys; "
            "print(b.prepare_metadata_for_build_wheel(sys.argv[1]))")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    info = tmp_path / proc.stdout.split()[-1]
    text = (info / "METADATA").read_text(encoding="utf-8")
    head = text.split("\n\n", 1)[0].splitlines()
    fields: dict[str, list[str]] = {}
    for line in head:
        key, _, value = line.partition(": ")
        fields.setdefault(key, []).append(value)
    assert fields["Version"] == [sn.__version__]
    assert fields["License-Expression"] == ["MIT"]
    assert fields["License-File"] == ["LICENSE"]
    assert (info / "licenses" / "LICENSE").is_file()
    assert {u.split(",")[0] for u in fields["Project-URL"]} >= {"Homepage", "Repository",
                                                               "Issues", "Documentation"}
    assert "Typing :: Typed" in fields["Classifier"]
    assert "deep learning" in fields["Keywords"][0]
    assert fields["Requires-Python"] == [PYPROJECT["project"]["requires-python"]]


def test_data_files_ship_with_the_package():
    """What the package reads at run time is package data, so a wheel (not
    only an editable install) has it: the OpenCL kernels and the native
    runner's source, which is compiled on the user's machine."""
    data = PYPROJECT["tool"]["setuptools"]["package-data"]
    patterns = {"scratchnet": data["scratchnet"], "opencl_ext": data["opencl_ext"]}
    for package, files in (("scratchnet", ["engine/native/epoch.cpp"]),
                           ("opencl_ext", [f"kernels/{p.name}" for p in
                                           (ROOT / "opencl_ext" / "kernels").glob("*.cl")])):
        for name in files:
            assert (ROOT / package / name).is_file()
            assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns[package]), name
