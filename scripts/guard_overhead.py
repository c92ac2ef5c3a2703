"""What the divergence guard costs: ``sgd`` with the guard against
``guard=False`` on the article workload, in the same process, interleaved.

    python scripts/guard_overhead.py                       # CPU, guard_every 1
    python scripts/guard_overhead.py --every 1 8 64 --device cuda

The workload is the series' part 15 network (4-32-16-1, sigmoid/tanh/
linear, 10,000 samples, η = 0.1, λ = 0.01).  Each round times one call of
``--epochs`` epochs without the guard and one with it for every
``--every`` value, in an order that rotates every round (so a slow moment on
a shared machine hits each variant alike), and prints the median time per
epoch and the median of the per-round ratios guarded/unguarded, both for
wall-clock time and for this process's CPU time (on a shared CPU the wall
clock mostly measures the neighbours; CPU time is what the guard costs).

What the guard adds per chunk of ``guard_every`` epochs: the per-epoch cost
Σ(a − y)² written to a device slot (one reduction over the outputs), one
device-to-host read of the chunk's costs, a Python loop over them, and one
device copy of the flat parameter array (the snapshot).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch

import scratchnet as sn


def article(device: str, seed: int, n: int):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 4), dtype=np.float32)
    y = (np.sin(x[:, 0]) + np.cos(x[:, 1]) + np.tanh(x[:, 2]) + x[:, 3] ** 2)
    net = sn.inference_network(4, [sn.fully_connected(32, sn.sigmoid),
                                   sn.fully_connected(16, sn.tanh),
                                   sn.fully_connected(1, sn.linear)], device=device, seed=seed)
    return net, sn.training_network(net, x), y.reshape(-1, 1).astype(np.float32)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=50, help="epochs per timed call")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--every", type=int, nargs="+", default=[1], help="guard_every values")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    variants = [("guard=False", dict(guard=False))] + [
        (f"guard_every={k}", dict(guard=True, guard_every=k)) for k in args.every]
    nets = {name: article(args.device, 0, args.samples) for name, _ in variants}
    for name, kw in variants:   # warm up: first-call costs, allocations
        _, train, y = nets[name]
        sn.sgd(train, y, sn.quadratic_cost, 5, (0.1, 0.01), **kw)
    times = {name: [] for name, _ in variants}
    cpu = {name: [] for name, _ in variants}
    for r in range(args.rounds):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        for name, kw in order:
            _, train, y = nets[name]
            backend = train.backend
            backend.synchronize()
            start, start_cpu = time.perf_counter(), time.process_time()
            sn.sgd(train, y, sn.quadratic_cost, args.epochs, (0.1, 0.01), **kw)
            backend.synchronize()
            times[name].append((time.perf_counter() - start) / args.epochs)
            cpu[name].append((time.process_time() - start_cpu) / args.epochs)
    print(f"device {args.device}, {args.samples} samples, {args.rounds} rounds x "
          f"{args.epochs} epochs, torch threads {args.threads}")
    print(f"  {'variant':<16} {'wall ms/epoch':>14} {'wall ratio':>11} {'CPU ms/epoch':>13} "
          f"{'CPU ratio':>10}   (medians; ratio = per-round guarded / guard=False)")
    for name, _ in variants:
        wall = statistics.median(t / b for t, b in zip(times[name], times["guard=False"]))
        proc = statistics.median(t / b for t, b in zip(cpu[name], cpu["guard=False"]))
        print(f"  {name:<16} {1e3 * statistics.median(times[name]):>14.3f} {wall:>11.4f} "
              f"{1e3 * statistics.median(cpu[name]):>13.3f} {proc:>10.4f}")
    for net, train, _ in nets.values():
        train.close()
        net.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
