"""Replay part 16's comparison table: vanilla gradient descent, weight decay,
and momentum on a 4-8-8-1 network, the cost every 50 epochs up to 400.

    python scripts/momentum.py                       # seed 1, CPU
    python scripts/momentum.py --seeds 1 2 --device opencl

The series' columns are [η λ μ] = [0.2 0 0], [0.2 0.02 0], [0.2 0.02 0.01];
this adds μ = 0.9, Nesterov (μ = 0.9) and Adam (η = 0.01) for comparison.
Every column of a seed starts from the same initialisation (the blog
re-created the network for each column, so its columns also differ by their
random start).  The data set is the series' (f(x) = sin x0 + cos x1 +
tanh x2 + x3², x ~ U[0, 1)⁴) drawn once from seed 0; --seeds draws the
initial weights.  The divergence guard is off, as in the series: a column
whose cost becomes inf/NaN prints "diverged".  The summary also goes to
<run>/summary.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (scripts/common.py, however this file is run)

SCRIPT = "momentum"
NAMES = ("[0.2 0 0]", "[0.2 0.02 0]", "[0.2 0.02 0.01]", "[0.2 0.02 0.9]", "Nesterov 0.9",
         "Adam 0.01")


def columns() -> list[tuple[str, object]]:
    """(name, hyperparameters) of every column, in NAMES' order."""
    import scratchnet as sn

    return list(zip(NAMES, [(0.2, 0.0, 0.0), (0.2, 0.02, 0.0), (0.2, 0.02, 0.01),
                            (0.2, 0.02, 0.9), sn.SGD(0.2, 0.02, 0.9, nesterov=True),
                            sn.Adam(0.01)]))


def build_parser():
    p = common.parser(__doc__)
    common.add_device(p)
    common.add_seeds(p, "1", "seeds of the initial weights, one table each")
    p.add_argument("--epochs", type=common.positive_int, default=400,
                   help="epochs per column")
    p.add_argument("--every", type=common.positive_int, default=50,
                   help="epochs between the table's rows")
    p.add_argument("--samples", type=common.positive_int, default=10_000,
                   help="training samples")
    common.add_threads(p)
    common.add_log_dir(p, SCRIPT, " (the summary)")
    return p


def costs_table(device: str, seed: int, x, y, epochs: int, every: int, bar=None
                ) -> list[list[float]]:
    """One list of costs per column: the cost of every ``every``-th epoch
    (the epoch's forward pass, as the series' sgd returns it)."""
    import scratchnet as sn

    schedule_length, rest = divmod(epochs, every)
    table = []
    monitors = [] if bar is None else [common.bar_monitor(bar, chunk=None)]
    for _, hyper in columns():
        layers = [sn.fully_connected(8, sn.sigmoid), sn.fully_connected(8, sn.tanh),
                  sn.fully_connected(1, sn.linear)]
        plan = [(every, hyper)] * schedule_length + ([(rest, hyper)] if rest else [])
        with sn.inference_network(4, layers, device=device, seed=seed) as net, \
                sn.training_network(net, x) as training:
            # guard=False: the series has no divergence guard, and its
            # factor-1000 rule also stops transient spikes that recover
            table.append(sn.sgd(training, y, sn.quadratic_cost, plan, guard=False,
                                monitors=monitors))
    return table


def main(argv=None) -> int:
    args, folder = common.start(build_parser(), argv, SCRIPT)

    import torch

    torch.set_num_threads(args.threads)
    x, y = common.series_data(args.samples, 0)
    steps = [min(args.every * (i + 1), args.epochs) for i in range(-(-args.epochs // args.every))]
    out, finals = [], []
    with common.progress_bar(total=len(args.seeds) * len(NAMES) * args.epochs, desc="momentum",
                             unit="epoch") as bar:
        for seed in args.seeds:
            bar.set_postfix_str(f"seed {seed}", refresh=False)
            table = costs_table(args.device, seed, x, y, args.epochs, args.every, bar)
            out.append(f"seed {seed}, {args.device}: the cost every {args.every} epochs")
            out.append(common.table(["epoch", *NAMES],
                                    [[str(e), *(common.fmt(col[i]) for col in table)]
                                     for i, e in enumerate(steps)]))
            out.append("")
            finals.append([str(seed), *(common.fmt(col[-1]) for col in table)])
    out.append(f"Summary: the cost at epoch {args.epochs} ({args.samples} samples, 4-8-8-1, "
               f"{args.device})")
    out.append(common.table(["seed", *NAMES], finals))
    text = "\n".join(out)
    print(text)
    common.write_summary(folder, text, SCRIPT, argv)
    print(f"\nRun folder: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
