"""Replay the series' part 15 experiment: does weight decay keep the weights
small, and is it what keeps η = 0.3 from diverging?

    python scripts/weight_decay.py                  # the replay + 10 seeds
    python scripts/weight_decay.py --seeds 30 --device cuda
    python scripts/weight_decay.py --seeds 0 --logdir runs/weight_decay   # + TensorBoard

Part 1 replays the article: a 4-32-16-1 network (sigmoid, tanh, linear) on
f(x) = sin x0 + cos x1 + tanh x2 + x3², 10,000 samples, η = 0.3, trained in
calls of 5, 15, 150, 1000 and 1000 epochs, without decay and with λ = 0.9;
after each call it prints the cost and max |w| per layer (the series'
``(map amax (map weights (layers inference)))``), then the cost on a fresh
test set of the same size.

Part 2 asks the question honestly: one seed proves little, so it repeats the
experiment over ``--seeds`` seeds and counts the runs that diverged
(non-finite cost, or a cost 1,000 times the best seen) and the median max |w|.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

import scratchnet as sn

CALLS = (5, 15, 150, 1000, 1000)   # the article's sgd calls (cumulative 2,170 epochs)
ETA, LAM = 0.3, 0.9


def regression_data(n: int, rng: np.random.Generator):
    """The series' task: x ~ U[0, 1)⁴, y = sin x0 + cos x1 + tanh x2 + x3²."""
    x = rng.random((n, 4), dtype=np.float32)
    y = np.sin(x[:, 0]) + np.cos(x[:, 1]) + np.tanh(x[:, 2]) + x[:, 3] ** 2
    return x, y.reshape(-1, 1).astype(np.float32)


def experiment(device: str, seed: int, lam: float, n: int, verbose: bool,
               convention: str = "standard", log_dir=None) -> dict:
    """Train one network through CALLS; return its trajectory.  Quiet runs
    stop at the first non-finite cost: NaN weights never recover (part 15).
    With ``log_dir``, every epoch is logged to TensorBoard (train and test
    cost, max |w| per layer)."""
    rng = np.random.default_rng(seed)
    x, y = regression_data(n, rng)
    x_test, y_test = regression_data(n, rng)
    layers = [sn.fully_connected(32, sn.sigmoid), sn.fully_connected(16, sn.tanh),
              sn.fully_connected(1, sn.linear)]
    costs, amaxes = [], []
    log = {} if log_dir is None else {"log_dir": log_dir, "test": (x_test, y_test)}
    with sn.inference_network(4, layers, device=device, seed=seed,
                              convention=convention) as net, \
            sn.training_network(net, x) as train:
        for epochs in CALLS:
            with np.errstate(all="ignore"):
                # guard=False: this experiment wants to watch the explosion
                # that the divergence guard would otherwise stop
                cost = sn.sgd(train, y, sn.quadratic_cost, epochs, (ETA, lam), guard=False,
                              **log)
            amax = [sn.amax(layer.weights) for layer in net.layers]
            costs.append(cost)
            amaxes.append(amax)
            if verbose:
                print(f"  after {train.epoch:5d} epochs  cost {cost:<14.6g} max |w| "
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, opencl, ...")
    parser.add_argument("--seeds", type=int, default=10, help="seeds for part 2 (default 10)")
    parser.add_argument("--samples", type=int, default=10_000, help="training samples")
    parser.add_argument("--seed", type=int, default=0, help="seed of the part 1 replay")
    parser.add_argument("--convention", default="standard", choices=("standard", "series"),
                        help="bias sign: z = Wa + b (standard) or the series' z = Wa - b")
    parser.add_argument("--logdir", default=None,
                        help="log part 1 to TensorBoard runs LOGDIR/lam0, LOGDIR/lam0.9")
    args = parser.parse_args(argv)
    if args.seeds < 0 or args.samples < 1:
        parser.error("--seeds must be >= 0 and --samples >= 1")
    torch.set_num_threads(min(torch.get_num_threads(), 2))

    print(f"Part 1: the article's experiment on {args.device}, seed {args.seed}, "
          f"η = {ETA}, calls of {', '.join(map(str, CALLS))} epochs")
    for lam in (0.0, LAM):
        print(f"\nλ = {lam}" + ("  (no weight decay)" if lam == 0 else "  (weight decay)"))
        start = time.perf_counter()
        log_dir = None if args.logdir is None else f"{args.logdir}/lam{lam:g}"
        run = experiment(args.device, args.seed, lam, args.samples, True, args.convention,
                         log_dir=log_dir)
        print(f"  test cost {run['test']:.6g}  ({time.perf_counter() - start:.1f} s)"
              + ("  -> DIVERGED" if run["diverged"] else ""))

    if args.seeds == 0:
        return 0
    print(f"\nPart 2: is weight decay what keeps the weights small? {args.seeds} seeds "
          f"each, η = {ETA}, {sum(CALLS)} epochs")
    rows = []
    with tqdm(total=2 * args.seeds, desc="runs", unit="run", leave=False) as bar:
        for lam in (0.0, LAM):
            runs = []
            for seed in range(args.seeds):
                # the same seeds with and without decay: paired comparison
                runs.append(experiment(args.device, 1000 + seed, lam, args.samples, False,
                                       args.convention))
                bar.update()
            rows.append((lam, runs))
    print(f"\n  {'λ':>5} | {'diverged':>9} | {'median max |w| (converged)':>26} | "
          f"{'median test cost (converged)':>28}")
    print(f"  {'-' * 5}-+-{'-' * 9}-+-{'-' * 26}-+-{'-' * 28}")
    summary = []
    for lam, runs in rows:
        ok = [r for r in runs if not r["diverged"]]
        amax = statistics.median(r["amax"] for r in ok) if ok else math.nan
        test = statistics.median(r["test"] for r in ok) if ok else math.nan
        summary.append((len(runs) - len(ok), amax))
        print(f"  {lam:>5} | {len(runs) - len(ok):>5}/{args.seeds:<3} | {amax:>26.4g} | "
              f"{test:>28.6g}")
    (d0, w0), (d1, w1) = summary
    both = [(a["diverged"], b["diverged"]) for a, b in zip(rows[0][1], rows[1][1])]
    saved = sum(1 for a, b in both if a and not b)
    print()
    print(f"  Diverged: {d0} of {args.seeds} without decay, {d1} with it; decay saved {saved} "
          f"run(s) that diverged without it.")
    if math.isfinite(w0) and math.isfinite(w1):
        print(f"  Converged runs: median max |w| {w0:.4g} without decay, {w1:.4g} with it.")
    exploded_early = [r for _, runs in rows for r in runs
                       if r["diverged"] and not r["costs"][1] < 1e3 * r["costs"][0]]
    if d1 and saved == 0 and len(exploded_early) == d0 + d1:
        print(f"  Every diverged run had exploded by epoch {sum(CALLS[:2])}, while the decay "
              f"shrinks W by only ηλ/n = {ETA * LAM / args.samples:.2g} per epoch: at this "
              "η it is the initial weights, not the decay, that decide.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
