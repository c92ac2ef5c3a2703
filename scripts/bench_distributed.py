"""Scaling of data-parallel training on this machine: 1 process against 2.

    python scripts/bench_distributed.py                   # n = 100,000, article net
    python scripts/bench_distributed.py --samples 100000 --epochs 40 --rounds 5

Configurations, run interleaved round after round (the machine may be
shared, so only side-by-side ratios and medians mean anything):

    1p x 1t   one process, one torch thread, no torch.distributed
    1p x 2t   one process, two torch threads (the same two cores, shared memory)
    2p x 1t   two gloo processes on 127.0.0.1 (torch.multiprocessing spawn),
              one thread each, half the samples each, one all-reduce per epoch

Each configuration trains the 4-32-16-1 article network full batch at
η = 0.1; the timed part is --epochs epochs after --warmup epochs, between
two barriers.  For the 2-process runs the time spent inside the all-reduce
(the transfer, plus waiting for the slower rank) is measured too, and the
all-reduce alone, ranks in lockstep.  The summary table also goes to
<run>/summary.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (scripts/common.py, however this file is run)

SCRIPT = "bench_distributed"
CONFIGS = ((1, 1), (1, 2), (2, 1))   # (processes, threads per process)
LOCKSTEP_CALLS = 200


def build_parser():
    p = common.parser(__doc__)
    p.add_argument("--samples", type=common.positive_int, default=100_000,
                   help="samples over all processes")
    p.add_argument("--epochs", type=common.positive_int, default=40, help="timed epochs per run")
    p.add_argument("--warmup", type=common.nonnegative_int, default=3,
                   help="untimed epochs before them")
    p.add_argument("--rounds", type=common.positive_int, default=5,
                   help="rounds of the three configurations")
    common.add_log_dir(p, SCRIPT, " (the summary)")
    return p


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TimedAllReduce:
    """The training network's all-reduce, timed: every attribute is the
    wrapped one's, and calls add their wall-clock time to ``seconds``."""

    def __init__(self, inner):
        self.inner, self.seconds, self.warmup = inner, 0.0, 0.0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, array) -> None:
        with common.Stopwatch() as t:
            self.inner(array)
        self.seconds += t.seconds


def measure(rank: int, world: int, port: int, threads: int, samples: int, epochs: int,
            warmup: int, out: str) -> None:
    """One rank of one configuration; rank 0 writes 'seconds comm_seconds lockstep'."""
    import datetime

    import torch
    import torch.distributed as dist

    import scratchnet as sn

    torch.set_num_threads(threads)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world, timeout=datetime.timedelta(seconds=120))
    x, y = common.series_data(samples, 0)
    rows = sn.distributed.shard(samples)
    net = sn.inference_network(4, common.article_layers(), seed=0)
    training = sn.distributed_training_network(net, x[rows])
    inner = training.all_reduce
    if inner is not None:
        training.all_reduce = timed = TimedAllReduce(inner)
    sn.sgd(training, y[rows], sn.quadratic_cost, warmup, 0.1)
    if world > 1:
        dist.barrier()
    if inner is not None:
        timed.warmup = timed.seconds   # only the timed epochs' all-reduces count
    with common.Stopwatch() as run:
        sn.sgd(training, y[rows], sn.quadratic_cost, epochs, 0.1)
        if world > 1:
            dist.barrier()
    lockstep = 0.0
    if world > 1:
        # The all-reduce alone, ranks in lockstep: its cost without the wait
        # for a rank the OS scheduled later.
        dist.barrier()
        with common.Stopwatch() as alone:
            for _ in range(LOCKSTEP_CALLS):
                inner(training.reduce_buffer)
        lockstep = alone.seconds / LOCKSTEP_CALLS
    comm = 0.0 if inner is None else timed.seconds - timed.warmup
    if rank == 0:
        Path(out).write_text(f"{run.seconds} {comm} {lockstep}")
    if world > 1:
        dist.destroy_process_group()


def run_config(config: tuple[int, int], args) -> tuple[float, float, float]:
    """Spawn the configuration (even the 1-process one, so every run pays the
    same start-up outside the timed part); return (s per epoch, share of the
    time inside the all-reduce, s per all-reduce alone)."""
    import tempfile

    import torch.multiprocessing as mp

    procs, threads = config
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
        seconds, comm, lockstep = map(float, Path(out).read_text().split())
    return seconds / args.epochs, comm / seconds, lockstep


def main(argv=None) -> int:
    args, folder = common.start(build_parser(), argv, SCRIPT)
    import os

    results = common.interleave(CONFIGS, args.rounds, lambda c: run_config(c, args),
                                desc="configurations")
    times = {c: [r[0] for r in results[c]] for c in CONFIGS}
    base = common.stats(times[(1, 1)]).median
    rows = []
    for procs, threads in CONFIGS:
        ms = common.stats(v * 1e3 for v in times[(procs, threads)])
        share = (f"{common.stats(r[1] for r in results[(procs, threads)]).median * 100:.1f}%"
                 if procs > 1 else "-")
        rows.append([f"{procs} process(es) x {threads} thread(s)", f"{ms.median:.2f}",
                     ms.spread(spec=".2f"), f"{base * 1e3 / ms.median:.2f}x", share])
    ratios = [a / b for a, b in zip(times[(1, 1)], times[(2, 1)])]
    lockstep = common.stats(r[2] for r in results[(2, 1)])
    text = "\n".join([
        f"n = {args.samples}, 4-32-16-1, {args.epochs} epochs per run, {args.rounds} rounds "
        f"interleaved, medians ({os.cpu_count()} CPUs seen)",
        common.table(["configuration", "ms per epoch (median)", "min .. max",
                      "speed-up vs 1p x 1t", "time in all-reduce"], rows, align="lrrrr"),
        "",
        "per-round speed-up of 2p x 1t over 1p x 1t: "
        + ", ".join(f"{r:.2f}" for r in ratios)
        + f"  (median {common.stats(ratios).median:.2f})",
        f"all-reduce of the {4 * (705 + 1)} B buffer alone, ranks in lockstep: median "
        f"{lockstep.median * 1e6:.0f} us per call"])
    print(text)
    common.write_summary(folder, text, SCRIPT, argv)
    print(f"\nRun folder: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
