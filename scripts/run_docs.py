"""Run the ```python blocks of Markdown pages and check the output they state.

    python scripts/run_docs.py docs/series/*.md                 # on the CPU
    python scripts/run_docs.py docs/series/06-cuda-and-opencl.md --device opencl

For every page, a fresh Python interpreter (a subprocess, started in the
repository root with the repository on ``PYTHONPATH``) runs the page's
```python blocks in order, in one namespace, as a reader pasting them one
after the other would.  The environment holds ``SCRATCHNET_DEVICE`` (``cpu``
unless ``--device`` says otherwise); pages read it with
``device = os.environ.get("SCRATCHNET_DEVICE", "cpu")``, so a block copied
into a terminal runs on the CPU.

Expected output: an ```output block that follows a python block, with only
blank lines between them, holds that block's expected stdout.  Blocks
without one are run but their output is not checked; an output block that
follows no python block fails the page.  Other fences
(```bash, ```text, ```console, ...) are never run.

Comparison, line by line, after trailing spaces (and trailing blank lines)
are stripped:

* ``...`` inside an expected line matches any text, empty included (a
  timing, a path, a memory address).  It never spans lines: an expected
  line ``...`` matches exactly one actual line.
* every number in an expected line must meet a number in the actual line
  with ``|actual - expected| <= rtol * max(|actual|, |expected|)``,
  ``rtol = 1e-5`` by default (``--rtol``).  1e-5 is about 80 float32 ulps:
  a float32 value computed in a different order on another device, then
  printed with up to seven significant digits, passes; a value that is
  wrong in its fifth digit does not.  Pages that print float32 results
  therefore print at most six significant digits.
* all other text must be equal.

A page fails on the first block that raises (the message names the page
and the line, with the traceback) or whose output differs (the message
names the page, the block's line, the expected and the actual line).  The
exit status is 0 when every page passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RTOL = 1e-5

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*?)[ \t]*$")
_NUMBER = r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?"
_TOKEN = re.compile(rf"(?P<ellipsis>\.\.\.)|(?P<number>{_NUMBER})")

# Runs in the fresh interpreter: reads the blocks as JSON on stdin, runs
# them in one namespace, appends one JSON line per block to the result file.
_CHILD = r"""
import contextlib, io, json, sys, traceback
blocks = json.load(sys.stdin)
result_path = sys.argv[1]
namespace = {"__name__": "__main__"}
for block in blocks:
    out = io.StringIO()
    record = {"line": block["line"], "stdout": "", "error": None}
    try:
        code = compile("\n" * block["line"] + block["source"], block["page"], "exec")
        with contextlib.redirect_stdout(out):
            exec(code, namespace)
    except BaseException:
        kind, exc, tb = sys.exc_info()
        record["error"] = "".join(traceback.format_exception(kind, exc, tb.tb_next))
    record["stdout"] = out.getvalue()
    with open(result_path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    if record["error"] is not None:
        break
"""


class Block:
    """One fenced python block: the 1-based line of its opening fence, its
    source, and its expected output (None: not checked) with the line of
    that output's opening fence."""

    def __init__(self, line: int, source: str):
        self.line = line
        self.source = source
        self.expected: str | None = None
        self.expected_line = 0


def parse_page(text: str) -> list[Block]:
    """The page's python blocks in order, each with the output block that
    follows it (if any).  ``ValueError`` for an output block that follows no
    python block: it would otherwise be silently unchecked."""
    lines = text.splitlines()
    blocks: list[Block] = []
    last_python: Block | None = None   # candidate owner of a following output block
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            if lines[i].strip():
                last_python = None
            i += 1
            continue
        indent, fence = m.group("indent"), m.group("fence")
        info = m.group("info").split()
        lang = info[0].lower() if info else ""
        start = i + 1
        j = start
        while j < len(lines):
            close = lines[j].strip()
            if close.startswith(fence[0] * len(fence)) and set(close) == {fence[0]}:
                break
            j += 1
        body = [ln[len(indent):] if ln.startswith(indent) else ln.lstrip()
                for ln in lines[start:j]]
        source = "\n".join(body) + "\n"
        if lang == "python":
            block = Block(start, source)
            blocks.append(block)
            last_python = block
        elif lang == "output":
            if last_python is None or last_python.expected is not None:
                raise ValueError(f"line {start}: an output block must follow a python block "
                                 f"(only blank lines between them)")
            last_python.expected = source
            last_python.expected_line = start
            last_python = None
        else:
            last_python = None
        i = j + 1
    return blocks


def _pattern(expected_line: str) -> tuple[re.Pattern, list[str]]:
    """A regex for one expected line (``...`` -> any text, numbers ->
    captured) and the expected numbers in order."""
    parts, numbers, at = [], [], 0
    for m in _TOKEN.finditer(expected_line):
        parts.append(re.escape(expected_line[at:m.start()]))
        if m.group("ellipsis"):
            parts.append(".*?")
        else:
            parts.append(f"({_NUMBER})")
            numbers.append(m.group("number"))
        at = m.end()
    parts.append(re.escape(expected_line[at:]))
    return re.compile("".join(parts)), numbers


def line_matches(expected: str, actual: str, rtol: float) -> bool:
    """True when ``actual`` matches ``expected`` (see the module docstring)."""
    if expected == actual:
        return True
    pattern, numbers = _pattern(expected)
    m = pattern.fullmatch(actual)
    if m is None:
        return False
    for want, got in zip(numbers, m.groups()):
        w, g = float(want), float(got)
        if not math.isclose(g, w, rel_tol=rtol, abs_tol=0.0):
            return False
    return True


def _lines(text: str) -> list[str]:
    out = [ln.rstrip() for ln in text.splitlines()]
    while out and not out[-1]:
        out.pop()
    return out


def compare(expected: str, actual: str, rtol: float) -> tuple[int, str, str] | None:
    """None when the outputs match, else (index, expected line, actual line)
    of the first difference ("<no line>" where one output is shorter)."""
    want, got = _lines(expected), _lines(actual)
    for k in range(max(len(want), len(got))):
        w = want[k] if k < len(want) else "<no line>"
        g = got[k] if k < len(got) else "<no line>"
        if k >= len(want) or k >= len(got) or not line_matches(w, g, rtol):
            return k, w, g
    return None


def run_page(page: Path, device: str, rtol: float, timeout: float,
             verbose: bool) -> tuple[bool, str]:
    """Run one page; (passed, report)."""
    shown = os.path.relpath(page)
    try:
        blocks = parse_page(page.read_text(encoding="utf-8"))
    except ValueError as exc:
        return False, f"FAIL {shown}: {exc}"
    if not blocks:
        return True, f"PASS {shown}: no python block"
    payload = json.dumps([{"line": b.line, "source": b.source, "page": str(page)}
                          for b in blocks])
    env = dict(os.environ)
    env["SCRATCHNET_DEVICE"] = device
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    with tempfile.TemporaryDirectory() as tmp:
        result_path = os.path.join(tmp, "results.jsonl")
        start = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-c", _CHILD, result_path], input=payload,
                                  capture_output=True, text=True, cwd=ROOT, env=env,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return False, f"FAIL {shown}: did not finish within {timeout:g} s"
        seconds = time.perf_counter() - start
        records = []
        if os.path.exists(result_path):
            with open(result_path, encoding="utf-8") as f:
                records = [json.loads(line) for line in f if line.strip()]
    stderr_tail = "\n".join(proc.stderr.splitlines()[-20:])
    checked = 0
    for block, record in zip(blocks, records):
        if verbose and record["stdout"]:
            print(f"--- {shown}:{block.line} stdout\n{record['stdout']}", end="")
        if record["error"] is not None:
            return False, (f"FAIL {shown}:{block.line}: the block starting at line {block.line} "
                           f"raised an exception\n{record['error'].rstrip()}")
        if block.expected is not None:
            checked += 1
            diff = compare(block.expected, record["stdout"], rtol)
            if diff is not None:
                k, want, got = diff
                actual = "\n".join("    " + ln for ln in _lines(record["stdout"]))
                return False, (
                    f"FAIL {shown}:{block.line}: the output of the block starting at line "
                    f"{block.line} differs at output line {k + 1} (page line "
                    f"{block.expected_line + 1 + k})\n"
                    f"  expected: {want}\n  actual:   {got}\n"
                    f"  whole actual output:\n{actual}")
    if len(records) < len(blocks):
        return False, (f"FAIL {shown}: the interpreter stopped after {len(records)} of "
                       f"{len(blocks)} blocks (exit status {proc.returncode})\n{stderr_tail}")
    return True, (f"PASS {shown}: {len(blocks)} blocks, {checked} outputs checked, "
                  f"{seconds:.1f} s on {device}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Run the ```python blocks of Markdown pages in a fresh interpreter each "
                    "and check every ```output block (see the module docstring).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("pages", nargs="+", type=Path, help="Markdown pages to run")
    parser.add_argument("--device", default="cpu",
                        help="value of SCRATCHNET_DEVICE for the pages (cpu, cuda, opencl, ...)")
    parser.add_argument("--rtol", type=float, default=DEFAULT_RTOL,
                        help="relative tolerance for numbers in expected output")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds one page may run")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print every block's output as it is checked")
    args = parser.parse_args(argv)
    if not args.rtol >= 0:
        parser.error(f"--rtol: expected a number >= 0, got {args.rtol}")
    if not args.timeout > 0:
        parser.error(f"--timeout: expected a number > 0, got {args.timeout}")
    missing = [str(p) for p in args.pages if not p.is_file()]
    if missing:
        parser.error(f"pages: no such file: {', '.join(missing)}")
    failed = 0
    for page in args.pages:
        passed, report = run_page(page.resolve(), args.device, args.rtol, args.timeout,
                                  args.verbose)
        print(report, flush=True)
        failed += not passed
    if len(args.pages) > 1:
        print(f"{len(args.pages) - failed} of {len(args.pages)} pages passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
