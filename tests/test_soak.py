"""A short soak (10^4 epochs) in a fresh process: resident memory and live
Python objects must not grow once training is warm.  The long version
(10^5 epochs) is ``python scripts/soak.py``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "soak.py"


def test_short_soak_does_not_grow(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--epochs", "10000", "--per-call", "500",
                          "--checkpoint-every", "1000", "--max-growth-mb", "1",
                          "--log-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=300,
                         # this checkout's scratchnet, not an installed one
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stdout + out.stderr
    rss = float(re.search(r"\| RSS \(MiB\) .*\| *([+-][\d.]+) \|", out.stdout).group(1))
    objects = int(re.search(r"\| Python objects .*\| *([+-]\d+) \|", out.stdout).group(1))
    assert rss < 1.0 and objects < 50, out.stdout
    assert "epochs 1500 -> 10000" in out.stdout
    assert "last checkpoint equals the final network: True" in out.stdout
    # the run folder holds the checkpoint the script compared, and the summary it printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["soak.ckpt", "summary.md"]
    assert "RSS (MiB)" in (tmp_path / "summary.md").read_text()
