"""Where an epoch's time goes: a per-operation profile of scratchnet's loop.

    python scripts/profile_epoch.py                 # article network, n = 1,000, 1 thread
    python scripts/profile_epoch.py --n 100 --n 10000 --epochs 500

For each n it prints the wall time per epoch (no profiler attached), then the
``torch.profiler`` table of the ATen operations of ``--epochs`` epochs
(self time per call, calls per epoch), and how much of the wall time no ATen
operation accounts for: Python and dispatch overhead, the part that matters
at n = 100.  Only the public API and ``scratchnet.fit.sgd.run_epochs`` are used,
so the same command profiles older versions of the loop too.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

import scratchnet as sn
from scratchnet.fit.sgd import run_epochs
from scratchnet.nn.optim import SGD


def article(n: int):
    rng = np.random.default_rng(0)
    x = rng.random((n, 4), dtype=np.float32)
    y = (np.sin(x[:, 0]) + np.cos(x[:, 1]) + np.tanh(x[:, 2]) + x[:, 3] ** 2).reshape(-1, 1)
    net = sn.inference_network(4, [sn.fully_connected(32, sn.sigmoid),
                                   sn.fully_connected(16, sn.tanh),
                                   sn.fully_connected(1, sn.linear)], seed=0)
    train = sn.training_network(net, x)
    train.load_y(y.astype(np.float32))
    return train


@torch.no_grad()
def profile(n: int, epochs: int, reps: int) -> None:
    train = article(n)
    opt = SGD(0.1, 0.01)
    run_epochs(train, sn.quadratic_cost, 20, opt)
    walls = []
    for _ in range(reps):
        start = time.perf_counter()
        run_epochs(train, sn.quadratic_cost, epochs, opt)
        walls.append((time.perf_counter() - start) / epochs * 1e3)
    wall = statistics.median(walls)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        run_epochs(train, sn.quadratic_cost, epochs, opt)
    events = prof.key_averages()
    total_self = sum(e.self_cpu_time_total for e in events) / epochs / 1e3   # ms per epoch
    print(f"\n## n = {n:,}: {wall:.4f} ms per epoch (median of {reps} × {epochs} epochs, "
          f"{torch.get_num_threads()} thread(s), no profiler)")
    print("| ATen op | calls/epoch | µs/call | µs/epoch | share |\n|---|---:|---:|---:|---:|")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total):
        per_epoch = e.self_cpu_time_total / epochs
        if per_epoch < 0.05 * 1e3 * total_self / 100:   # hide ops under 0.05%
            continue
        print(f"| {e.key} | {e.count / epochs:g} | {e.self_cpu_time_total / e.count:.2f} "
              f"| {per_epoch:.1f} | {per_epoch / 10 / total_self:.1f}% |")
    print(f"\nATen self time {total_self:.4f} ms/epoch under the profiler; wall without it "
          f"{wall:.4f} ms: {max(wall - total_self, 0):.4f} ms/epoch "
          f"({max(wall - total_self, 0) / wall:.0%}) is Python and dispatch outside the ops")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, action="append", help="batch size (repeatable)")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    for n in args.n or [1000]:
        profile(n, args.epochs, args.reps)


if __name__ == "__main__":
    main()
