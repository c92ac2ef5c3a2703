"""Replay the series' part 15 experiment: does weight decay keep the weights
small, and is it what keeps η = 0.3 from diverging?

    python scripts/weight_decay.py                        # the replay, then seeds 1000-1009
    python scripts/weight_decay.py --seeds 1000-1029 --device cuda
    python scripts/weight_decay.py --replay-only --seed 6 # the replay alone
    tensorboard --logdir runs/weight_decay

Part 1 replays the article: a 4-32-16-1 network (sigmoid, tanh, linear) on
f(x) = sin x0 + cos x1 + tanh x2 + x3², 10,000 samples, η = 0.3, trained in
calls of 5, 15, 150, 1000 and 1000 epochs, without decay and with λ = 0.9;
after each call it prints the cost and max |w| per layer (the series'
(map amax (map weights (layers inference)))), then the cost on a fresh test
set of the same size.  Both runs are logged to TensorBoard, every epoch, in
the run folder: <run>/lam0 and <run>/lam0.9.

Part 2 asks the question honestly: one seed proves little, so it repeats the
experiment for every seed of --seeds, with and without decay (the same seeds:
a paired comparison), and counts the runs that diverged (non-finite cost, or
a cost 1,000 times the best seen) and the median max |w| of the others.  The
summary also goes to <run>/summary.md.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (scripts/common.py, however this file is run)

CALLS = (5, 15, 150, 1000, 1000)   # the article's sgd calls (cumulative 2,170 epochs)
ETA, LAM = 0.3, 0.9
SCRIPT = "weight_decay"


def build_parser():
    p = common.parser(__doc__)
    common.add_device(p)
    common.add_seeds(p, "1000-1009", "seeds of part 2 (data and initial weights)")
    p.add_argument("--seed", type=common.nonnegative_int, default=0,
                   help="seed of the part 1 replay")
    p.add_argument("--replay-only", action="store_true", help="run part 1 alone")
    p.add_argument("--samples", type=common.positive_int, default=10_000,
                   help="training samples (and as many test samples)")
    p.add_argument("--convention", default="standard", choices=("standard", "series"),
                   help="bias sign: z = Wa + b (standard) or the series' z = Wa - b")
    p.add_argument("--log-every", type=common.positive_int, default=1,
                   help="epochs between the replay's logged epochs")
    common.add_threads(p, default=2)
    common.add_log_dir(p, SCRIPT, " (the replay's TensorBoard runs, the summary)")
    return p


def experiment(device: str, seed: int, lam: float, n: int, verbose: bool,
               convention: str = "standard", log_dir=None, log_every: int = 1,
               bar=None) -> dict:
    """Train one network through CALLS; return its trajectory.  Quiet runs
    stop at the first non-finite cost: NaN weights never recover (part 15).
    With ``log_dir``, the replay is logged to TensorBoard (train and test
    cost, max |w| and norm per layer) every ``log_every`` epochs; ``bar``
    (a ``common.progress_bar``) follows the epochs."""
    import numpy as np

    import scratchnet as sn

    rng = np.random.default_rng(seed)
    x, y = common.series_data(n, rng)
    x_test, y_test = common.series_data(n, rng)
    costs, amaxes = [], []
    extra = {} if log_dir is None else {"log_dir": str(log_dir), "test": (x_test, y_test),
                                        "log_every": log_every}
    monitors = [] if bar is None else [common.bar_monitor(bar, chunk=None)]
    with sn.inference_network(4, common.article_layers(), device=device, seed=seed,
                              convention=convention) as net, \
            sn.training_network(net, x) as training:
        for epochs in CALLS:
            with np.errstate(all="ignore"):
                # guard=False: this experiment wants to watch the explosion
                # that the divergence guard would otherwise stop
                cost = sn.sgd(training, y, sn.quadratic_cost, epochs, (ETA, lam), guard=False,
                              monitors=monitors, **extra)
            amax = [sn.amax(layer.weights) for layer in net.layers]
            costs.append(cost)
            amaxes.append(amax)
            if verbose:
                say(f"  after {training.epoch:5d} epochs  cost {cost:<14.6g} max |w| "
                    + "  ".join(f"{a:10.4g}" for a in amax))
            elif not math.isfinite(cost):
                break
        test_cost = sn.quadratic_cost(y_test, net(x_test))
    finite = [c for c in costs if math.isfinite(c)]
    diverged = len(finite) < len(costs) or not math.isfinite(test_cost) or (
        max(finite) > 1e3 * min(finite))
    amax = max(amaxes[-1])
    return {"costs": costs, "amax": amax if math.isfinite(amax) else math.inf,
            "test": test_cost, "diverged": diverged}


def say(line: str) -> None:
    """Print above any progress bar."""
    from tqdm.auto import tqdm

    tqdm.write(line)


def replay(args, folder: Path) -> list[tuple[float, dict, float]]:
    """Part 1: the article's two runs, printed call by call and logged."""
    say(f"Part 1: the article's experiment on {args.device}, seed {args.seed}, "
        f"η = {ETA}, calls of {', '.join(map(str, CALLS))} epochs")
    runs = []
    for lam in (0.0, LAM):
        say(f"\nλ = {lam:g}" + ("  (no weight decay)" if lam == 0 else "  (weight decay)"))
        with common.progress_bar(total=sum(CALLS), desc=f"replay λ={lam:g}",
                                 unit="epoch", leave=False) as bar, common.Stopwatch() as t:
            run = experiment(args.device, args.seed, lam, args.samples, True, args.convention,
                             log_dir=folder / f"lam{lam:g}", log_every=args.log_every,
                             bar=bar)
        say(f"  test cost {run['test']:.6g}  ({t.seconds:.1f} s)"
            + ("  -> DIVERGED" if run["diverged"] else ""))
        runs.append((lam, run, t.seconds))
    return runs


def seeds(args) -> list[tuple[float, list[dict]]]:
    """Part 2: every seed with and without decay, quietly."""
    rows = []
    with common.progress_bar(total=2 * len(args.seeds), desc="part 2", unit="run") as bar:
        for lam in (0.0, LAM):
            runs = []
            for seed in args.seeds:
                bar.set_postfix_str(f"λ={lam:g} seed={seed}", refresh=False)
                runs.append(experiment(args.device, seed, lam, args.samples, False,
                                       args.convention))
                bar.update()
            rows.append((lam, runs))
    return rows


def summary(args, replayed, rows) -> str:
    """The final tables and the conclusions drawn from them."""
    ends = [sum(CALLS[:k + 1]) for k in range(len(CALLS))]
    out = [f"Part 1, seed {args.seed}: cost after each call (epochs), test cost, max |w|"]
    out.append(common.table(
        ["λ", *map(str, ends), "test cost", "max abs w", "seconds"],
        [[f"{lam:g}", *(common.fmt(c, ".4g", "nan") for c in run["costs"]),
          common.fmt(run["test"], ".4g", "nan"), common.fmt(run["amax"], ".4g", "inf"),
          f"{seconds:.1f}"] for lam, run, seconds in replayed]))
    if not rows:
        return "\n".join(out)
    n = len(args.seeds)
    out.append(f"\nPart 2: seeds {seed_text(args.seeds)}, η = {ETA}, {sum(CALLS)} epochs, "
               f"with and without decay")
    body, medians = [], []
    for lam, runs in rows:
        ok = [r for r in runs if not r["diverged"]]
        amax = common.stats(r["amax"] for r in ok).median if ok else math.nan
        test = common.stats(r["test"] for r in ok).median if ok else math.nan
        medians.append((n - len(ok), amax))
        body.append([f"{lam:g}", f"{n - len(ok)}/{n}", common.fmt(amax, ".4g", "-"),
                     common.fmt(test, ".6g", "-")])
    out.append(common.table(["λ", "diverged", "median max abs w (converged)",
                             "median test cost (converged)"], body))
    (d0, w0), (d1, w1) = medians
    pairs = [(a["diverged"], b["diverged"]) for a, b in zip(rows[0][1], rows[1][1])]
    saved = sum(1 for a, b in pairs if a and not b)
    out.append(f"\nDiverged: {d0} of {n} without decay, {d1} with it; decay saved {saved} "
               f"run(s) that diverged without it.")
    if math.isfinite(w0) and math.isfinite(w1):
        out.append(f"Converged runs: median max |w| {w0:.4g} without decay, {w1:.4g} with it.")
    exploded_early = [r for _, runs in rows for r in runs
                      if r["diverged"] and not r["costs"][1] < 1e3 * r["costs"][0]]
    if d1 and saved == 0 and len(exploded_early) == d0 + d1:
        out.append(f"Every diverged run had exploded by epoch {sum(CALLS[:2])}, while the decay "
                   f"shrinks W by only ηλ/n = {ETA * LAM / args.samples:.2g} per epoch: "
                   f"at this η it is the initial weights, not the decay, that decide.")
    return "\n".join(out)


def seed_text(seeds: list[int]) -> str:
    """[1000, ..., 1009] as '1000-1009' when consecutive."""
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return " ".join(map(str, seeds))


def main(argv=None) -> int:
    args, folder = common.start(build_parser(), argv, SCRIPT)

    import torch

    torch.set_num_threads(args.threads)
    replayed = replay(args, folder)
    rows = [] if args.replay_only else seeds(args)
    text = summary(args, replayed, rows)
    print("\n" + text)
    common.write_summary(folder, text, SCRIPT, argv)
    print(f"\nRun folder: {folder}  (tensorboard --logdir {folder})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
