"""Replay part 16's comparison table: vanilla gradient descent, weight decay,
and momentum on a 4-8-8-1 network, the cost every 50 epochs up to 400.

    python scripts/momentum.py                    # seed 1, CPU
    python scripts/momentum.py --seeds 0 1 2 --device opencl

The series' columns are [η λ μ] = [0.2 0 0], [0.2 0.02 0], [0.2 0.02 0.01];
this adds μ = 0.9 and Nesterov and Adam (η = 0.01) for comparison.  Every
column starts from the same initialisation (the blog re-created the network
for each column, so its columns also differ by their random start).  The
divergence guard is off, as in the series: a column whose cost becomes
inf/NaN prints "diverged".
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np
import torch

import scratchnet as sn

COLUMNS = [("[0.2 0 0]", (0.2, 0.0, 0.0)), ("[0.2 0.02 0]", (0.2, 0.02, 0.0)),
           ("[0.2 0.02 0.01]", (0.2, 0.02, 0.01)), ("[0.2 0.02 0.9]", (0.2, 0.02, 0.9)),
           ("nesterov 0.9", sn.SGD(0.2, 0.02, 0.9, nesterov=True)),
           ("adam 0.01", sn.Adam(0.01))]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x = rng.random((10_000, 4), dtype=np.float32)
    y = (np.sin(x[:, 0]) + np.cos(x[:, 1]) + np.tanh(x[:, 2]) + x[:, 3] ** 2)
    y = y.reshape(-1, 1).astype(np.float32)
    for seed in args.seeds:
        table = []
        for _, hyper in COLUMNS:
            layers = [sn.fully_connected(8, sn.sigmoid), sn.fully_connected(8, sn.tanh),
                      sn.fully_connected(1, sn.linear)]
            with sn.inference_network(4, layers, device=args.device, seed=seed) as net, \
                    sn.training_network(net, x) as train:
                # guard=False: the series has no divergence guard, and its
                # factor-1000 rule also stops transient spikes that recover
                costs = sn.sgd(train, y, sn.quadratic_cost, [(50, hyper)] * 8, guard=False)
                table.append(costs)
        print(f"seed {seed}, {args.device}: cost after each 50 epochs")
        print("epoch " + "".join(f"{name:>17}" for name, _ in COLUMNS))
        for i in range(8):
            print(f"{50 * (i + 1):5d} " + "".join(
                f"{format(col[i], '.4g') if math.isfinite(col[i]) else 'diverged':>17}"
                for col in table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
