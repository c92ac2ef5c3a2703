"""scratchnet against idiomatic PyTorch, side by side, on every device.

    python scripts/benchmark.py                          # everything (~3 min on 2 cores)
    python scripts/benchmark.py --quick                  # article network, n ≤ 1,000
    python scripts/benchmark.py --json out.json --plot out.png
    python scripts/benchmark.py --devices cpu --workloads article --sizes 100,1000 --reps 7

For every available device (``sn.available_devices()``: cpu, cuda:*, and
opencl:* once the OpenCL plugin is installed) and every workload it trains,
in one process and interleaved (A B A B …), scratchnet and the baseline on
the same data from the same initial weights:

* scratchnet: ``sn.sgd(train, y, quadratic_cost, k, (η, λ))``, the public
  call (validation, thread scoping, CUDA graphs included); the article network
  at the series' (η, λ) = (0.1, 0.01), the wider ones at a smaller η (they
  diverge at 0.1, see ``WORKLOADS``);
* the baseline, idiomatic PyTorch: ``nn.Sequential`` of ``nn.Linear`` and
  activation modules, the quadratic cost C0 = 1/(2n) Σ‖y − a‖² written with
  ``nn.MSELoss(reduction="sum")``, ``backward()``, and ``optim.SGD(lr=η)``
  with ``weight_decay=λ/n`` on the weights only (the same update as
  scratchnet's, see ``scratchnet/optim.py``).  On an OpenCL device the
  baseline runs on the CPU (torch has no OpenCL device).

Both read the cost from the device once per timed call of k epochs.  Each
repetition times k epochs, k chosen so that a call lasts at least
``--min-time`` seconds; after a warm-up the pair is timed ``--reps`` times and
the median and the spread ((max − min) / median) are reported.  Ratios are
baseline / scratchnet, each repetition's pair measured back to back.

GFLOP/s counts the matrix products only (2·out·in·n per product; forward,
∇W, and ∇a of every layer but the first) and is compared with the device's
large-GEMM rate: after every repetition's pair, the better of two products
of ``--peak-size``² matrices through the backend's own product kernel, at
the same thread count and so under the same load.  "peak / it" is the
median over repetitions of that rate over scratchnet's product rate.

Correctness: before timing, fresh copies of both train ``--check-epochs``
epochs (at most 200: at η = 0.1 training turns chaotic after ~230 epochs,
where a 1e-7 difference grows to 3e-3) and their last costs must agree to
``--tolerance`` (relative); the table shows both.

Threads: by default each case runs both implementations at the thread count
scratchnet picks for it (``scratchnet/threads.py``: one thread for small
products, torch's setting otherwise); ``--threads N`` forces N for both.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

import scratchnet as sn
from scratchnet.engine import threads as sn_threads

LAM = 0.01
ACTS = {"sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh, "linear": None}

#: name -> (dims, activations, default sizes, η).  The wider networks
#: diverge at the article's η = 0.1 (cost 1e23 after 10 epochs for
#: 4-256-256-1, NaN soon after), so they train at the largest η of
#: {0.1, 0.03, 0.01, 0.003} that stays finite; λ = 0.01 everywhere.
WORKLOADS = {
    "article": ((4, 32, 16, 1), ("sigmoid", "tanh", "linear"),
                (100, 1_000, 10_000, 100_000), 0.1),
    "4-256-256-1": ((4, 256, 256, 1), ("sigmoid", "tanh", "linear"),
                    (100, 1_000, 10_000), 0.01),
    "784-1024-1024-10": ((784, 1024, 1024, 10), ("sigmoid", "tanh", "linear"),
                         (10_000,), 0.003),
}


# ---------------------------------------------------------------- the data
def make_data(dims, n: int, seed: int = 0):
    """The series' regression task for 4 inputs (f = sin x0 + cos x1 +
    tanh x2 + x3²); for wider inputs, x ~ U[0, 1) and y = sin(x R) with a
    fixed random R (out_dim targets)."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, dims[0]), dtype=np.float32)
    if dims[0] == 4 and dims[-1] == 1:
        y = np.sin(x[:, 0]) + np.cos(x[:, 1]) + np.tanh(x[:, 2]) + x[:, 3] ** 2
        return x, y.reshape(-1, 1).astype(np.float32)
    r = rng.standard_normal((dims[0], dims[-1])).astype(np.float32) / math.sqrt(dims[0])
    return x, np.sin(x @ r).astype(np.float32)


def product_flops(dims, n: int) -> int:
    """Multiply-adds ×2 of one epoch's matrix products: z = W a (forward),
    ∇W = δ aᵀ, and ∇a = Wᵀ δ for every layer but the first."""
    total = 0
    for i, (fan_in, out) in enumerate(zip(dims, dims[1:])):
        total += 2 * out * fan_in * n * (2 if i == 0 else 3)
    return total


# ---------------------------------------------------------- the contenders
class Scratchnet:
    """scratchnet through its public API."""

    def __init__(self, dims, acts, x, y, device, seed, eta):
        self.eta = eta
        self.net = sn.inference_network(
            dims[0], [sn.fully_connected(o, a) for o, a in zip(dims[1:], acts)],
            device=device, seed=seed)
        self.train = sn.training_network(self.net, x)
        self.y = torch.from_numpy(y)
        self.device = device

    def epochs(self, k: int) -> float:
        return sn.sgd(self.train, self.y, sn.quadratic_cost, k, (self.eta, LAM))

    def close(self):
        self.train.close()
        self.net.close()


class Baseline:
    """Idiomatic PyTorch with scratchnet's initial weights."""

    def __init__(self, net, acts, x, y, device, eta):
        modules = []
        for layer, act in zip(net.layers, acts):
            linear = torch.nn.Linear(layer.in_dim, layer.out_dim)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(sn.to_numpy(layer.weights)))
                linear.bias.copy_(torch.from_numpy(sn.to_numpy(layer.bias)))
            modules.append(linear)
            if ACTS[act] is not None:
                modules.append(ACTS[act]())
        self.model = torch.nn.Sequential(*modules).to(device)
        self.x = torch.from_numpy(x).to(device)
        self.y = torch.from_numpy(y).to(device)
        n = x.shape[0]
        self.loss = torch.nn.MSELoss(reduction="sum")
        self.scale = 0.5 / n          # C0 = 1/(2n) Σ ‖y − a‖²
        linears = [m for m in self.model if isinstance(m, torch.nn.Linear)]
        self.opt = torch.optim.SGD(
            [{"params": [m.weight for m in linears], "weight_decay": LAM / n},
             {"params": [m.bias for m in linears], "weight_decay": 0.0}], lr=eta)

    def epochs(self, k: int) -> float:
        for _ in range(k):
            self.opt.zero_grad()
            loss = self.loss(self.model(self.x), self.y) * self.scale
            loss.backward()
            self.opt.step()
        return loss.item()

    def close(self):
        pass


# ------------------------------------------------------------------ timing
def synchronizer(device: str):
    if device.startswith("cuda"):
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def timed(run, k: int, sync) -> float:
    """Milliseconds per epoch of ``run(k)``, device work included."""
    sync()
    start = time.perf_counter()
    run(k)
    sync()
    return (time.perf_counter() - start) / k * 1e3


class GemmProbe:
    """One size × size × size product through the backend's own
    ``input_gradient`` kernel (out := wᵀ δ): the device's large-GEMM rate,
    timed inside every repetition so that it sees the same machine load as
    the pair it is compared with."""

    def __init__(self, device: str, size: int):
        from scratchnet.backends import get_backend

        self.be = get_backend(device, torch.float32)
        self.size = size
        gen = torch.Generator().manual_seed(0)
        self.w = self.be.from_host(torch.rand(size, size, generator=gen))
        self.d = self.be.from_host(torch.rand(size, size, generator=gen))
        self.out = self.be.zeros((size, size))
        self.gflops()   # warm-up

    def gflops(self) -> float:
        self.be.synchronize()
        start = time.perf_counter()
        self.be.input_gradient(self.out, self.w, self.d)
        self.be.synchronize()
        return 2 * self.size ** 3 / (time.perf_counter() - start) / 1e9

    def close(self) -> None:
        for a in (self.w, self.d, self.out):
            self.be.release(a)


def spread(values) -> float:
    return (max(values) - min(values)) / statistics.median(values)


def run_case(device, workload, n, args, log) -> dict:
    dims, acts, _, eta = WORKLOADS[workload]
    x, y = make_data(dims, n)
    base_device = "cpu" if device.startswith("opencl") else device
    sync_sn, sync_base = synchronizer(device), synchronizer(base_device)

    # Both at the thread count scratchnet would choose (or --threads).
    largest = max(o * i for i, o in zip(dims, dims[1:])) * n
    auto = sn_threads.automatic_threads(largest) if device == "cpu" else None
    chosen = args.threads or auto or torch.get_num_threads()
    torch.set_num_threads(chosen)

    # Correctness first: fresh pair, same start, the first check_epochs epochs.
    flops = product_flops(dims, n)
    per_epoch_guess = flops / 20e9 * 1e3       # ms at a pessimistic 20 GFLOP/s
    # At least 3 epochs: the first cost is a forward pass only; the later
    # ones check the backward pass and the update too.
    check_epochs = max(3, min(args.check_epochs, int(args.max_check_s * 1e3 / per_epoch_guess)))
    a = Scratchnet(dims, acts, x, y, device, args.seed, eta)
    b = Baseline(a.net, acts, x, y, base_device, eta)
    cost_sn, cost_base = a.epochs(check_epochs), b.epochs(check_epochs)
    rel = abs(cost_sn - cost_base) / abs(cost_base)

    # Warm-up, then k epochs per call so that a call lasts >= min_time.
    warm = [timed(a.epochs, 1, sync_sn), timed(b.epochs, 1, sync_base)]
    warm = [timed(a.epochs, 2, sync_sn), timed(b.epochs, 2, sync_base)]
    k = max(1, math.ceil(args.min_time * 1e3 / max(min(warm), 1e-3)))
    probe = GemmProbe(device, args.peak_size_gpu if device.startswith("cuda")
                      else args.peak_size)
    t_sn, t_base, peaks = [], [], []
    for _ in range(args.reps):
        t_sn.append(timed(a.epochs, k, sync_sn))
        t_base.append(timed(b.epochs, k, sync_base))
        peaks.append(max(probe.gflops(), probe.gflops()))
    probe.close()
    ratios = [tb / ts for ts, tb in zip(t_sn, t_base)]
    # peak / scratchnet's product rate, per repetition (same load), then median
    peak_ratios = [p / (flops / ts / 1e6) for p, ts in zip(peaks, t_sn)]

    profile = None
    if args.profile:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            a.epochs(k)
        profile = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14)
    a.close()
    b.close()

    ms_sn, ms_base = statistics.median(t_sn), statistics.median(t_base)
    result = {
        "device": device, "baseline_device": base_device, "workload": workload,
        "dims": list(dims), "activations": list(acts), "n": n, "eta": eta, "lam": LAM,
        "threads": chosen,
        "epochs_per_rep": k, "reps": args.reps,
        "scratchnet_ms": ms_sn, "scratchnet_spread": spread(t_sn), "scratchnet_all_ms": t_sn,
        "baseline_ms": ms_base, "baseline_spread": spread(t_base), "baseline_all_ms": t_base,
        "speedup": statistics.median(ratios), "speedups": ratios,
        "product_gflop": flops / 1e9,
        "scratchnet_gflops": flops / ms_sn / 1e6, "baseline_gflops": flops / ms_base / 1e6,
        "peak_gflops": statistics.median(peaks), "peak_gflops_all": peaks,
        "peak_over_scratchnet": statistics.median(peak_ratios),
        "check_epochs": check_epochs, "cost_scratchnet": cost_sn, "cost_baseline": cost_base,
        "cost_rel_diff": rel, "costs_agree": rel <= args.tolerance,
    }
    log(row(result))
    if profile:
        log(profile)
    return result


# ----------------------------------------------------------------- output
HEADER = ("| device | network | n | thr | scratchnet ms/epoch | PyTorch ms/epoch | speed-up "
          "| scratchnet GFLOP/s | peak / it | cost (scratchnet / PyTorch, epoch) |\n"
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---|")


def row(r: dict) -> str:
    base = f" on {r['baseline_device']}" if r["baseline_device"] != r["device"] else ""
    flag = "" if r["costs_agree"] else " **DIFFER**"
    return (f"| {r['device']} | {r['workload']} | {r['n']:,} | {r['threads']} "
            f"| {r['scratchnet_ms']:.4g} (±{50 * r['scratchnet_spread']:.0f}%) "
            f"| {r['baseline_ms']:.4g} (±{50 * r['baseline_spread']:.0f}%){base} "
            f"| **{r['speedup']:.2f}×** | {r['scratchnet_gflops']:.1f} "
            f"| {r['peak_over_scratchnet']:.2f} "
            f"| {r['cost_scratchnet']:.6g} / {r['cost_baseline']:.6g} @{r['check_epochs']}{flag} |")


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = [w for w in WORKLOADS if any(r["workload"] == w for r in results)]
    fig, axes = plt.subplots(1, len(workloads), figsize=(5.5 * len(workloads), 4.2),
                             squeeze=False)
    for ax, workload in zip(axes[0], workloads):
        rows = [r for r in results if r["workload"] == workload]
        if len({r["n"] for r in rows}) == 1:      # one size: bars, not a line
            labels, values = [], []
            for r in rows:
                labels += [f"scratchnet\n{r['device']}", f"PyTorch\n{r['baseline_device']}"]
                values += [r["scratchnet_ms"], r["baseline_ms"]]
            ax.bar(range(len(values)), values, color=["C0", "C1"] * len(rows))
            ax.set_xticks(range(len(values)), labels, fontsize=8)
            ax.set_ylabel("ms per epoch (median)")
            ax.set_title(f"{workload}, n = {rows[0]['n']:,}")
            continue
        for device in dict.fromkeys(r["device"] for r in rows):
            sel = sorted((r for r in rows if r["device"] == device), key=lambda r: r["n"])
            ns = [r["n"] for r in sel]
            line = ax.plot(ns, [r["scratchnet_ms"] for r in sel], "o-",
                           label=f"scratchnet {device}")[0]
            base = sel[0]["baseline_device"]
            label = f"PyTorch {base}" + (f" (for {device})" if base != device else "")
            ax.plot(ns, [r["baseline_ms"] for r in sel], "s--", color=line.get_color(),
                    label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("n (samples, full batch)")
        ax.set_ylabel("ms per epoch (median)")
        ax.set_title(workload)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or platform.machine()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", help="comma-separated (default: sn.available_devices())")
    p.add_argument("--workloads", default=",".join(WORKLOADS),
                   help=f"comma-separated from {', '.join(WORKLOADS)}")
    p.add_argument("--sizes", help="comma-separated n (default: each workload's own)")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions per contender")
    p.add_argument("--min-time", type=float, default=0.25,
                   help="seconds per timed call (sets the epochs per call)")
    p.add_argument("--check-epochs", type=int, default=200,
                   help="epochs of the cost-agreement check (≤ 200; fewer for slow cases)")
    p.add_argument("--max-check-s", type=float, default=6.0,
                   help="rough time budget per check run, shrinks the epochs for big cases")
    p.add_argument("--tolerance", type=float, default=1e-3,
                   help="relative cost difference allowed between the two")
    p.add_argument("--threads", type=int, help="force this CPU thread count on both")
    p.add_argument("--peak-size", type=int, default=2048, help="GEMM size for the CPU peak")
    p.add_argument("--peak-size-gpu", type=int, default=8192, help="GEMM size on CUDA")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", action="store_true",
                   help="print a torch.profiler per-op table of scratchnet for each case")
    p.add_argument("--quick", action="store_true",
                   help="article network, n ∈ {100, 1000}, 0.1 s per call")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--plot", help="write a PNG of ms/epoch against n here")
    args = p.parse_args(argv)
    if args.quick:
        args.workloads, args.sizes = "article", args.sizes or "100,1000"
        args.min_time = min(args.min_time, 0.1)
    if args.reps < 1 or args.min_time <= 0 or not 1 <= args.check_epochs <= 200:
        p.error("--reps >= 1, --min-time > 0 and 1 <= --check-epochs <= 200")
    for w in args.workloads.split(","):
        if w not in WORKLOADS:
            p.error(f"--workloads: unknown {w!r}; known: {', '.join(WORKLOADS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    devices = args.devices.split(",") if args.devices else sn.available_devices()
    if args.threads:
        sn.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else None
    meta = {"machine": machine(), "cores": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
            "load_before": os.getloadavg(), "lam": LAM, "dtype": "float32"}
    if torch.cuda.is_available():
        meta["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    print(f"# {meta['machine']} ({meta['cores']} cores), torch {meta['torch']}, "
          f"load average {meta['load_before'][0]:.2f}, λ = {LAM}, float32; η: "
          + ", ".join(f"{w} {v[3]}" for w, v in WORKLOADS.items()))
    print(HEADER, flush=True)
    results = []
    default_threads = torch.get_num_threads()
    for device in devices:
        for workload in args.workloads.split(","):
            for n in sizes or WORKLOADS[workload][2]:
                results.append(run_case(device, workload, n, args,
                                        lambda s: print(s, flush=True)))
                torch.set_num_threads(default_threads)
    meta["load_after"] = os.getloadavg()
    peaks = ", ".join(f"{r['device']} {r['workload']} n={r['n']} ({r['threads']} thr) "
                      f"{r['peak_gflops']:.0f}" for r in results)
    print(f"# GEMM rates (GFLOP/s, median per case): {peaks}; load average after "
          f"{meta['load_after'][0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1)
    if args.plot:
        plot(results, args.plot)
    return 0 if all(r["costs_agree"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
