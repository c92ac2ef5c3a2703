"""Micro-benchmarks behind the torch backend's kernel choices.

    python scripts/kernel_alternatives.py              # 1 thread, n = 100, 1,000, 10,000

Each line times two (or more) ways of computing the same thing on the
article network's shapes, interleaved, and prints the median µs per call.
These are the measurements the README's "Performance" section quotes for
what was changed and what was tried and dropped.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def bench(fns: dict, reps: int, calls: int) -> dict:
    """Median µs per call of each function, timed interleaved."""
    for fn in fns.values():
        for _ in range(20):
            fn()
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            times[name].append((time.perf_counter() - start) / calls * 1e6)
    return {name: statistics.median(t) for name, t in times.items()}


def show(title: str, result: dict) -> None:
    parts = ", ".join(f"{name} {us:.2f}" for name, us in result.items())
    print(f"| {title} | {parts} |", flush=True)


def sizes_table(n: int, reps: int, minus_one) -> None:
    """The alternatives at batch size n."""
    calls = max(20, 200_000 // n)
    z, a = torch.randn(16, n), torch.empty(16, n)

    def trick():
        torch.add(z, z, out=a)
        torch.sigmoid(a, out=a)
        torch.add(minus_one, a, alpha=2.0, out=a)

    show(f"tanh (16×{n})", bench({"torch.tanh": lambda: torch.tanh(z, out=a),
                                  "2σ(2z)−1": trick,
                                  "sigmoid alone": lambda: torch.sigmoid(z, out=a)},
                                 reps, calls))
    d, db, ones = torch.randn(32, n), torch.empty(32), torch.ones(n)
    show(f"db = Σ δ (32×{n})", bench({"sum(dim=1)": lambda: torch.sum(d, 1, out=db),
                                      "mv(δ, 1)": lambda: torch.mv(d, ones, out=db)},
                                     reps, calls))
    w3, d3, g2 = torch.randn(1, 16), torch.randn(1, n), torch.empty(16, n)
    show(f"W3ᵀ δ3, one-neuron layer (16×1 · 1×{n})",
         bench({"mm(w.t(), δ)": lambda: torch.mm(w3.t(), d3, out=g2),
                "mm(w.view(16, 1), δ)": lambda: torch.mm(w3.view(16, 1), d3, out=g2)},
               reps, calls))
    w, x, b, zz = torch.randn(32, 4), torch.randn(4, n), torch.randn(32), torch.empty(32, n)
    col = b.unsqueeze(1)
    addmm_out = torch.ops.aten.addmm.out
    show(f"z = W a + b (32×4 · 4×{n})",
         bench({"addmm(b.unsqueeze(1), …)": lambda: torch.addmm(b.unsqueeze(1), w, x, out=zz),
                "addmm(column made once, …)": lambda: torch.addmm(col, w, x, out=zz),
                "aten.addmm.out": lambda: addmm_out(col, w, x, out=zz)},
               reps, calls))
    a1, d1, dw = torch.randn(4, n), torch.randn(32, n), torch.empty(32, 4)
    a1t = a1.t().contiguous()
    show(f"dW1 = δ aᵀ (32×{n} · {n}×4)",
         bench({"mm(δ, a.t())": lambda: torch.mm(d1, a1.t(), out=dw),
                "mm(δ, aᵀ contiguous)": lambda: torch.mm(d1, a1t, out=dw)},
               reps, calls))


@torch.no_grad()
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="100,1000,10000")
    p.add_argument("--reps", type=int, default=9)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{torch.get_num_threads()} thread(s); µs per call, median of {args.reps}\n")
    print("| what (shape) | alternatives: µs per call |\n|---|---|")
    minus_one = torch.full((), -1.0)
    for n in (int(s) for s in args.sizes.split(",")):
        sizes_table(n, args.reps, minus_one)
    w, x, zz, col = torch.randn(32, 4), torch.randn(4, 100), torch.empty(32, 100), \
        torch.randn(32, 1)
    nograd = bench({"no_grad": lambda: torch.addmm(col, w, x, out=zz)}, args.reps, 2000)
    with torch.inference_mode():
        inference = bench({"inference_mode": lambda: torch.addmm(col, w, x, out=zz)},
                          args.reps, 2000)
    show("addmm 32×4 · 4×100 under", {**nograd, **inference})


if __name__ == "__main__":
    main()
