"""Train the series' regression network data-parallel over processes and
machines, on torch.distributed, launched by torchrun.

One host, two processes on the CPU (gloo):

    torchrun --nproc_per_node=2 scripts/train_distributed.py --device cpu --epochs 1000

Several hosts (here two, one GPU process per GPU, NCCL); the same command on
every host, ``--node_rank`` 0 on the host whose address is the endpoint:

    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=gpu \\
        --rdzv_backend=c10d --rdzv_endpoint=HOST0:29500 --rdzv_id=sn1 \\
        scripts/train_distributed.py --device cuda --epochs 1000

Without torchrun (``python scripts/train_distributed.py``) it is one process.

Every rank draws the same data set from ``--seed`` (x ~ U[0, 1)⁴,
y = sin x0 + cos x1 + tanh x2 + x3²), keeps its shard of the rows (sizes
differing by at most one), builds the 4-32-16-1 network of the series and
trains with one all-reduce of the gradient buffer per epoch (see
``scratchnet/distributed.py``); the weights are those of one process on the
whole data set.  The initial weights come from ``--seed`` on every rank and
are broadcast from rank 0 anyway (so ``--resume``, read by rank 0 alone,
reaches every rank).

Rank 0 alone prints, logs to TensorBoard (``--log-dir``) and writes
checkpoints (``--checkpoint``, every ``--checkpoint-every`` epochs), through
``sgd(..., log_dir=...)`` and ``sn.save``/``sn.load``.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
import torch.distributed as dist

import scratchnet as sn


def regression_data(n: int, seed: int):
    """The series' task, drawn in full on every rank from ``seed`` so every
    rank agrees on the data set without sending it."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 4), dtype=np.float32)
    y = np.sin(x[:, 0]) + np.cos(x[:, 1]) + np.tanh(x[:, 2]) + x[:, 3] ** 2
    return x, y.reshape(-1, 1).astype(np.float32)


def article_layers():
    return [sn.fully_connected(32, sn.sigmoid), sn.fully_connected(16, sn.tanh),
            sn.fully_connected(1, sn.linear)]


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu",
                        help="cpu (gloo), cuda (NCCL, cuda:LOCAL_RANK per rank), opencl (gloo, "
                             "through host copies)")
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=10_000, help="samples over all ranks")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the weights")
    parser.add_argument("--eta", type=float, default=0.1, help="learning rate η")
    parser.add_argument("--lam", type=float, default=0.0, help="weight decay λ")
    parser.add_argument("--calls", type=int, default=10,
                        help="split the epochs into this many sgd calls (a progress line each)")
    parser.add_argument("--log-dir", default=None, help="TensorBoard run directory (rank 0)")
    parser.add_argument("--checkpoint", default=None, help="checkpoint file (rank 0 writes)")
    parser.add_argument("--checkpoint-every", type=int, default=100, metavar="EPOCHS")
    parser.add_argument("--resume", default=None, help="checkpoint to start from (rank 0 reads)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds a collective may wait for a peer before failing")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per rank (default: torch's, or 1 under torchrun)")
    args = parser.parse_args(argv)
    if args.epochs < 0 or args.samples < 1 or args.calls < 1 or args.checkpoint_every < 1:
        parser.error("--epochs must be >= 0, --samples, --calls and --checkpoint-every >= 1")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = sn.distributed.init_from_env(args.device, timeout=args.timeout)
    rank, world = sn.distributed.rank_and_world()
    say = print if rank == 0 else (lambda *a, **k: None)
    try:
        x, y = regression_data(args.samples, args.seed)
        rows = sn.distributed.shard(args.samples)
        if rank == 0 and args.resume:
            net = sn.load(args.resume, device=device)
        else:
            net = sn.inference_network(4, article_layers(), device=device, seed=args.seed)
        train = sn.distributed_training_network(net, x[rows])
        say(f"{world} rank(s) on {device}"
            f"{' (' + dist.get_backend() + ')' if dist.is_initialized() else ''}: "
            f"{args.samples} samples ({train.n} on rank 0), {net}, η = {args.eta}, "
            f"λ = {args.lam}, torch threads per rank {torch.get_num_threads()}")
        extra = {"log_dir": args.log_dir} if rank == 0 and args.log_dir else {}
        bounds = np.linspace(0, args.epochs, args.calls + 1).round().astype(int)
        if args.checkpoint:   # calls also end at every checkpoint
            bounds = np.union1d(bounds, np.arange(0, args.epochs + 1, args.checkpoint_every))
        start = time.perf_counter()
        cost = float("nan")
        for done, upto in zip(bounds[:-1], bounds[1:]):
            cost = sn.sgd(train, y[rows], sn.quadratic_cost, int(upto - done),
                          (args.eta, args.lam), **extra)
            if rank == 0 and args.checkpoint and upto % args.checkpoint_every == 0:
                sn.save(net, args.checkpoint)
            say(f"  epoch {train.epoch:6d}  cost {cost:.6g}  "
                f"({time.perf_counter() - start:.2f} s)")
        seconds = time.perf_counter() - start
        say(f"{args.epochs} epochs in {seconds:.2f} s: {seconds / max(args.epochs, 1) * 1e3:.3f} "
            f"ms per epoch, final cost {cost:.6g}, max |w| per layer "
            + " ".join(f"{sn.amax(layer.weights):.4g}" for layer in net.layers))
        train.close()
        net.close()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
