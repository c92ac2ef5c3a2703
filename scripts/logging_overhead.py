"""What does TensorBoard logging cost?  ``sgd`` on the article's workload with
and without ``log_dir=``, timed side by side.

    python scripts/logging_overhead.py --rounds 21      # CPU, as in the README
    python scripts/logging_overhead.py --device cuda --rounds 30

Workload: the 4-32-16-1 network (sigmoid, tanh, linear) on the series' task,
10,000 samples, (η, λ) = (0.1, 0.01).  Each round runs one ``sgd`` call of
``--epochs`` epochs per configuration, in an order rotated every round
(interleaved, so a noisy neighbour slows every configuration alike); every
configuration trains its own network continuously.  Reported: the median
time per epoch and the median over rounds of each round's ratio to the
no-logging call of the same round, both in wall-clock time and in the
process's CPU time (all its threads).  On the CPU backend all the work is this
process's, so on a shared, overloaded machine the CPU time is the steadier
measure: there the scheduler can stretch a compute-bound call's wall time
several-fold (seen here: no-logging calls *slower* than logging ones).  On a
GPU only the wall time means anything.

Configurations: no logging; ``log_every=1`` (every tag, every epoch: two host
reads per epoch); ``log_every=1`` with a 10,000-sample ``test=`` pair (one
more forward pass per epoch); ``log_every=10``.  Each logging call opens and
closes its own writer (``log_dir`` a path), as a user's call would.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import numpy as np
import torch
from weight_decay import regression_data  # the series' task

import scratchnet as sn

CONFIGS = {
    "no logging": {},
    "log_every=1": {"log_every": 1},
    "log_every=1, test=": {"log_every": 1, "test": True},
    "log_every=10": {"log_every": 10},
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=200, help="epochs per sgd call")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: steadier on a shared machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    x, y = regression_data(args.samples, rng)
    x_test, y_test = regression_data(args.samples, rng)
    layers = [sn.fully_connected(32, sn.sigmoid), sn.fully_connected(16, sn.tanh),
              sn.fully_connected(1, sn.linear)]
    trains = {name: sn.training_network(
        sn.inference_network(4, layers, device=args.device, seed=0), x) for name in CONFIGS}
    names = list(CONFIGS)
    times = {name: [] for name in names}   # (wall, cpu) seconds per call
    with tempfile.TemporaryDirectory() as root:
        def call(name, epochs):
            kw = dict(CONFIGS[name])
            if kw:
                kw["log_dir"] = f"{root}/{name}"
                if kw.pop("test", False):
                    kw["test"] = (x_test, y_test)
            train = trains[name]
            train.backend.synchronize()
            wall, cpu = time.perf_counter(), time.process_time()
            sn.sgd(train, y, sn.quadratic_cost, epochs, (0.1, 0.01), **kw)
            train.backend.synchronize()
            return time.perf_counter() - wall, time.process_time() - cpu

        for name in names:       # warm-up: first writer, imports, caches
            call(name, 5)
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                times[name].append(call(name, args.epochs))

    base = times["no logging"]
    print(f"sgd on {args.device}, {args.samples} samples, 4-32-16-1, {args.rounds} rounds "
          f"of {args.epochs} epochs, {args.threads} threads; medians")
    print(f"  {'configuration':<20} | {'wall ms/epoch':>13} {'× none':>7} | "
          f"{'CPU ms/epoch':>12} {'× none':>7}")
    for name in names:
        row = []
        for k in (0, 1):   # wall, cpu
            per_epoch = statistics.median(t[k] for t in times[name]) / args.epochs * 1e3
            ratio = statistics.median(t[k] / b[k] for t, b in zip(times[name], base))
            row += [per_epoch, ratio]
        print(f"  {name:<20} | {row[0]:>13.3f} {row[1]:>7.3f} | {row[2]:>12.3f} {row[3]:>7.3f}")
    for train in trains.values():
        train.close()
        train.net.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
