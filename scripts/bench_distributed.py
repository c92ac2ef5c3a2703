"""Scaling of data-parallel training on this machine: 1 process against 2.

    python scripts/bench_distributed.py                       # n = 100,000, article net
    python scripts/bench_distributed.py --samples 100000 --epochs 40 --rounds 5

Configurations, run interleaved round after round (the machine is shared, so
only side-by-side ratios and medians mean anything):

    1p x 1t   one process, one torch thread, no torch.distributed
    1p x 2t   one process, two torch threads (the same two cores, shared memory)
    2p x 1t   two gloo processes on 127.0.0.1 (torch.multiprocessing spawn),
              one thread each, half the samples each, one all-reduce per epoch

Each configuration trains the 4-32-16-1 article network full batch; the
timed part is ``--epochs`` epochs after ``--warmup`` epochs, between two
barriers.  For the 2-process runs the time spent inside the all-reduce
(the transfer, plus waiting for the slower rank) is measured too.
"""

from __future__ import annotations

import argparse
import datetime
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import scratchnet as sn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_distributed import article_layers, regression_data  # noqa: E402


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(rank: int, world: int, port: int, threads: int, samples: int, epochs: int,
            warmup: int, out: str) -> None:
    """One rank of one configuration; rank 0 writes 'seconds comm_seconds'."""
    torch.set_num_threads(threads)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world, timeout=datetime.timedelta(seconds=120))
    x, y = regression_data(samples, 0)
    rows = sn.distributed.shard(samples)
    net = sn.inference_network(4, article_layers(), seed=0)
    train = sn.distributed_training_network(net, x[rows])
    comm = [0.0]
    if train.all_reduce is not None:
        inner = train.all_reduce

        def timed(array):
            t = time.perf_counter()
            inner(array)
            comm[0] += time.perf_counter() - t
        train.all_reduce = timed
    sn.sgd(train, y[rows], sn.quadratic_cost, warmup, 0.1)
    if world > 1:
        dist.barrier()
    comm[0] = 0.0
    start = time.perf_counter()
    sn.sgd(train, y[rows], sn.quadratic_cost, epochs, 0.1)
    if world > 1:
        dist.barrier()
    seconds = time.perf_counter() - start
    latency = 0.0
    if world > 1:
        # The all-reduce alone, ranks in lockstep: its cost without the wait
        # for a rank the OS scheduled later.
        dist.barrier()
        t = time.perf_counter()
        for _ in range(200):
            inner(train.reduce_buffer)
        latency = (time.perf_counter() - t) / 200
    if rank == 0:
        Path(out).write_text(f"{seconds} {comm[0]} {latency}")
    if world > 1:
        dist.destroy_process_group()


def run_config(procs: int, threads: int, args) -> tuple[float, float, float]:
    """Spawn the configuration (even the 1-process one, so every run pays the
    same start-up outside the timed part); return (s per epoch, share of the
    time inside the all-reduce, s per all-reduce alone)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "result")
        ctx = mp.get_context("spawn")
        port = _free_port()
        ps = [ctx.Process(target=measure, args=(r, procs, port, threads, args.samples,
                                                args.epochs, args.warmup, out))
              for r in range(procs)]
        for p in ps:
            p.start()
        for p in ps:
            p.join()
        if any(p.exitcode for p in ps):
            raise RuntimeError(f"{procs}p x {threads}t failed: exit codes "
                               f"{[p.exitcode for p in ps]}")
        seconds, comm, latency = map(float, Path(out).read_text().split())
    return seconds / args.epochs, comm / seconds, latency


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    configs = [(1, 1), (1, 2), (2, 1)]
    times: dict = {c: [] for c in configs}
    shares: dict = {c: [] for c in configs}
    alone: list[float] = []
    for i in range(args.rounds):
        for c in configs:
            per_epoch, share, latency = run_config(*c, args)
            times[c].append(per_epoch)
            shares[c].append(share)
            if c[0] > 1:
                alone.append(latency)
        print(f"round {i + 1}/{args.rounds}: " + "  ".join(
            f"{p}p x {t}t {times[(p, t)][-1] * 1e3:.2f} ms" for p, t in configs), flush=True)
    base = statistics.median(times[(1, 1)])
    print(f"\nn = {args.samples}, 4-32-16-1, {args.epochs} epochs per run, {args.rounds} rounds "
          f"interleaved, medians ({torch.get_num_threads()} cores seen by torch)")
    print("| configuration | ms per epoch (median) | min .. max | speed-up vs 1p x 1t | "
          "time in all-reduce |")
    print("|---|---|---|---|---|")
    for p, t in configs:
        ms = [v * 1e3 for v in times[(p, t)]]
        med = statistics.median(ms)
        share = f"{statistics.median(shares[(p, t)]) * 100:.1f}%" if p > 1 else "-"
        print(f"| {p} process(es) x {t} thread(s) | {med:.2f} | {min(ms):.2f} .. {max(ms):.2f} "
              f"| {base * 1e3 / med:.2f}x | {share} |")
    ratios = [a / b for a, b in zip(times[(1, 1)], times[(2, 1)])]
    print("\nper-round speed-up of 2p x 1t over 1p x 1t: "
          + ", ".join(f"{r:.2f}" for r in ratios) + f"  (median {statistics.median(ratios):.2f})")
    print(f"all-reduce of the {4 * (705 + 1)} B buffer alone, ranks in lockstep: median "
          f"{statistics.median(alone) * 1e6:.0f} us per call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
