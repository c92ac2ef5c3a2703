"""A/B: this checkout's epoch loop against another git revision's, interleaved.

    python scripts/ab_epoch.py --against f0e2b6d           # n = 100, 1,000, 10,000
    python scripts/ab_epoch.py --against main --sizes 100 --reps 15

The other revision's ``scratchnet/`` is exported with ``git archive`` into a
temporary directory and imported under another name, so both loops run in
one process on the same data from the same weights, timed alternately
(A B A B …), one thread.  Prints the median ms per epoch of each and the
median of the per-repetition ratios.  Only ``inference_network``,
``training_network``, ``TrainingNetwork.load_y``, ``sgd.run_epochs`` and
``optim.SGD`` are used, which every revision since the core has.
"""

from __future__ import annotations

import argparse
import importlib
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

import scratchnet as sn


def load_revision(rev: str, into: pathlib.Path):
    """Import ``rev``'s scratchnet package as ``scratchnet_<rev>``."""
    name = "scratchnet_" + "".join(c if c.isalnum() else "_" for c in rev)
    root = pathlib.Path(__file__).resolve().parent.parent
    archive = subprocess.run(["git", "-C", str(root), "archive", rev, "scratchnet"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    (into / "scratchnet").rename(into / name)
    sys.path.insert(0, str(into))
    return importlib.import_module(name)


def setup(lib, n: int):
    rng = np.random.default_rng(0)
    x = rng.random((n, 4), dtype=np.float32)
    y = (np.sin(x[:, 0]) + np.cos(x[:, 1]) + np.tanh(x[:, 2]) + x[:, 3] ** 2).reshape(-1, 1)
    net = lib.inference_network(4, [lib.fully_connected(32, "sigmoid"),
                                    lib.fully_connected(16, "tanh"),
                                    lib.fully_connected(1, "linear")], seed=0)
    train = lib.training_network(net, x)
    train.load_y(y.astype(np.float32))
    run = importlib.import_module(lib.__name__ + ".sgd").run_epochs
    opt = lib.SGD(0.1, 0.01)
    return lambda k: run(train, lib.quadratic_cost, k, opt)


@torch.no_grad()
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--against", required=True, help="git revision to compare with (A)")
    p.add_argument("--sizes", default="100,1000,10000")
    p.add_argument("--reps", type=int, default=11)
    p.add_argument("--min-time", type=float, default=0.2, help="seconds per timed call")
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        other = load_revision(args.against, pathlib.Path(tmp))
        print(f"A = {args.against} ({other.__name__}), B = this checkout; 1 thread, "
              f"median of {args.reps} interleaved repetitions\n")
        print("| n | A ms/epoch | B ms/epoch | A / B |\n|---:|---:|---:|---:|")
        for n in (int(s) for s in args.sizes.split(",")):
            runs = {"A": setup(other, n), "B": setup(sn, n)}
            for run in runs.values():
                run(20)
            start = time.perf_counter()
            runs["B"](20)
            k = max(1, int(args.min_time / ((time.perf_counter() - start) / 20)))
            times = {"A": [], "B": []}
            for _ in range(args.reps):
                for name, run in runs.items():
                    start = time.perf_counter()
                    run(k)
                    times[name].append((time.perf_counter() - start) / k * 1e3)
            ratio = statistics.median(a / b for a, b in zip(times["A"], times["B"]))
            print(f"| {n:,} | {statistics.median(times['A']):.4f} "
                  f"| {statistics.median(times['B']):.4f} | **{ratio:.2f}×** |", flush=True)


if __name__ == "__main__":
    main()
