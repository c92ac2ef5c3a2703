"""Sweep (η, λ) × seeds on the series' task and record every run for
TensorBoard's HParams dashboard: which settings are safe?

    python scripts/sweep.py                               # 3 η × 3 λ × seeds 0-2
    python scripts/sweep.py --eta 0.1 0.3 --lam 0 0.9 --seeds 0-4 --device cuda
    tensorboard --logdir runs/sweep

The task and network are the article's (weight_decay.py): a 4-32-16-1
network (sigmoid, tanh, linear) on f(x) = sin x0 + cos x1 + tanh x2 + x3²,
--samples training samples and as many test samples, both drawn from the
run's seed, which also draws the initial weights.  Each run trains --epochs
epochs into its own folder <run>/eta<η>_lam<λ>_seed<s> (the tags of
scratchnet/monitors/tensorboard.py) and is recorded with add_hparams:
hyperparameters eta, lam, seed, device; metrics final/train_cost (the last
epoch's cost), final/test_cost, final/max_abs_w (max |w| over all layers)
and final/diverged (1 or 0).

A run diverges when a cost becomes non-finite (it is stopped there: NaN
weights never recover) or exceeds 1,000 times the best cost it reached; it
is logged and marked, never a crash of the sweep.  The summary table also
goes to <run>/summary.md.
"""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (scripts/common.py, however this file is run)

SCRIPT = "sweep"
ETAS = (0.05, 0.1, 0.3)
LAMS = (0.0, 0.9, 9.0)
EPOCHS = 2170          # the article's five calls, 5 + 15 + 150 + 1000 + 1000 epochs
BLOWUP = 1e3           # a cost this many times the best seen is a divergence


class Diverged(Exception):
    """Raised by the sweep's monitor to stop a run whose cost is no longer finite."""


def run_name(eta: float, lam: float, seed: int) -> str:
    return f"eta{eta:g}_lam{lam:g}_seed{seed}"


def watch(chunk: int):
    """A monitor (``scratchnet/monitors/base.py``) that tracks the best and
    last cost and stops the run at the first non-finite cost."""
    import scratchnet as sn

    class Watch(sn.Monitor):
        def __init__(self):
            self.chunk = chunk
            self.best, self.last, self.worst = math.inf, math.nan, -math.inf

        def after_chunk(self, train, first_epoch, costs):
            self.last = costs[-1]
            for i, c in enumerate(costs):
                if not math.isfinite(c):
                    raise Diverged(f"cost {c} at epoch {first_epoch + i}")
                self.best, self.worst = min(self.best, c), max(self.worst, c)

    return Watch()


def train_one(folder: Path, eta: float, lam: float, seed: int, args, bar=None) -> dict:
    """One run of the grid, logged to ``folder/run_name``; returns its metrics."""
    import numpy as np
    from torch.utils.tensorboard import SummaryWriter

    import scratchnet as sn

    rng = np.random.default_rng(seed)
    x, y = common.series_data(args.samples, rng)
    x_test, y_test = common.series_data(args.samples, rng)
    seen = watch(args.log_every)
    monitors = [seen] + ([] if bar is None else [common.bar_monitor(bar, chunk=None)])
    with sn.inference_network(4, common.article_layers(), device=args.device, seed=seed) as net, \
            sn.training_network(net, x) as training, \
            SummaryWriter(str(folder / run_name(eta, lam, seed))) as writer, \
            np.errstate(all="ignore"):
        stopped = False
        try:
            sn.sgd(training, y, sn.quadratic_cost, args.epochs, (eta, lam), log_dir=writer,
                   test=(x_test, y_test), log_every=args.log_every,
                   hist_every=args.hist_every, monitors=monitors,
                   guard=False)   # the sweep records divergence itself (watch)
        except Diverged:
            stopped = True
        test_cost = sn.quadratic_cost(y_test, net(x_test))
        max_w = max(sn.amax(layer.weights) for layer in net.layers)
        diverged = stopped or not math.isfinite(test_cost) or seen.worst > BLOWUP * seen.best
        metrics = {"final/train_cost": seen.last, "final/test_cost": test_cost,
                   "final/max_abs_w": max_w, "final/diverged": float(diverged)}
        hparams = {"eta": eta, "lam": lam, "seed": seed, "device": args.device}
        domains = {"eta": list(args.eta), "lam": list(args.lam), "seed": list(args.seeds),
                   "device": [args.device]}
        # run_name ".": the hparams session lives in the run's own directory,
        # next to its scalars, instead of a timestamped sub-run.
        writer.add_hparams(hparams, metrics, hparam_domain_discrete=domains, run_name=".",
                           global_step=training.epoch)
        return {**hparams, **metrics, "epochs": training.epoch}


def build_parser():
    p = common.parser(__doc__)
    p.add_argument("--eta", type=common.positive_float, nargs="+", default=list(ETAS),
                   help="learning rates η")
    p.add_argument("--lam", type=common.nonnegative_float, nargs="+", default=list(LAMS),
                   help="weight decays λ")
    common.add_seeds(p, "0-2", "seeds of every (η, λ): data and initial weights")
    p.add_argument("--epochs", type=common.positive_int, default=EPOCHS,
                   help="epochs per run (the article's five calls: 2170)")
    p.add_argument("--samples", type=common.positive_int, default=10_000,
                   help="training samples (and as many test samples)")
    common.add_device(p)
    p.add_argument("--log-every", type=common.positive_int, default=10,
                   help="epochs between logged epochs")
    p.add_argument("--hist-every", type=common.positive_int, default=None,
                   help="epochs between weight histograms (default: no histograms)")
    common.add_threads(p, default=2)
    common.add_log_dir(p, SCRIPT, " (one TensorBoard run per configuration, the summary)")
    return p


def sweep(argv=None) -> list[dict]:
    """Run the grid; return one dict of hyperparameters and metrics per run."""
    p = build_parser()
    args = p.parse_args(argv)
    common.check_log_dir(p, args.log_dir)

    import torch

    torch.set_num_threads(args.threads)
    folder = common.run_folder(SCRIPT, args.log_dir)
    grid = list(itertools.product(args.eta, args.lam, args.seeds))
    results = []
    with common.progress_bar(total=len(grid) * args.epochs, desc="sweep",
                             unit="epoch") as bar:
        for eta, lam, seed in grid:
            bar.set_postfix_str(run_name(eta, lam, seed), refresh=False)
            start = bar.n
            results.append(train_one(folder, eta, lam, seed, args, bar))
            bar.update(start + args.epochs - bar.n)   # a stopped run's epochs count as done
    text = common.table(
        ["η", "λ", "seed", "train cost", "test cost", "max abs w", "diverged"],
        [[f"{r['eta']:g}", f"{r['lam']:g}", r["seed"], common.fmt(r["final/train_cost"], ".4g",
                                                                   "nan"),
          common.fmt(r["final/test_cost"], ".4g", "nan"),
          common.fmt(r["final/max_abs_w"], ".4g", "nan"),
          "yes" if r["final/diverged"] else "no"] for r in results])
    text = f"{len(results)} runs, {args.epochs} epochs each, on {args.device}\n{text}"
    print(text)
    common.write_summary(folder, text, SCRIPT, argv)
    print(f"\nRun folder: {folder}  (tensorboard --logdir {folder})")
    return results


def main(argv=None) -> int:
    sweep(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
