"""scratchnet against its peers: JAX's jitted loop, idiomatic PyTorch, the hardware.

    python scripts/benchmark.py                         # JAX table: article, n = 100, 1,000, 10,000
    python scripts/benchmark.py --mode pytorch          # against PyTorch, every device and workload
    python scripts/benchmark.py --mode candidates       # the fast-runner candidates side by side
    python scripts/benchmark.py --mode guard            # what the divergence guard costs
    python scripts/benchmark.py --help                  # every mode and flag

Every mode times its contenders in one process, interleaved (A B C A B C
…), each call running k epochs with k chosen so a call lasts at least
``--min-time`` seconds, and reports medians over ``--reps`` repetitions;
ratios are medians of the per-repetition ratios.  The machine this runs on
may be shared, so the ratios measured side by side are the figures to
quote, not the absolute times.  Before timing, fresh copies of the
contenders train ``--check-epochs`` epochs from the same weights on the same
data and their costs must agree to ``--tolerance`` (relative).

Modes:

jax (default)
    The article network (4-32-16-1: sigmoid, tanh, linear; η = 0.1, λ = 0.01,
    float32, one thread each) through ``sn.sgd`` (the automatic runner, the
    divergence guard on as by default), JAX (``jax.value_and_grad``, the
    epochs inside one jitted ``lax.fori_loop``, the same maths) and idiomatic
    PyTorch.  Also the guard's cost (``guard=False`` timed beside it) and
    the GFLOP/s of the epoch's products against a single-thread GEMM
    (2048³ through the backend, timed in every repetition so it sees the
    same load).  JAX is optional (``pip install -e '.[bench]'``): without
    it the mode says so and times the others.
pytorch
    ``sn.sgd`` against idiomatic PyTorch (``nn.Sequential``, ``MSELoss``,
    ``backward()``, ``optim.SGD`` with weight decay λ/n on the weights) on
    every available device and workload, at the thread count scratchnet
    picks; an OpenCL device's baseline runs on the CPU.
candidates
    The ways of running the epoch that were measured for the fast runner:
    the native runner, the reference runner (Python, one ATen call per
    kernel), a C++ loop of ATen ``out=`` calls (K epochs per call, built
    with torch's extension API), ``torch.compile`` of the hand-written
    epoch (inductor, C++ wrapper) and JAX; scratchnet without the guard so
    that every contender runs bare epochs.
guard
    ``sn.sgd`` with the guard off, and on at each ``--guard-every``; wall
    and CPU time, for the native and the reference runner.
blocks
    The native runner's samples per block (``--blocks``).
logging
    TensorBoard logging (``log_dir=``, ``log_every``, ``test=``) against none.
profile
    The reference runner's per-operation profile (``torch.profiler``).
aten
    Micro-benchmarks of the reference backend's kernel choices (µs per call).
agreement
    Not a timing: how far the native runner's costs and weights are from the
    reference runner's after --check-epochs epochs, in ulps, over the
    activations, costs, optimizers, full batch and mini-batches, float32 and
    float64 (the matrix of tests/test_native.py).
ab
    ``sgd`` of git revision ``--against`` (imported from ``git archive``
    under another name) against this checkout's, on the reference runner
    and on the automatic one: the full-batch epoch through the public call,
    guard on, interleaved.
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
from functools import partial

MODES = ("jax", "pytorch", "candidates", "guard", "blocks", "logging", "profile", "aten",
         "agreement", "ab")
LAM = 0.01

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


# ------------------------------------------------------------ arguments
def parse_args(argv=None):
    """Parsed before torch is imported, so ``--help`` is instant."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 2)[2],
                                formatter_class=_Formatter)
    p.add_argument("--mode", choices=MODES, default="jax", help="what to measure")
    p.add_argument("--device", help="comma-separated devices for --mode pytorch "
                   "(omitted: every one sn.available_devices() lists)")
    p.add_argument("--workloads", default=",".join(WORKLOADS),
                   help=f"comma-separated, for --mode pytorch (and --mode blocks, which "
                   f"otherwise runs the article network), from {', '.join(WORKLOADS)}")
    p.add_argument("--sizes", help="comma-separated n (omitted: 100,1000,10000; --mode "
                   "pytorch: each workload's own; --mode blocks: also 100000; --mode "
                   "logging: 10000)")
    p.add_argument("--reps", type=int, default=7, help="timed repetitions per contender")
    p.add_argument("--min-time", type=float, default=0.25,
                   help="seconds per timed call (sets the epochs per call)")
    p.add_argument("--check-epochs", type=int, default=200,
                   help="epochs of the cost-agreement check (<= 200: the article network "
                   "turns chaotic after ~230 epochs at η = 0.1)")
    p.add_argument("--max-check-s", type=float, default=6.0,
                   help="rough time budget per check run; shrinks the epochs of big cases")
    p.add_argument("--tolerance", type=float, default=1e-3,
                   help="relative cost difference allowed between contenders")
    p.add_argument("--threads", type=int,
                   help="force this CPU thread count on every contender (omitted: one thread "
                   "each; --mode pytorch: the count scratchnet picks)")
    p.add_argument("--peak-size", type=int, default=2048, help="GEMM size for the CPU rate")
    p.add_argument("--peak-size-gpu", type=int, default=8192, help="GEMM size on CUDA")
    p.add_argument("--guard-every", default="auto,1,16,256",
                   help="guard_every values for --mode guard (auto: the default, None)")
    p.add_argument("--blocks", default="64,128,256,512,1024",
                   help="samples per block for --mode blocks")
    p.add_argument("--seed", type=int, default=0, help="data and weight seed")
    p.add_argument("--against", default="f48ecd4",
                   help="--mode ab: the git revision whose sgd this checkout's is timed against "
                        "(default: the previous training loop, one per front end)")
    p.add_argument("--quick", action="store_true",
                   help="n = 100 and 1,000 only, 3 repetitions of 0.1 s (off when omitted)")
    p.add_argument("--json", help="write the results (and the machine's description) here "
                   "(omitted: none)")
    p.add_argument("--plot", help="--mode pytorch: write a PNG of ms/epoch against n here "
                   "(omitted: none)")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes = args.sizes or "100,1000"
        args.reps, args.min_time = min(args.reps, 3), min(args.min_time, 0.1)
    if args.reps < 1 or args.min_time <= 0 or not 1 <= args.check_epochs <= 200:
        p.error("--reps >= 1, --min-time > 0 and 1 <= --check-epochs <= 200")
    for w in args.workloads.split(","):
        if w not in WORKLOADS:
            p.error(f"--workloads: unknown {w!r}; known: {', '.join(WORKLOADS)}")
    return args


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown (a flag without one says in its help what happens
    when it is omitted), the epilog's layout kept."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


# --------------------------------------------------------------- the data
def make_data(dims, n: int, seed: int = 0):
    """The series' regression task for 4 inputs (f = sin x0 + cos x1 +
    tanh x2 + x3²); for wider inputs, x ~ U[0, 1) and y = sin(x R) with a
    fixed random R (out_dim targets)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.random((n, dims[0]), dtype=np.float32)
    if dims[0] == 4 and dims[-1] == 1:
        y = np.sin(x[:, 0]) + np.cos(x[:, 1]) + np.tanh(x[:, 2]) + x[:, 3] ** 2
        return x, y.reshape(-1, 1).astype(np.float32)
    r = rng.standard_normal((dims[0], dims[-1])).astype(np.float32) / math.sqrt(dims[0])
    return x, np.sin(x @ r).astype(np.float32)


def initial_net(dims, acts, seed: int, device: str = "cpu"):
    """The inference network every contender starts from (its weights)."""
    import scratchnet as sn

    return sn.inference_network(dims[0], [sn.fully_connected(o, a)
                                          for o, a in zip(dims[1:], acts)],
                                device=device, seed=seed)


def product_flops(dims, n: int) -> int:
    """Multiply-adds ×2 of one epoch's matrix products: z = W a (forward),
    ∇W = δ aᵀ, and ∇a = Wᵀ δ for every layer but the first."""
    total = 0
    for i, (fan_in, out) in enumerate(zip(dims, dims[1:])):
        total += 2 * out * fan_in * n * (2 if i == 0 else 3)
    return total


# ------------------------------------------------------------ contenders
class Scratchnet:
    """scratchnet through its public ``sn.sgd``.  ``runner``: "auto" (what
    the engine picks), "native" or "reference"; ``sgd_kw`` go to sgd
    (e.g. guard=False)."""

    def __init__(self, dims, acts, x, y, device, seed, eta, runner="auto", block=None,
                 **sgd_kw):
        import torch

        import scratchnet as sn
        from scratchnet.engine import describe, runner_for

        self.sn, self.eta, self.kw = sn, eta, sgd_kw
        self.net = sn.inference_network(
            dims[0], [sn.fully_connected(o, a) for o, a in zip(dims[1:], acts)],
            device=device, seed=seed)
        self.train = sn.training_network(self.net, x)
        if runner == "reference":
            from scratchnet.engine.reference import FullBatch
            self.train.runner = FullBatch(self.train)
        elif runner == "native":
            from scratchnet.engine.native import NativeFullBatch
            from scratchnet.engine.native import runner as native_runner
            saved = native_runner.BLOCK, native_runner.WORKSPACE_BYTES
            if block:   # exactly this block size
                native_runner.BLOCK, native_runner.WORKSPACE_BYTES = block, 1 << 62
            try:
                self.train.runner = NativeFullBatch(self.train)
            finally:
                native_runner.BLOCK, native_runner.WORKSPACE_BYTES = saved
        self.runner = describe(runner_for(self.train))
        self.y = torch.from_numpy(y)

    def epochs(self, k: int) -> float:
        return self.sn.sgd(self.train, self.y, self.sn.quadratic_cost, k, (self.eta, LAM),
                           **self.kw)

    def close(self):
        self.train.close()
        self.net.close()


class Baseline:
    """Idiomatic PyTorch with scratchnet's initial weights."""

    def __init__(self, net, acts, x, y, device, eta):
        import torch

        import scratchnet as sn

        kinds = {"sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh, "linear": None}
        modules = []
        for layer, act in zip(net.layers, acts):
            linear = torch.nn.Linear(layer.in_dim, layer.out_dim)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(sn.to_numpy(layer.weights)))
                linear.bias.copy_(torch.from_numpy(sn.to_numpy(layer.bias)))
            modules.append(linear)
            if kinds[act] is not None:
                modules.append(kinds[act]())
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


def jax_available() -> str | None:
    """None when JAX imports, else why not."""
    try:
        _import_jax()
    except ImportError as exc:
        return f"JAX is not installed ({exc}); pip install -e '.[bench]'"
    return None


def _import_jax():
    # One thread for XLA too, set before its first import.
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_multi_thread_eigen" not in flags:
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1").strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    return jax


class Jax:
    """JAX: ``jax.value_and_grad`` of C0, the update by hand (the same as
    scratchnet's: W ← W − η(∇W + (λ/n) W), b ← b − η ∇b), k epochs inside
    one jitted ``lax.fori_loop``; the host reads the last cost."""

    def __init__(self, net, acts, x, y, eta):
        jax = _import_jax()
        import jax.numpy as jnp

        import scratchnet as sn

        self.params = tuple(jnp.asarray(sn.to_numpy(t)) for la in net.layers
                            for t in (la.weights, la.bias))
        xs, ys, n = jnp.asarray(x), jnp.asarray(y), x.shape[0]
        fns = {"sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh, "linear": lambda z: z}
        layers = [fns[a] for a in acts]

        def cost(p):
            a = xs
            for i, f in enumerate(layers):
                a = f(a @ p[2 * i].T + p[2 * i + 1])
            return jnp.sum((a - ys) ** 2) / (2 * n)

        value_and_grad = jax.value_and_grad(cost)

        @jax.jit
        def epochs(p, k):
            def body(_, carry):
                p, _ = carry
                c, g = value_and_grad(p)
                p = tuple(w - eta * (gw + (LAM / n) * w) if j % 2 == 0 else w - eta * gw
                          for j, (w, gw) in enumerate(zip(p, g)))
                return p, c
            return jax.lax.fori_loop(0, k, body, (p, jnp.zeros((), jnp.float32)))

        self.run = epochs

    def epochs(self, k: int) -> float:
        self.params, cost = self.run(self.params, k)
        return float(cost)

    def close(self):
        pass


ATEN_LOOP = r"""
#include <torch/extension.h>
// K epochs of the reference step through ATen out= calls, no Python per epoch.
void epochs(std::vector<at::Tensor> W, std::vector<at::Tensor> bcol, std::vector<at::Tensor> b,
            std::vector<at::Tensor> dW, std::vector<at::Tensor> db, std::vector<at::Tensor> a,
            std::vector<at::Tensor> g, std::vector<int64_t> acts, at::Tensor x, at::Tensor y,
            at::Tensor ones, at::Tensor cost, int64_t k, double eta, double lam) {
    at::NoGradGuard no_grad;
    const size_t L = W.size();
    const double step = -eta / (double)x.size(1);
    for (int64_t e = 0; e < k; e++) {
        for (size_t l = 0; l < L; l++) {
            at::addmm_out(a[l], bcol[l], W[l], l ? a[l - 1] : x);
            if (acts[l] == 0) at::sigmoid_(a[l]);
            else if (acts[l] == 1) at::tanh_(a[l]);
        }
        at::sub_out(g[L - 1], a[L - 1], y);
        auto flat = g[L - 1].view({-1});
        at::mv_out(cost, flat.view({1, -1}), flat);
        for (size_t l = L; l-- > 0;) {
            if (acts[l] == 0) at::sigmoid_backward_out(g[l], g[l], a[l]);
            else if (acts[l] == 1) at::tanh_backward_out(g[l], g[l], a[l]);
            at::mm_out(dW[l], g[l], (l ? a[l - 1] : x).t());
            at::mv_out(db[l], g[l], ones);
            if (l) at::mm_out(g[l - 1], W[l].t(), g[l]);
        }
        for (size_t l = 0; l < L; l++) {
            if (lam) dW[l].add_(W[l], lam);
            W[l].add_(dW[l], step);
            b[l].add_(db[l], step);
        }
    }
}
"""


class AtenLoop:
    """The epoch loop in C++ over ATen ``out=`` calls (torch's extension
    API, built once into torch's extension cache): the reference runner's
    kernels without Python between them, k epochs per call."""

    module = None

    def __init__(self, net, acts, x, y, eta):
        import torch

        if AtenLoop.module is None:
            from torch.utils.cpp_extension import load_inline

            print("building the ATen-loop extension (once; ~1 min)...", file=sys.stderr,
                  flush=True)
            AtenLoop.module = load_inline("scratchnet_bench_aten_loop", [ATEN_LOOP],
                                          functions=["epochs"], extra_cflags=["-O3"])
        codes = {"sigmoid": 0, "tanh": 1, "linear": 2}
        n = x.shape[0]
        self.W = [la.weights.clone() for la in net.layers]
        self.b = [la.bias.clone() for la in net.layers]
        self.bcol = [b.unsqueeze(1) for b in self.b]
        self.dW = [torch.empty_like(w) for w in self.W]
        self.db = [torch.empty_like(b) for b in self.b]
        self.a = [torch.empty(la.out_dim, n) for la in net.layers]
        self.g = [torch.empty(la.out_dim, n) for la in net.layers]
        self.acts = [codes[a] for a in acts]
        self.x = torch.from_numpy(x).t().contiguous()
        self.y = torch.from_numpy(y).t().contiguous()
        self.ones, self.cost, self.n, self.eta = torch.ones(n), torch.empty(1), n, eta

    def epochs(self, k: int) -> float:
        self.module.epochs(self.W, self.bcol, self.b, self.dW, self.db, self.a, self.g,
                           self.acts, self.x, self.y, self.ones, self.cost, k, self.eta, LAM)
        return self.cost.item() / (2 * self.n)

    def close(self):
        pass


class Compiled:
    """``torch.compile`` (inductor, C++ wrapper) of the hand-written epoch:
    forward, δ, ∇W, ∇b and the update written out with torch ops (no
    autograd), the parameters updated in place; one compiled call per
    epoch."""

    def __init__(self, net, acts, x, y, eta):
        import torch
        import torch._inductor.config as inductor

        inductor.cpp_wrapper = True
        fns = {"sigmoid": (torch.sigmoid, lambda a: a * (1 - a)),
               "tanh": (torch.tanh, lambda a: 1 - a * a),
               "linear": (lambda z: z, None)}
        layers = [fns[a] for a in acts]
        n = x.shape[0]
        self.params = [t.clone() for la in net.layers for t in (la.weights, la.bias)]
        self.x = torch.from_numpy(x).t().contiguous()
        self.y = torch.from_numpy(y).t().contiguous()
        self.n = n

        def epoch(params, x, y):
            outs = [x]
            for i, (f, _) in enumerate(layers):
                outs.append(f(params[2 * i] @ outs[-1] + params[2 * i + 1][:, None]))
            g = outs[-1] - y
            cost = (g * g).sum()
            for i in reversed(range(len(layers))):
                deriv = layers[i][1]
                if deriv is not None:
                    g = g * deriv(outs[i + 1])
                w, b = params[2 * i], params[2 * i + 1]
                grad_w = g @ outs[i].t() + LAM * w
                g_prev = w.t() @ g if i else None
                w.sub_((eta / n) * grad_w)
                b.sub_((eta / n) * g.sum(1))
                g = g_prev
            return cost

        self.run = torch.compile(epoch, fullgraph=True, dynamic=False)

    def epochs(self, k: int) -> float:
        for _ in range(k):
            cost = self.run(self.params, self.x, self.y)
        return cost.item() / (2 * self.n)

    def close(self):
        pass


# ----------------------------------------------------------------- timing
def synchronizer(device: str):
    import torch

    if device.startswith("cuda"):
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def timed(run, k: int, sync=None) -> tuple[float, float]:
    """(wall, CPU) milliseconds per epoch of ``run(k)``, device work included."""
    if sync:
        sync()
    wall, cpu = time.perf_counter(), time.process_time()
    run(k)
    if sync:
        sync()
    return (time.perf_counter() - wall) / k * 1e3, (time.process_time() - cpu) / k * 1e3


def epochs_per_call(run, min_time: float, sync=None) -> int:
    """Epochs that make a call last at least ``min_time`` seconds (after a
    warm-up call of one and of two epochs)."""
    timed(run, 1, sync)
    ms = min(timed(run, 2, sync)[0], timed(run, 2, sync)[0])
    return max(1, math.ceil(min_time * 1e3 / max(ms, 1e-4)))


class GemmProbe:
    """One size³ product through the backend's own ``input_gradient``
    kernel (out := wᵀ δ): the device's large-GEMM rate at the current
    thread count, timed inside every repetition so that it sees the same
    load as the contenders it is compared with."""

    def __init__(self, device: str, size: int):
        import torch

        from scratchnet.backends import get_backend

        self.be = get_backend(device, torch.float32)
        self.size = size
        gen = torch.Generator().manual_seed(0)
        self.w = self.be.from_host(torch.rand(size, size, generator=gen))
        self.d = self.be.from_host(torch.rand(size, size, generator=gen))
        self.out = self.be.zeros((size, size))
        self.gflops()   # warm-up

    def gflops(self) -> float:
        best = 0.0
        for _ in range(2):
            self.be.synchronize()
            start = time.perf_counter()
            self.be.input_gradient(self.out, self.w, self.d)
            self.be.synchronize()
            best = max(best, 2 * self.size ** 3 / (time.perf_counter() - start) / 1e9)
        return best

    def close(self) -> None:
        for a in (self.w, self.d, self.out):
            self.be.release(a)


class FmaProbe:
    """The core's vector FMA throughput (the native kernels' ``sn_fma_peak``:
    16 independent FMA chains, no memory): the hardware ceiling for one
    thread, beside the GEMM rate (which is what a BLAS library reaches)."""

    def __init__(self):
        from scratchnet.engine.native import load

        self.lib = load()
        self.gflops()

    def gflops(self) -> float:
        best = 0.0
        for _ in range(2):
            start = time.perf_counter()
            flops = self.lib.sn_fma_peak(1_000_000)
            best = max(best, flops / (time.perf_counter() - start) / 1e9)
        return best


def progress(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True)


def interleave(runs: dict, args, desc: str, extra=None, syncs=None) -> dict:
    """Time every run ``args.reps`` times, interleaved, each call of its own
    k epochs.  Returns {name: {"wall": [...], "cpu": [...], "k": k}} in ms
    per epoch; ``extra()`` (e.g. a GEMM probe) runs after every repetition
    and its values are returned under "extra"."""
    syncs = syncs or {}
    ks = {name: epochs_per_call(run, args.min_time, syncs.get(name))
          for name, run in runs.items()}
    out = {name: {"wall": [], "cpu": [], "k": ks[name]} for name in runs}
    extras = []
    names = list(runs)
    with progress(args.reps * len(names), desc) as bar:
        for rep in range(args.reps):
            order = names[rep % len(names):] + names[:rep % len(names)]   # rotate
            for name in order:
                wall, cpu = timed(runs[name], ks[name], syncs.get(name))
                out[name]["wall"].append(wall)
                out[name]["cpu"].append(cpu)
                bar.update()
            if extra is not None:
                extras.append(extra())
    out["extra"] = extras
    return out


def med(values) -> float:
    return statistics.median(values)


def ratio(times: dict, a: str, b: str, clock: str = "wall") -> float:
    """Median over repetitions of time(a) / time(b)."""
    return med([x / y for x, y in zip(times[a][clock], times[b][clock])])


def spread(values) -> float:
    return (max(values) - min(values)) / statistics.median(values)


def check(contenders: dict, epochs: int, tolerance: float) -> dict:
    """Train fresh contenders ``epochs`` epochs; their last costs, and
    whether each agrees with the first one's."""
    costs = {}
    for name, make in contenders.items():
        made = make()
        costs[name] = made.epochs(epochs)
        made.close()
    first = next(iter(costs.values()))
    return {name: (c, abs(c - first) <= tolerance * abs(first)) for name, c in costs.items()}


def check_epochs(dims, n: int, args) -> int:
    """At least 3 epochs (the first cost is a forward pass only; later ones
    check backward and update too), at most --check-epochs, fewer for big
    cases (at a pessimistic 20 GFLOP/s)."""
    per_epoch_ms = product_flops(dims, n) / 20e9 * 1e3
    return max(3, min(args.check_epochs, int(args.max_check_s * 1e3 / per_epoch_ms)))


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(ms: float) -> str:
    return f"{ms:.4g}"


# ------------------------------------------------------------------ modes
def mode_jax(args, meta) -> list[dict]:
    """The issue's table: JAX / scratchnet, PyTorch / scratchnet, the
    guard's cost, GFLOP/s against the GEMM rate."""
    import torch

    dims, acts, _, eta = WORKLOADS["article"]
    sizes = [int(s) for s in (args.sizes or "100,1000,10000").split(",")]
    torch.set_num_threads(args.threads or 1)
    no_jax = jax_available()
    if no_jax:
        print(f"# JAX skipped: {no_jax}")
    results = []
    for n in sizes:
        x, y = make_data(dims, n, args.seed)

        sn_ = partial(Scratchnet, dims, acts, x, y, "cpu", args.seed, eta)
        start = initial_net(dims, acts, args.seed)
        makers = {"scratchnet": sn_, "scratchnet guard=False": partial(sn_, guard=False)}
        if not no_jax:
            makers["JAX"] = partial(Jax, start, acts, x, y, eta)
        makers["PyTorch"] = partial(Baseline, start, acts, x, y, "cpu", eta)
        agree = check(makers, check_epochs(dims, n, args), args.tolerance)
        live = {name: make() for name, make in makers.items()}
        probe = GemmProbe("cpu", args.peak_size)
        fma = FmaProbe()
        times = interleave({k: v.epochs for k, v in live.items()}, args, f"jax n={n}",
                           extra=lambda probe=probe, fma=fma: (probe.gflops(), fma.gflops()))
        probe.close()
        flops = product_flops(dims, n)
        gflops = [flops / t / 1e6 for t in times["scratchnet"]["wall"]]
        gemm = [g for g, _ in times["extra"]]
        peak = [p for _, p in times["extra"]]
        r = {"n": n, "runner": live["scratchnet"].runner, "agree": agree,
             "times": {k: v for k, v in times.items() if k != "extra"},
             "gemm_gflops": gemm, "fma_gflops": peak, "scratchnet_gflops": med(gflops),
             "of_gemm": med([g / p for g, p in zip(gflops, gemm)]),
             "of_fma": med([g / p for g, p in zip(gflops, peak)]),
             "guard_cost": ratio(times, "scratchnet", "scratchnet guard=False") - 1,
             "guard_cost_cpu": ratio(times, "scratchnet", "scratchnet guard=False", "cpu") - 1,
             "pytorch_over_scratchnet": ratio(times, "PyTorch", "scratchnet")}
        if not no_jax:
            r["jax_over_scratchnet"] = ratio(times, "JAX", "scratchnet")
        results.append(r)
        for obj in live.values():
            obj.close()
    print(f"\nscratchnet runner: {results[0]['runner']}; one thread each; medians of "
          f"{args.reps} interleaved repetitions; ms per epoch")
    header = ["n", "scratchnet", "JAX", "PyTorch", "JAX / scratchnet", "PyTorch / scratchnet",
              "guard cost (wall / CPU)", "scratchnet GFLOP/s", "GEMM GFLOP/s", "of GEMM",
              "FMA peak GFLOP/s", "of peak", f"cost @{args.check_epochs} (agree)"]
    rows = []
    for r in results:
        t = r["times"]
        costs = ", ".join(f"{c:.6g}" + ("" if ok else " **DIFFERS**")
                          for c, ok in r["agree"].values())
        rows.append([f"{r['n']:,}", fmt(med(t["scratchnet"]["wall"])),
                     fmt(med(t["JAX"]["wall"])) if "JAX" in t else "–",
                     fmt(med(t["PyTorch"]["wall"])),
                     f"**{r['jax_over_scratchnet']:.2f}**" if "JAX" in t else "–",
                     f"{r['pytorch_over_scratchnet']:.2f}",
                     f"{100 * r['guard_cost']:+.1f}% / {100 * r['guard_cost_cpu']:+.1f}%",
                     f"{r['scratchnet_gflops']:.1f}", f"{med(r['gemm_gflops']):.1f}",
                     f"{100 * r['of_gemm']:.0f}%", f"{med(r['fma_gflops']):.0f}",
                     f"{100 * r['of_fma']:.0f}%", costs])
    print(table(header, rows))
    return results


def mode_candidates(args, meta) -> list[dict]:
    import torch

    dims, acts, _, eta = WORKLOADS["article"]
    sizes = [int(s) for s in (args.sizes or "100,1000,10000").split(",")]
    torch.set_num_threads(args.threads or 1)
    no_jax = jax_available()
    results = []
    for n in sizes:
        x, y = make_data(dims, n, args.seed)

        sn_ = partial(Scratchnet, dims, acts, x, y, "cpu", args.seed, eta, guard=False)
        start = initial_net(dims, acts, args.seed)
        makers = {"native": partial(sn_, runner="native"),
                  "reference": partial(sn_, runner="reference"),
                  "ATen loop (C++)": partial(AtenLoop, start, acts, x, y, eta),
                  "torch.compile": partial(Compiled, start, acts, x, y, eta)}
        if not no_jax:
            makers["JAX"] = partial(Jax, start, acts, x, y, eta)
        agree = check(makers, check_epochs(dims, n, args), args.tolerance)
        live = {name: make() for name, make in makers.items()}
        times = interleave({k: v.epochs for k, v in live.items()}, args, f"candidates n={n}")
        results.append({"n": n, "agree": agree,
                        "times": {k: v for k, v in times.items() if k != "extra"}})
        for obj in live.values():
            obj.close()
    names = list(results[0]["times"])
    print(f"\nms per epoch (median of {args.reps}, one thread, guard off); in brackets the "
          f"time over the native runner's")
    rows = []
    for r in results:
        t = r["times"]
        rows.append([f"{r['n']:,}"] + [
            f"{fmt(med(t[k]['wall']))} ({ratio(t, k, 'native'):.2f}×)"
            + ("" if r["agree"][k][1] else " **DIFFERS**") for k in names])
    print(table(["n"] + names, rows))
    if no_jax:
        print(f"# JAX skipped: {no_jax}")
    return results


def mode_guard(args, meta) -> list[dict]:
    import torch

    dims, acts, _, eta = WORKLOADS["article"]
    sizes = [int(s) for s in (args.sizes or "100,1000,10000").split(",")]
    torch.set_num_threads(args.threads or 1)
    everies = [e if e == "auto" else int(e) for e in args.guard_every.split(",")]
    results = []
    for n in sizes:
        x, y = make_data(dims, n, args.seed)
        runs = {}
        for runner in ("native", "reference"):
            runs[f"{runner} guard=False"] = Scratchnet(dims, acts, x, y, "cpu", args.seed,
                                                       eta, runner=runner, guard=False)
            for every in everies:   # "auto": the default, guard_every=None
                runs[f"{runner} guard_every={every}"] = Scratchnet(
                    dims, acts, x, y, "cpu", args.seed, eta, runner=runner,
                    guard_every=None if every == "auto" else every)
        times = interleave({k: v.epochs for k, v in runs.items()}, args, f"guard n={n}")
        row = {"n": n, "times": {k: v for k, v in times.items() if k != "extra"}}
        for name in runs:
            base = name.split()[0] + " guard=False"
            row[name] = (ratio(times, name, base) - 1, ratio(times, name, base, "cpu") - 1,
                         med(times[name]["wall"]))
        results.append(row)
        for obj in runs.values():
            obj.close()
    print(f"\nThe guard's cost: time with the guard / without − 1 (wall / CPU), medians of "
          f"{args.reps} interleaved repetitions; ms per epoch without the guard in brackets")
    header = ["n"] + [f"{r} guard_every={e}" for r in ("native", "reference") for e in everies]
    rows = []
    for r in results:
        cells = [f"{r['n']:,}"]
        for runner in ("native", "reference"):
            for e in everies:
                wall, cpu, _ = r[f"{runner} guard_every={e}"]
                cells.append(f"{100 * wall:+.1f}% / {100 * cpu:+.1f}%")
        rows.append(cells)
    print(table(header, rows))
    print("\n" + ", ".join(f"n = {r['n']:,}: native {fmt(r['native guard=False'][2])}, "
                           f"reference {fmt(r['reference guard=False'][2])} ms/epoch unguarded"
                           for r in results))
    return results


def mode_blocks(args, meta) -> list[dict]:
    import torch

    workloads = args.workloads.split(",") if args.workloads != ",".join(WORKLOADS) \
        else ["article"]
    sizes = [int(s) for s in (args.sizes or "100,1000,10000,100000").split(",")]
    blocks = [int(b) for b in args.blocks.split(",")]
    torch.set_num_threads(1)
    results = []
    for workload in workloads:
        dims, acts, _, eta = WORKLOADS[workload]
        for n in sizes:
            x, y = make_data(dims, n, args.seed)
            runs = {b: Scratchnet(dims, acts, x, y, "cpu", args.seed, eta, runner="native",
                                  block=b, guard=False) for b in blocks}
            times = interleave({str(b): v.epochs for b, v in runs.items()}, args,
                               f"blocks {workload} n={n}")
            results.append({"workload": workload, "n": n, "gflop": product_flops(dims, n) / 1e9,
                            "times": {k: v for k, v in times.items() if k != "extra"}})
            for obj in runs.values():
                obj.close()
    print("\nnative runner, ms per epoch by samples per block (CPU time, median; GFLOP/s)")
    rows = [[r["workload"], f"{r['n']:,}"] + [
        f"{fmt(med(r['times'][str(b)]['cpu']))} "
        f"({r['gflop'] / med(r['times'][str(b)]['cpu']) * 1e3:.0f})" for b in blocks]
        for r in results]
    print(table(["network", "n"] + [f"block {b}" for b in blocks], rows))
    return results


def mode_pytorch(args, meta) -> list[dict]:
    import torch

    import scratchnet as sn
    from scratchnet.engine import threads as sn_threads

    devices = args.device.split(",") if args.device else sn.available_devices()
    if args.threads:
        sn.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else None
    default_threads = torch.get_num_threads()
    results = []
    for device in devices:
        try:
            initial_net((4, 2, 1), ("tanh", "linear"), 0, device).close()
        except Exception as exc:   # e.g. an OpenCL device whose compiler fails here
            lines = str(exc).strip().splitlines() or [""]
            why = next((ln for ln in lines if "error:" in ln), lines[-1]).strip()
            print(f"# {device} skipped: {type(exc).__name__}: {why}", flush=True)
            continue
        for workload in args.workloads.split(","):
            dims, acts, own_sizes, eta = WORKLOADS[workload]
            for n in sizes or own_sizes:
                x, y = make_data(dims, n, args.seed)
                base_device = "cpu" if device.startswith("opencl") else device
                largest = max(o * i for i, o in zip(dims, dims[1:])) * n
                auto = sn_threads.automatic_threads(largest) if device == "cpu" else None
                chosen = args.threads or auto or default_threads
                torch.set_num_threads(chosen)

                start = initial_net(dims, acts, args.seed)
                makers = {"scratchnet": partial(Scratchnet, dims, acts, x, y, device,
                                                args.seed, eta),
                          "PyTorch": partial(Baseline, start, acts, x, y, base_device, eta)}
                agree = check(makers, check_epochs(dims, n, args), args.tolerance)
                live = {k: m() for k, m in makers.items()}
                probe = GemmProbe(device, args.peak_size_gpu if device.startswith("cuda")
                                  else args.peak_size)
                syncs = {"scratchnet": synchronizer(device),
                         "PyTorch": synchronizer(base_device)}
                times = interleave({k: v.epochs for k, v in live.items()}, args,
                                   f"{device} {workload} n={n}", extra=probe.gflops,
                                   syncs=syncs)
                probe.close()
                flops = product_flops(dims, n)
                ms_sn = med(times["scratchnet"]["wall"])
                peak_ratios = [p / (flops / t / 1e6)
                               for p, t in zip(times["extra"], times["scratchnet"]["wall"])]
                results.append({
                    "device": device, "baseline_device": base_device, "workload": workload,
                    "dims": list(dims), "n": n, "eta": eta, "threads": chosen,
                    "runner": live["scratchnet"].runner,
                    "scratchnet_ms": ms_sn, "scratchnet_spread": spread(
                        times["scratchnet"]["wall"]),
                    "baseline_ms": med(times["PyTorch"]["wall"]),
                    "baseline_spread": spread(times["PyTorch"]["wall"]),
                    "speedup": ratio(times, "PyTorch", "scratchnet"),
                    "scratchnet_gflops": flops / ms_sn / 1e6,
                    "peak_gflops": med(times["extra"]), "peak_over_scratchnet": med(peak_ratios),
                    "cost_scratchnet": agree["scratchnet"][0],
                    "cost_baseline": agree["PyTorch"][0],
                    "costs_agree": agree["PyTorch"][1],
                    "check_epochs": check_epochs(dims, n, args),
                    "times": {k: v for k, v in times.items() if k != "extra"}})
                for obj in live.values():
                    obj.close()
                torch.set_num_threads(default_threads)
                print(table(PYTORCH_HEADER, [pytorch_row(results[-1])]).splitlines()[-1],
                      file=sys.stderr, flush=True)   # as it comes, in case of a crash later
    print(f"\nmedians of {args.reps} interleaved repetitions; speed-up = PyTorch / scratchnet; "
          f"peak / it = the GEMM rate over scratchnet's product rate")
    print(table(PYTORCH_HEADER, [pytorch_row(r) for r in results]))
    print("GEMM rates (GFLOP/s, median per case): " + ", ".join(
        f"{r['device']} {r['workload']} n={r['n']} ({r['threads']} thr) {r['peak_gflops']:.0f}"
        for r in results))
    if args.plot:
        plot(results, args.plot)
    return results


PYTORCH_HEADER = ["device", "network", "n", "thr", "runner", "scratchnet ms/epoch",
                  "PyTorch ms/epoch", "speed-up", "scratchnet GFLOP/s", "peak / it",
                  "cost (scratchnet / PyTorch, epoch)"]


def pytorch_row(r: dict) -> list:
    """One line of the PyTorch table."""
    base = f" on {r['baseline_device']}" if r["baseline_device"] != r["device"] else ""
    flag = "" if r["costs_agree"] else " **DIFFER**"
    return [r["device"], r["workload"], f"{r['n']:,}", r["threads"],
            r["runner"].split(" (")[0],
            f"{fmt(r['scratchnet_ms'])} (±{50 * r['scratchnet_spread']:.0f}%)",
            f"{fmt(r['baseline_ms'])} (±{50 * r['baseline_spread']:.0f}%){base}",
            f"**{r['speedup']:.2f}×**", f"{r['scratchnet_gflops']:.1f}",
            f"{r['peak_over_scratchnet']:.2f}",
            f"{r['cost_scratchnet']:.6g} / {r['cost_baseline']:.6g} "
            f"@{r['check_epochs']}{flag}"]


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = [w for w in WORKLOADS if any(r["workload"] == w for r in results)]
    fig, axes = plt.subplots(1, len(workloads), figsize=(5.5 * len(workloads), 4.2),
                             squeeze=False)
    for ax, workload in zip(axes[0], workloads):
        rows = [r for r in results if r["workload"] == workload]
        for device in dict.fromkeys(r["device"] for r in rows):
            sel = sorted((r for r in rows if r["device"] == device), key=lambda r: r["n"])
            ns = [r["n"] for r in sel]
            line = ax.plot(ns, [r["scratchnet_ms"] for r in sel], "o-",
                           label=f"scratchnet {device}")[0]
            base = sel[0]["baseline_device"]
            ax.plot(ns, [r["baseline_ms"] for r in sel], "s--", color=line.get_color(),
                    label=f"PyTorch {base}" + (f" (for {device})" if base != device else ""))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("n (samples, full batch)")
        ax.set_ylabel("ms per epoch (median)")
        ax.set_title(workload)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def mode_logging(args, meta) -> list[dict]:
    """TensorBoard logging's cost on the article workload (auto runner)."""
    import tempfile

    import torch

    dims, acts, _, eta = WORKLOADS["article"]
    torch.set_num_threads(args.threads or 1)
    n = int((args.sizes or "10000").split(",")[0])
    x, y = make_data(dims, n, args.seed)
    x_test, y_test = make_data(dims, n, args.seed + 1)
    configs = {"no logging": {}, "log_every=1": {"log_every": 1},
               "log_every=1, test=": {"log_every": 1, "test": (x_test, y_test)},
               "log_every=10": {"log_every": 10}}
    with tempfile.TemporaryDirectory() as root:
        runs = {}
        for name, kw in configs.items():
            kw = dict(kw)
            if kw:
                kw["log_dir"] = os.path.join(root, name.replace(" ", "_"))
            runs[name] = Scratchnet(dims, acts, x, y, "cpu", args.seed, eta, **kw)
        times = interleave({k: v.epochs for k, v in runs.items()}, args, f"logging n={n}")
        for obj in runs.values():
            obj.close()
    print(f"\nTensorBoard logging, article network, n = {n:,}, runner {runs['no logging'].runner}")
    rows = [[name, fmt(med(times[name]["wall"])), f"{ratio(times, name, 'no logging'):.2f}",
             fmt(med(times[name]["cpu"])), f"{ratio(times, name, 'no logging', 'cpu'):.2f}"]
            for name in configs]
    print(table(["configuration", "wall ms/epoch", "× none", "CPU ms/epoch", "× none"], rows))
    return [{"n": n, "times": {k: v for k, v in times.items() if k != "extra"}}]


def mode_profile(args, meta) -> list[dict]:
    """The reference runner's ATen profile: where its epoch's time goes."""
    import torch

    dims, acts, _, eta = WORKLOADS["article"]
    torch.set_num_threads(args.threads or 1)
    out = []
    for n in [int(s) for s in (args.sizes or "100,1000,10000").split(",")]:
        x, y = make_data(dims, n, args.seed)
        run = Scratchnet(dims, acts, x, y, "cpu", args.seed, eta, runner="reference",
                         guard=False)
        k = epochs_per_call(run.epochs, args.min_time)
        wall = med([timed(run.epochs, k)[0] for _ in range(args.reps)])
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            run.epochs(k)
        events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
        total = sum(e.self_cpu_time_total for e in events) / k / 1e3   # ms per epoch
        print(f"\n## n = {n:,}: {wall:.4f} ms per epoch without the profiler (reference runner)")
        rows = []
        for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:14]:
            per_epoch = e.self_cpu_time_total / k
            rows.append([e.key, f"{e.count / k:g}", f"{e.self_cpu_time_total / e.count:.2f}",
                         f"{per_epoch:.1f}", f"{per_epoch / 10 / total:.1f}%"])
        print(table(["ATen op", "calls/epoch", "µs/call", "µs/epoch", "share"], rows))
        print(f"ATen self time {total:.4f} ms/epoch under the profiler; "
              f"{max(wall - total, 0):.4f} ms/epoch of the wall time is outside the ops")
        out.append({"n": n, "wall_ms": wall, "aten_ms": total})
        run.close()
    return out


def mode_aten(args, meta) -> list[dict]:
    """The reference backend's kernel choices against their alternatives,
    µs per call on the article network's shapes, interleaved."""
    import torch

    torch.set_num_threads(args.threads or 1)
    minus_one = torch.full((), -1.0)
    rows, out = [], []

    def bench(title, fns, calls):
        for fn in fns.values():
            for _ in range(20):
                fn()
        times = {name: [] for name in fns}
        for _ in range(args.reps):
            for name, fn in fns.items():
                start = time.perf_counter()
                for _ in range(calls):
                    fn()
                times[name].append((time.perf_counter() - start) / calls * 1e6)
        result = {name: med(t) for name, t in times.items()}
        rows.append([title, ", ".join(f"{k} {v:.2f}" for k, v in result.items())])
        out.append({"what": title, "us": result})

    with torch.no_grad():
        for n in [int(s) for s in (args.sizes or "100,1000,10000").split(",")]:
            calls = max(20, 200_000 // n)
            z, a = torch.randn(16, n), torch.empty(16, n)

            def trick(z=z, a=a):
                torch.add(z, z, out=a)
                torch.sigmoid(a, out=a)
                torch.add(minus_one, a, alpha=2.0, out=a)

            bench(f"tanh (16×{n})", {"torch.tanh": lambda z=z, a=a: torch.tanh(z, out=a),
                                     "2σ(2z)−1": trick,
                                     "sigmoid alone": lambda z=z, a=a: torch.sigmoid(z, out=a)},
                  calls)
            d, db, ones = torch.randn(32, n), torch.empty(32), torch.ones(n)
            bench(f"db = Σ δ (32×{n})",
                  {"sum(dim=1)": lambda d=d, db=db: torch.sum(d, 1, out=db),
                   "mv(δ, 1)": lambda d=d, db=db, ones=ones: torch.mv(d, ones, out=db)}, calls)
            w, x, b, zz = torch.randn(32, 4), torch.randn(4, n), torch.randn(32), \
                torch.empty(32, n)
            col = b.unsqueeze(1)
            bench(f"z = W a + b (32×4 · 4×{n})",
                  {"addmm(b.unsqueeze(1), …)":
                   lambda w=w, x=x, b=b, zz=zz: torch.addmm(b.unsqueeze(1), w, x, out=zz),
                   "addmm(column made once, …)":
                   lambda w=w, x=x, col=col, zz=zz: torch.addmm(col, w, x, out=zz)}, calls)
            a1, d1, dw = torch.randn(4, n), torch.randn(32, n), torch.empty(32, 4)
            a1t = a1.t().contiguous()
            bench(f"dW1 = δ aᵀ (32×{n} · {n}×4)",
                  {"mm(δ, a.t())": lambda a1=a1, d1=d1, dw=dw: torch.mm(d1, a1.t(), out=dw),
                   "mm(δ, aᵀ contiguous)":
                   lambda a1t=a1t, d1=d1, dw=dw: torch.mm(d1, a1t, out=dw)}, calls)
    print(f"\n{torch.get_num_threads()} thread(s); µs per call, median of {args.reps}")
    print(table(["what (shape)", "alternatives: µs per call"], rows))
    return out


AGREEMENT_NETS = {   # name -> (layers, cost, targets)
    "article": ([(32, "sigmoid"), (16, "tanh"), (1, "linear")], "quadratic", "regression"),
    "relu-elu": ([(24, "relu"), (12, "elu"), (1, "linear")], "quadratic", "regression"),
    "softmax-hidden": ([(8, "tanh"), (6, "softmax"), (2, "sigmoid")], "quadratic", "unit"),
    "softmax-quadratic": ([(12, "sigmoid"), (3, "softmax")], "quadratic", "onehot"),
    "binary-ce": ([(16, "tanh"), (1, "sigmoid")], "cross_entropy", "binary"),
    "categorical-ce": ([(16, "elu"), (3, "softmax")], "cross_entropy", "onehot"),
}


def agreement_data(kind: str, n: int, out: int, dtype):
    import numpy as np

    rng = np.random.default_rng(1)
    x = rng.random((n, 4))
    f = (np.sin(x[:, 0]) + np.cos(x[:, 1]) + np.tanh(x[:, 2]) + x[:, 3] ** 2).reshape(-1, 1)
    if kind == "regression":
        y = f
    elif kind == "unit":
        y = np.column_stack([1 / (1 + np.exp(-(f[:, 0] - 1.5) * k)) for k in range(1, out + 1)])
    elif kind == "binary":
        y = (f > np.median(f)).astype(np.float64)
    else:
        edges = np.quantile(f[:, 0], np.linspace(0, 1, out + 1)[1:-1])
        y = np.eye(out)[np.digitize(f[:, 0], edges)]
    return x.astype(dtype), y.astype(dtype)


def mode_agreement(args, meta) -> list[dict]:
    """Native against reference, both conventions' worth of the test matrix."""
    import numpy as np
    import torch

    import scratchnet as sn
    from scratchnet.engine import RUNNER_ENV

    torch.set_num_threads(1)
    optimizers = {"sgd": lambda: sn.SGD(0.05), "sgd-decay": lambda: sn.SGD(0.05, 0.5),
                  "momentum": lambda: sn.SGD(0.02, 0.5, 0.8),
                  "nesterov": lambda: sn.SGD(0.02, 0.5, 0.9, nesterov=True),
                  "adam": lambda: sn.Adam(0.005, 0.5)}
    costs = {"quadratic": sn.quadratic_cost, "cross_entropy": sn.cross_entropy}

    class Recorder(sn.Monitor):
        chunk = 50

        def __init__(self):
            self.costs = []

        def after_chunk(self, train, first_epoch, chunk_costs):
            self.costs.extend(chunk_costs)

    def fit(mode, net_name, opt, batch, dtype, convention):
        layers, cost, kind = AGREEMENT_NETS[net_name]
        os.environ[RUNNER_ENV] = mode
        net = sn.inference_network(4, [sn.fully_connected(o, a) for o, a in layers],
                                   dtype=dtype, seed=3, convention=convention)
        x, y = agreement_data(kind, 600 if batch is None else 203, layers[-1][0],
                              np.float32 if dtype == torch.float32 else np.float64)
        rec = Recorder()
        if batch is None:
            train = sn.training_network(net, x)
            sn.sgd(train, y, costs[cost], args.check_epochs, optimizers[opt](), monitors=[rec])
            train.close()
        else:
            sn.train(net, x, y, costs[cost], args.check_epochs, optimizers[opt](),
                     batch_size=batch, seed=5, monitors=[rec])
        params = sn.to_numpy(net.params).copy()
        net.close()
        return np.array(rec.costs), params

    cases = [(name, opt, batch, dtype, "standard") for name in AGREEMENT_NETS
             for opt in optimizers for batch in (None, 64)
             for dtype in (torch.float32, torch.float64)]
    cases += [("article", opt, batch, torch.float32, "series") for opt in optimizers
              for batch in (None, 64)]
    rows, saved = [], os.environ.get(RUNNER_ENV)
    try:
        with progress(len(cases), "agreement") as bar:
            for case in cases:
                (c_ref, p_ref), (c_nat, p_nat) = fit("reference", *case), fit("native", *case)
                eps = torch.finfo(case[3]).eps
                rows.append({"case": [str(v) for v in case],
                             "first_cost_ulps": abs(c_nat[0] - c_ref[0]) / abs(c_ref[0]) / eps,
                             "cost_ulps": float(np.abs(c_nat - c_ref).max()
                                                / (eps * np.abs(c_ref).max())),
                             "param_ulps": float(np.abs(p_nat - p_ref).max()
                                                 / (eps * np.abs(p_ref).max()))})
                bar.update()
    finally:
        if saved is None:
            os.environ.pop(RUNNER_ENV, None)
        else:
            os.environ[RUNNER_ENV] = saved
    print(f"\nnative against reference after {args.check_epochs} epochs, {len(rows)} cases, in "
          f"ulps of the dtype (first cost: relative; costs and parameters: of the largest)")
    table_rows = []
    for key, what in [("first_cost_ulps", "first epoch's cost"), ("cost_ulps", "costs"),
                      ("param_ulps", "parameters")]:
        values = np.array([r[key] for r in rows])
        table_rows.append([what, f"{np.median(values):.2f}", f"{np.percentile(values, 90):.2f}",
                           f"{values.max():.2f}"])
    print(table(["what", "median", "90th percentile", "largest"], table_rows))
    return rows


# ------------------------------------------------------------------- main
def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or platform.machine()


def load_revision(rev: str, into):
    """Import revision ``rev``'s ``scratchnet`` package (``git archive``)
    under another name, beside this checkout's."""
    import importlib
    from pathlib import Path

    name = "scratchnet_" + "".join(c if c.isalnum() else "_" for c in rev)
    root = Path(__file__).resolve().parent.parent
    archive = subprocess.run(["git", "-C", str(root), "archive", rev, "scratchnet"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    (Path(into) / "scratchnet").rename(Path(into) / name)
    sys.path.insert(0, str(into))
    return importlib.import_module(name)


def mode_ab(args, meta) -> list[dict]:
    """This checkout's full-batch epoch against revision ``--against``'s,
    through each one's public ``sgd`` call (the guard on, as by default),
    interleaved: the reference runner and the automatic one (the native
    runner on the CPU) against the revision's loop."""
    import tempfile

    import torch

    import scratchnet as sn

    dims, acts, _, eta = WORKLOADS["article"]
    torch.set_num_threads(args.threads or 1)
    sizes = [int(s) for s in (args.sizes or "100,1000,10000").split(",")]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        old = load_revision(args.against, tmp)

        def make(lib, x, y, runner=None):
            layers = [lib.fully_connected(d, getattr(lib, a)) for d, a in zip(dims[1:], acts)]
            net = lib.inference_network(dims[0], layers, seed=args.seed)
            training = lib.training_network(net, x)
            y = torch.from_numpy(y)
            if runner is not None:   # read when the runner is made, at the first call
                os.environ["SCRATCHNET_RUNNER"] = runner
            lib.sgd(training, y, lib.quadratic_cost, 1, (eta, LAM))
            os.environ.pop("SCRATCHNET_RUNNER", None)
            return partial(lambda k, t, y: lib.sgd(t, y, lib.quadratic_cost, k, (eta, LAM)),
                           t=training, y=y)

        for n in sizes:
            x, y = make_data(dims, n, args.seed)
            runs = {args.against: make(old, x, y), "reference": make(sn, x, y, "reference"),
                    "automatic": make(sn, x, y)}
            times = interleave(runs, args, f"ab n={n}")
            results.append({"n": n, "times": {k: v for k, v in times.items() if k != "extra"},
                            "old/reference": ratio(times, args.against, "reference"),
                            "old/automatic": ratio(times, args.against, "automatic")})
    print(f"\nsgd on the article network, {args.against} (A) against this checkout's "
          f"reference runner (B) and automatic runner (C); one thread, medians of "
          f"{args.reps} interleaved repetitions, ms per epoch")
    rows = [[f"{r['n']:,}", fmt(med(r["times"][args.against]["wall"])),
             fmt(med(r["times"]["reference"]["wall"])), fmt(med(r["times"]["automatic"]["wall"])),
             f"**{r['old/reference']:.2f}**", f"{r['old/automatic']:.2f}"] for r in results]
    print(table(["n", "A", "B reference", "C automatic", "A / B", "A / C"], rows))
    return results


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    meta = {"machine": machine(), "cores": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
            "load_before": os.getloadavg(), "lam": LAM, "dtype": "float32", "mode": args.mode}
    if torch.cuda.is_available():
        meta["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    print(f"# {meta['machine']} ({meta['cores']} cores), torch {meta['torch']}, "
          f"load average {meta['load_before'][0]:.2f}, λ = {LAM}, float32, "
          f"{meta['command']}", flush=True)
    torch.set_grad_enabled(True)   # the PyTorch baseline uses autograd
    results = globals()[f"mode_{args.mode}"](args, meta)
    meta["load_after"] = os.getloadavg()
    print(f"# load average after: {meta['load_after'][0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1, default=str)
    failed = [r for r in results if isinstance(r, dict) and (
        ("agree" in r and not all(ok for _, ok in r["agree"].values()))
        or r.get("costs_agree") is False)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
