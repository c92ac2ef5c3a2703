"""Every ```python block of README.md and docs/ runs as written and prints
what its page says (``scripts/run_docs.py``), and the runner itself fails
when a page is wrong."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "scripts" / "run_docs.py"

_spec = importlib.util.spec_from_file_location("run_docs", RUNNER)
run_docs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_docs)

#: Pages that take over ~20 s on a 2-core machine (relative to docs/).
SLOW_PAGES: set[str] = {"series/10-the-backward-pass.md", "series/15-weight-decay.md"}


def _pages():
    params = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        try:
            if not run_docs.parse_page(page.read_text(encoding="utf-8")):
                continue   # nothing to run
        except ValueError:
            pass           # a malformed page is collected: its run reports why
        name = page.relative_to(ROOT / "docs").as_posix() if page.parent != ROOT else page.name
        marks = [pytest.mark.slow] if name in SLOW_PAGES else []
        params.append(pytest.param(page, id=name, marks=marks))
    return params


def run(*args, timeout=900):
    return subprocess.run([sys.executable, str(RUNNER), *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout)


@pytest.mark.parametrize("page", _pages())
def test_page_runs_as_written(page):
    """The page's blocks run in a fresh interpreter on the CPU and print
    what its output blocks state."""
    proc = run(page, "--device", "cpu")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("PASS")


def write(tmp_path, name, text):
    page = tmp_path / name
    page.write_text(text, encoding="utf-8")
    return page


GOOD = """# A page

```python
import os
device = os.environ.get("SCRATCHNET_DEVICE", "cpu")
x = 0.1 + 0.2
print(f"x = {x:.7f} on {device}")
print("took 12.3 ms")
```

```output
x = 0.3000000 on cpu
took ... ms
```

Some prose.

```bash
exit 3
```

```python
print(x * 1e6)
```

```output
300000.0000000001
```
"""


def test_runner_passes_a_correct_page(tmp_path):
    """Numbers within rtol, ``...`` for any text, a bash block not run,
    SCRATCHNET_DEVICE set, the namespace shared between blocks."""
    proc = run(write(tmp_path, "good.md", GOOD))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 blocks, 2 outputs checked" in proc.stdout


def test_runner_fails_on_a_perturbed_output(tmp_path):
    """One expected number changed in its fourth digit: the runner exits 1
    and names the page, the block's line, the expected and the actual line."""
    page = write(tmp_path, "bad.md", GOOD.replace("x = 0.3000000", "x = 0.3001000"))
    proc = run(page)
    assert proc.returncode == 1
    assert "FAIL" in proc.stdout and "bad.md:3:" in proc.stdout
    assert "expected: x = 0.3001000 on cpu" in proc.stdout
    assert "actual:   x = 0.3000000 on cpu" in proc.stdout


def test_runner_fails_on_a_missing_line(tmp_path):
    page = write(tmp_path, "short.md", "```python\nprint(1)\n```\n\n```output\n1\n2\n```\n")
    proc = run(page)
    assert proc.returncode == 1
    assert "expected: 2" in proc.stdout and "actual:   <no line>" in proc.stdout


def test_runner_fails_on_an_exception(tmp_path):
    """A raising block fails the page with its traceback, pointing at the
    page's own line; later blocks do not run."""
    page = write(tmp_path, "raises.md", "```python\nx = 1\n```\n\n```python\n\n"
                 "raise ValueError('no such weights')\n```\n\n```python\nprint('after')\n```\n")
    proc = run(page)
    assert proc.returncode == 1
    assert "raises.md:5:" in proc.stdout
    assert "ValueError: no such weights" in proc.stdout
    assert 'raises.md", line 7' in proc.stdout
    assert "after" not in proc.stdout


def test_runner_refuses_an_orphan_output_block(tmp_path):
    """An output block after prose would go unchecked: the page fails."""
    page = write(tmp_path, "orphan.md", "```python\nprint(1)\n```\n\nProse.\n\n"
                 "```output\n2\n```\n")
    proc = run(page)
    assert proc.returncode == 1
    assert "line 7: an output block must follow a python block" in proc.stdout


def test_runner_runs_each_page_in_a_fresh_interpreter(tmp_path):
    """A name defined by one page is unknown to the next."""
    first = write(tmp_path, "first.md", "```python\nshared = 1\n```\n")
    second = write(tmp_path, "second.md", "```python\nprint(shared)\n```\n")
    proc = run(first, second)
    assert proc.returncode == 1
    assert proc.stdout.count("PASS") == 1
    assert "NameError" in proc.stdout


def test_runner_passes_the_device(tmp_path):
    page = write(tmp_path, "device.md", "```python\nimport os\n"
                 "print(os.environ['SCRATCHNET_DEVICE'])\n```\n\n```output\nmeta\n```\n")
    assert run(page, "--device", "meta").returncode == 0
    assert run(page).returncode == 1


@pytest.mark.parametrize("expected, actual, ok", [
    ("cost 0.0020987028", "cost 0.0020987031", True),      # float32 reordering
    ("cost 0.0020987028", "cost 0.0020988028", False),     # wrong in the 5th digit
    ("[0.44, 0.44]", "[0.44, 0.45]", False),
    ("took ... ms (...)", "took 12.5 ms (2 threads)", True),
    ("took ... ms", "took 12.5 s", False),
    ("-0.00", "0.00", True),
    ("1e-5", "1.000001e-05", True),
    ("a b", "a  b", False),
])
def test_line_comparison(expected, actual, ok):
    assert run_docs.line_matches(expected, actual, run_docs.DEFAULT_RTOL) is ok


def test_help_imports_nothing_heavy():
    """``--help`` parses arguments before anything heavy is imported."""
    code = "\n".join([
        "import runpy, sys",
        "sys.argv = ['run_docs.py', '--help']",
        "try:",
        f"    runpy.run_path({str(RUNNER)!r}, run_name='__main__')",
        "except SystemExit:",
        "    pass",
        "heavy = {'torch', 'numpy', 'scratchnet'} & set(sys.modules)",
        "print('HEAVY' if heavy else 'LIGHT')"])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert "--device DEVICE" in proc.stdout and "(default: cpu)" in proc.stdout
    assert proc.stdout.strip().endswith("LIGHT")
