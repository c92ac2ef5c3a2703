"""Sweep (η, λ) × seeds on the series' task and record every run for
TensorBoard's HParams dashboard: which settings are safe?

    python scripts/sweep.py                               # 3 η × 3 λ × 3 seeds
    python scripts/sweep.py --eta 0.1 0.3 --lam 0 0.9 --seeds 5 --device cuda
    tensorboard --logdir runs/sweep

The task and network are the article's (``weight_decay.py``): a 4-32-16-1
network (sigmoid, tanh, linear) on f(x) = sin x0 + cos x1 + tanh x2 + x3²,
``--samples`` training samples and as many test samples, both drawn from the
run's seed, which also draws the initial weights.  Each run trains
``--epochs`` epochs into its own run directory
``<logdir>/eta<η>_lam<λ>_seed<s>`` (the tags of ``scratchnet.monitors.tensorboard``)
and is recorded with ``add_hparams``: hyperparameters η, λ, seed, device;
metrics ``final/train_cost`` (the last epoch's cost), ``final/test_cost``,
``final/max_abs_w`` (max |w| over all layers) and ``final/diverged`` (1 or 0).

A run diverges when a cost becomes non-finite (it is stopped there: NaN
weights never recover) or exceeds 1,000 times the best cost it reached; it is
logged and marked, never a crash of the sweep.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import math
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm
from weight_decay import regression_data  # the same task, written once

import scratchnet as sn

ETAS = (0.05, 0.1, 0.3)
LAMS = (0.0, 0.9, 9.0)
EPOCHS = 2170          # the article's five calls, 5 + 15 + 150 + 1000 + 1000 epochs
BLOWUP = 1e3           # a cost this many times the best seen is a divergence


class Diverged(Exception):
    """Raised by :class:`Watch` to stop a run whose cost is no longer finite."""


class Watch(sn.Monitor):
    """A monitor (``scratchnet/monitors/base.py``): advances the epoch bar, tracks
    the best and last cost, and stops the run at the first non-finite cost."""

    def __init__(self, chunk: int, bar):
        self.chunk, self.bar = chunk, bar
        self.best, self.last, self.worst = math.inf, math.nan, -math.inf


    def after_chunk(self, train, first_epoch, costs):
        self.bar.update(len(costs))
        self.last = costs[-1]
        for c in costs:
            if not math.isfinite(c):
                raise Diverged(f"cost {c} at epoch {first_epoch + costs.index(c) + 1}")
            self.best, self.worst = min(self.best, c), max(self.worst, c)



def run_name(eta: float, lam: float, seed: int) -> str:
    return f"eta{eta:g}_lam{lam:g}_seed{seed}"


def train_one(logdir: Path, eta: float, lam: float, seed: int, args, bar) -> dict:
    """One run of the grid, logged to ``logdir/run_name``; returns its metrics."""
    rng = np.random.default_rng(seed)
    x, y = regression_data(args.samples, rng)
    x_test, y_test = regression_data(args.samples, rng)
    layers = [sn.fully_connected(32, sn.sigmoid), sn.fully_connected(16, sn.tanh),
              sn.fully_connected(1, sn.linear)]
    watch = Watch(args.log_every, bar)
    with sn.inference_network(4, layers, device=args.device, seed=seed) as net, \
            sn.training_network(net, x) as train, \
            SummaryWriter(str(logdir / run_name(eta, lam, seed))) as writer, \
            np.errstate(all="ignore"):
        stopped = False
        try:
            sn.sgd(train, y, sn.quadratic_cost, args.epochs, (eta, lam), log_dir=writer,
                   test=(x_test, y_test), log_every=args.log_every,
                   hist_every=args.hist_every, monitors=[watch],
                   guard=False)   # the sweep records divergence itself (Watch)
        except Diverged:
            stopped = True
        test_cost = sn.quadratic_cost(y_test, net(x_test))
        max_w = max(sn.amax(layer.weights) for layer in net.layers)
        diverged = stopped or not math.isfinite(test_cost) or watch.worst > BLOWUP * watch.best
        metrics = {"final/train_cost": watch.last, "final/test_cost": test_cost,
                   "final/max_abs_w": max_w, "final/diverged": float(diverged)}
        hparams = {"eta": eta, "lam": lam, "seed": seed, "device": args.device}
        domains = {"eta": list(args.eta), "lam": list(args.lam),
                   "seed": list(range(args.seeds)), "device": [args.device]}
        # run_name ".": the hparams session lives in the run's own directory,
        # next to its scalars, instead of a timestamped sub-run.
        writer.add_hparams(hparams, metrics, hparam_domain_discrete=domains, run_name=".",
                           global_step=train.epoch)
        return {**hparams, **metrics, "epochs": train.epoch}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--eta", type=float, nargs="+", default=list(ETAS),
                        help=f"learning rates (default {' '.join(map(str, ETAS))})")
    parser.add_argument("--lam", type=float, nargs="+", default=list(LAMS),
                        help=f"weight decays (default {' '.join(map(str, LAMS))})")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1 (default 3)")
    parser.add_argument("--epochs", type=int, default=EPOCHS,
                        help=f"epochs per run (default {EPOCHS})")
    parser.add_argument("--samples", type=int, default=10_000,
                        help="training (and test) samples (default 10000)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, opencl, ...")
    parser.add_argument("--log-every", type=int, default=10,
                        help="epochs between logged epochs (default 10)")
    parser.add_argument("--hist-every", type=int, default=None,
                        help="epochs between weight histograms (default: none)")
    parser.add_argument("--logdir", type=Path, default=None,
                        help="where the runs go (default runs/sweep/<date-time>)")
    args = parser.parse_args(argv)
    if min(args.eta) <= 0 or min(args.lam) < 0:
        parser.error("--eta must be > 0 and --lam >= 0")
    if min(args.seeds, args.epochs, args.samples, args.log_every) < 1 or (
            args.hist_every is not None and args.hist_every < 1):
        parser.error("--seeds, --epochs, --samples, --log-every and --hist-every must be >= 1")
    if args.logdir is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        args.logdir = Path("runs") / "sweep" / stamp
    return args


def sweep(argv=None) -> list[dict]:
    """Run the grid; return one dict of hyperparameters and metrics per run."""
    args = parse_args(argv)
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    grid = list(itertools.product(args.eta, args.lam, range(args.seeds)))
    results = []
    with tqdm(total=len(grid), desc="runs", unit="run", position=0) as runs_bar:
        for eta, lam, seed in grid:
            with tqdm(total=args.epochs, desc=run_name(eta, lam, seed), unit="epoch",
                      position=1, leave=False) as epoch_bar:
                results.append(train_one(args.logdir, eta, lam, seed, args, epoch_bar))
            runs_bar.update()
    print(f"\n{len(results)} runs in {args.logdir}  (tensorboard --logdir {args.logdir})")
    print(f"  {'η':>6} {'λ':>5} {'seed':>4} | {'train cost':>10} {'test cost':>10} "
          f"{'max |w|':>9} | diverged")
    for r in results:
        print(f"  {r['eta']:>6g} {r['lam']:>5g} {r['seed']:>4} | {r['final/train_cost']:>10.4g} "
              f"{r['final/test_cost']:>10.4g} {r['final/max_abs_w']:>9.4g} | "
              + ("yes" if r["final/diverged"] else "no"))
    return results


def main(argv=None) -> int:
    sweep(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
