"""Train the series' regression network data-parallel over processes and
machines, on torch.distributed, launched by torchrun.

One host, two processes on the CPU (gloo), full batch, then mini-batches:

    torchrun --nproc_per_node=2 scripts/train_distributed.py --device cpu --epochs 1000
    torchrun --nproc_per_node=2 scripts/train_distributed.py --epochs 20 --batch-size 250

Several hosts (here two, one process per GPU, NCCL); the same command on
every host, --node_rank 0 on the host whose address is the endpoint:

    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=gpu \\
        --rdzv_backend=c10d --rdzv_endpoint=HOST0:29500 --rdzv_id=sn1 \\
        scripts/train_distributed.py --device cuda --epochs 1000

Without torchrun (python scripts/train_distributed.py) it is one process.

Every rank draws the same data set from --seed (x ~ U[0, 1)⁴,
y = sin x0 + cos x1 + tanh x2 + x3²), keeps its shard of the rows (sizes
differing by at most one) and builds the 4-32-16-1 network of the series.
Full batch (the default): sgd on sn.distributed_training_network, one
all-reduce of the gradient buffer per epoch, in --calls calls; the weights
are those of one process on the whole data set.  With --batch-size B: one
sn.train(..., distributed=True) call, one all-reduce per step, each step
equal to one process training on the ranks' k-th batches concatenated.
The initial weights come from --seed on every rank and are broadcast from
rank 0 anyway (so --resume, read by rank 0 alone, reaches every rank).

Rank 0 alone prints, shows progress, logs to TensorBoard (the run folder,
--log-dir) and writes checkpoints (--checkpoint, every --checkpoint-every
epochs), through the log_dir and checkpoint keywords and sn.save.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (scripts/common.py, however this file is run)

SCRIPT = "train_distributed"


def regression_data(n: int, seed: int):
    """The series' task, drawn in full on every rank from ``seed`` so every
    rank agrees on the data set without sending it."""
    return common.series_data(n, seed)


def build_parser():
    p = common.parser(__doc__)
    common.add_device(p, help="cpu (gloo), cuda (NCCL, cuda:LOCAL_RANK per rank), opencl "
                              "(gloo, through host copies)")
    p.add_argument("--epochs", type=common.nonnegative_int, default=1000,
                   help="epochs (passes over the data)")
    p.add_argument("--samples", type=common.positive_int, default=10_000,
                   help="samples over all ranks")
    p.add_argument("--seed", type=common.nonnegative_int, default=0,
                   help="seed of the data, the weights and the batches")
    p.add_argument("--eta", type=common.positive_float, default=0.1, help="learning rate η")
    p.add_argument("--lam", type=common.nonnegative_float, default=0.0, help="weight decay λ")
    p.add_argument("--batch-size", type=common.positive_int, default=None,
                   help="mini-batches of this many samples per rank, through sn.train "
                        "(default: full batch, through sgd)")
    p.add_argument("--calls", type=common.positive_int, default=10,
                   help="full batch: split the epochs into this many sgd calls, a progress "
                        "line each")
    common.add_log_dir(p, SCRIPT, " (rank 0: TensorBoard, the summary)")
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint file that rank 0 writes (default: none)")
    p.add_argument("--checkpoint-every", type=common.positive_int, default=100,
                   metavar="EPOCHS", help="epochs between checkpoints")
    p.add_argument("--resume", default=None,
                   help="checkpoint to start from, read by rank 0 (default: start from --seed)")
    p.add_argument("--timeout", type=common.positive_float, default=60.0,
                   help="seconds a collective may wait for a peer before failing")
    p.add_argument("--threads", type=common.positive_int, default=None,
                   help="torch threads per rank (default: torch's, or 1 under torchrun)")
    return p


def full_batch(args, training, y, folder, say, bar) -> tuple[float, float]:
    """``--calls`` sgd calls on the distributed training network; returns
    (the last cost, seconds)."""
    import numpy as np

    import scratchnet as sn

    rank = sn.distributed.rank_and_world()[0]
    extra = {"log_dir": str(folder)} if rank == 0 else {}
    monitors = [] if bar is None else [common.bar_monitor(bar)]
    bounds = np.linspace(0, args.epochs, args.calls + 1).round().astype(int)
    if args.checkpoint:   # calls also end at every checkpoint
        bounds = np.union1d(bounds, np.arange(0, args.epochs + 1, args.checkpoint_every))
    cost = float("nan")
    with common.Stopwatch() as t:
        for done, upto in zip(bounds[:-1], bounds[1:]):
            with common.Stopwatch() as so_far:
                cost = sn.sgd(training, y, sn.quadratic_cost, int(upto - done),
                              (args.eta, args.lam), monitors=monitors, **extra)
            if rank == 0 and args.checkpoint and upto % args.checkpoint_every == 0:
                sn.save(training.net, args.checkpoint)
            say(f"  epoch {training.epoch:6d}  cost {cost:.6g}  ({so_far.seconds:.2f} s)")
    return cost, t.seconds


def mini_batches(args, net, x, y, folder, bar) -> tuple[float, float]:
    """One sn.train call over the ranks' shards; returns (cost, seconds)."""
    import torch.distributed as dist

    import scratchnet as sn

    rank = sn.distributed.rank_and_world()[0]
    extra = {"log_dir": str(folder)} if rank == 0 else {}
    if rank == 0 and args.checkpoint:
        extra.update(checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every)
    monitors = [] if bar is None else [common.bar_monitor(bar, chunk=1)]
    with common.Stopwatch() as t:
        cost = sn.train(net, x, y, sn.quadratic_cost, args.epochs, (args.eta, args.lam),
                        batch_size=args.batch_size, seed=args.seed,
                        distributed=dist.is_initialized(), monitors=monitors, **extra)
    return cost, t.seconds


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    common.check_log_dir(p, args.log_dir)

    import torch
    import torch.distributed as dist

    import scratchnet as sn

    if args.threads:
        torch.set_num_threads(args.threads)
    device = sn.distributed.init_from_env(args.device, timeout=args.timeout)
    rank, world = sn.distributed.rank_and_world()

    def say(line: str) -> None:
        if rank == 0:
            from tqdm.auto import tqdm

            tqdm.write(line)

    try:
        folder = common.run_folder(SCRIPT, args.log_dir) if rank == 0 else None
        x, y = regression_data(args.samples, args.seed)
        rows = sn.distributed.shard(args.samples)
        smallest = args.samples // world   # every rank refuses alike, none waits for another
        if args.batch_size is not None and args.batch_size > smallest:
            raise SystemExit(f"--batch-size: expected at most the smallest shard's {smallest} "
                             f"samples ({args.samples} over {world} ranks), got "
                             f"{args.batch_size}")
        if rank == 0 and args.resume:
            net = sn.load(args.resume, device=device)
        else:
            net = sn.inference_network(4, common.article_layers(), device=device,
                                           seed=args.seed)
        bar = (common.progress_bar(total=args.epochs, desc=f"{world} rank(s)", unit="epoch")
               if rank == 0 else None)
        try:
            mode = ("full batch" if args.batch_size is None
                    else f"batches of {args.batch_size} per rank")
            if args.batch_size is None:
                training = sn.distributed_training_network(net, x[rows])
                say(f"{world} rank(s) on {device}"
                    f"{' (' + dist.get_backend() + ')' if dist.is_initialized() else ''}: "
                    f"{args.samples} samples ({training.n} on rank 0), {mode}, {net}, "
                    f"η = {args.eta}, λ = {args.lam}, torch threads per rank "
                    f"{torch.get_num_threads()}")
                cost, seconds = full_batch(args, training, y[rows], folder, say, bar)
                training.close()
            else:
                say(f"{world} rank(s) on {device}"
                    f"{' (' + dist.get_backend() + ')' if dist.is_initialized() else ''}: "
                    f"{args.samples} samples ({rows.stop - rows.start} on rank 0), {mode}, "
                    f"{net}, η = {args.eta}, λ = {args.lam}, torch threads per rank "
                    f"{torch.get_num_threads()}")
                cost, seconds = mini_batches(args, net, x[rows], y[rows], folder, bar)
        finally:
            if bar is not None:
                bar.close()
        amax = [sn.amax(layer.weights) for layer in net.layers]
        net.close()
        say(f"{args.epochs} epochs in {seconds:.2f} s: "
            f"{seconds / max(args.epochs, 1) * 1e3:.3f} ms per epoch, final cost {cost:.6g}, "
            f"max |w| per layer " + " ".join(f"{a:.4g}" for a in amax))
        if rank == 0:
            text = common.table(
                ["ranks", "device", "mode", "samples", "epochs", "ms per epoch", "final cost",
                 "max abs w per layer"],
                [[str(world), device, mode, str(args.samples), str(args.epochs),
                  f"{seconds / max(args.epochs, 1) * 1e3:.3f}", f"{cost:.6g}",
                  " ".join(f"{a:.4g}" for a in amax)]])
            print(text)
            common.write_summary(folder, text, SCRIPT, argv)
            print(f"Run folder: {folder}  (tensorboard --logdir {folder})")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
