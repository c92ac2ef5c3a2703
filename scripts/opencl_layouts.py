"""The OpenCL kernels' CPU layout against their GPU layout, on one device.

The plugin picks a layout from the device type (``opencl_ext/devices.py``):
SIMD vectors, contiguous chunks per work-item and two-stage chunked
reductions on CPUs; scalar work-items, strided (coalesced) sample loops and
tree reductions in local memory on GPUs.  This times both layouts on the same
device, interleaved (A B A B ...), through the backend contract alone:

* ``sum_squares`` (the quadratic cost) and ``amax`` (the guard's check) over
  n elements, and ``weight_gradient`` of a 32 x 16 layer over n samples;
* one epoch of the article workload (4-32-16-1, fused forward).

    python scripts/opencl_layouts.py                       # n = 10,000 and 100,000
    python scripts/opencl_layouts.py --device opencl:1:0 --sizes 10000 --reps 30

Prints the median µs per call of each layout and the median of the
per-repetition ratios GPU / CPU layout (below 1: the GPU layout is faster).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import opencl_kernels_bench as bench  # noqa: E402

from opencl_ext.backend import OpenCLBackend  # noqa: E402


def cases(be, n, rng):
    """name -> a callable making one call of that case on ``be``."""
    x = be.from_host(rng.standard_normal(n))
    out = be.zeros((1,))
    delta, a = be.from_host(rng.standard_normal((32, n))), be.from_host(
        rng.standard_normal((16, n)))
    dw, db = be.zeros((32, 16)), be.zeros((32,))
    state = bench.build(be, n)
    return {
        "sum_squares": lambda: be.sum_squares(x, out),
        "amax": lambda: be.amax(x),
        "weight_gradient 32x16": lambda: be.weight_gradient(dw, db, delta, a),
        "article epoch": lambda: bench.epoch(be, *state, True),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="opencl")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--calls", type=int, default=5, help="calls per timed repetition")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    dtype = getattr(torch, args.dtype)
    layouts = {"cpu": OpenCLBackend.open(args.device, dtype, limits={"cpu": True}),
               "gpu": OpenCLBackend.open(args.device, dtype, limits={"cpu": False})}
    dev = layouts["cpu"]._live_state().device
    print(f"{layouts['cpu'].device}: {dev.name.strip()} ({dev.platform.version.strip()}), "
          f"{args.dtype}")
    for n in (int(s) for s in args.sizes.split(",")):
        made = {k: cases(be, n, np.random.default_rng(0)) for k, be in layouts.items()}
        for name in made["cpu"]:
            times = {"cpu": [], "gpu": []}
            for _ in range(args.reps + 2):           # the first two warm up
                for layout, be in layouts.items():
                    call = made[layout][name]
                    be.synchronize()
                    start = time.perf_counter()
                    for _ in range(args.calls):
                        call()
                    be.synchronize()
                    times[layout].append((time.perf_counter() - start) / args.calls * 1e6)
            cpu, gpu = times["cpu"][2:], times["gpu"][2:]
            ratio = statistics.median(g / c for g, c in zip(gpu, cpu, strict=True))
            print(f"  n = {n:>9,}  {name:22s} CPU layout {statistics.median(cpu):10.1f} µs   "
                  f"GPU layout {statistics.median(gpu):10.1f} µs   GPU/CPU {ratio:.2f}")
    for be in layouts.values():
        be.close()


if __name__ == "__main__":
    main()
