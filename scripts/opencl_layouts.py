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
import time

LAYERS = ((4, 32, "sigmoid"), (32, 16, "tanh"), (16, 1, "linear"))


def build(backend, n, seed=0):
    """The article network's buffers on ``backend`` for ``n`` samples."""
    import numpy as np
    rng = np.random.default_rng(seed)
    sizes = [(o, i) for i, o, _ in LAYERS]
    count = sum(o * i + o for o, i in sizes)
    host = rng.standard_normal(count) * 0.5
    params, grads = backend.from_host(host), backend.zeros((count,))
    net, off = [], 0
    for (o, i), (_, _, act) in zip(sizes, LAYERS, strict=True):
        w, dw = backend.view(params, off, (o, i)), backend.view(grads, off, (o, i))
        off += o * i
        net.append(dict(w=w, dw=dw, act=act, o=o))
    for layer in net:
        o = layer["o"]
        layer["b"], layer["db"] = backend.view(params, off, (o,)), backend.view(grads, off, (o,))
        layer["bias"] = backend.bias_operand(layer["b"])  # the form linear_forward takes
        layer["z"], layer["a"] = backend.zeros((o, n)), backend.zeros((o, n))
        off += o
    x = backend.from_host(rng.standard_normal((4, n)))
    y = backend.from_host(rng.standard_normal((1, n)))
    cost = backend.zeros((1,))
    return net, params, grads, x, y, cost


def epoch(backend, net, params, grads, x, y, cost, fused, eta=0.1, lam=0.01):
    """One training epoch of the article network, contract call by call."""

    def t(label):   # where a kernel-by-kernel timer would go
        pass

    n = x.shape[1]
    a_prev = x
    for layer in net:
        if fused:
            backend.linear_activation_forward(layer["act"], layer["a"], layer["w"],
                                              layer["bias"], a_prev, 1.0)
            t("linear+act " + layer["act"])
        else:
            backend.linear_forward(layer["z"], layer["w"], layer["bias"], a_prev, 1.0)
            t("linear")
            backend.activation_forward(layer["act"], layer["z"], layer["a"])
            t("act " + layer["act"])
        a_prev = layer["a"]
    g = net[-1]["z"]
    backend.subtract(g, net[-1]["a"], y)
    t("subtract")
    backend.sum_squares(g, cost)
    t("sum_squares")
    for idx in range(len(net) - 1, -1, -1):
        layer = net[idx]
        backend.activation_backward(layer["act"], layer["a"], g)
        t("act_backward " + layer["act"])
        below = net[idx - 1]["a"] if idx else x
        backend.weight_gradient(layer["dw"], layer["db"], g, below)
        t(f"weight_gradient {layer['o']}")
        if idx:
            g_prev = net[idx - 1]["z"]
            backend.input_gradient(g_prev, layer["w"], g)
            t("input_gradient")
            g = g_prev
    backend.axpy_(params, -eta * lam / n, params)
    backend.axpy_(params, -eta / n, grads)
    t("axpy x2")


def cases(be, n, rng):
    """name -> a callable making one call of that case on ``be``."""
    x = be.from_host(rng.standard_normal(n))
    out = be.zeros((1,))
    delta, a = be.from_host(rng.standard_normal((32, n))), be.from_host(
        rng.standard_normal((16, n)))
    dw, db = be.zeros((32, 16)), be.zeros((32,))
    state = build(be, n)
    return {
        "sum_squares": lambda: be.sum_squares(x, out),
        "amax": lambda: be.amax(x),
        "weight_gradient 32x16": lambda: be.weight_gradient(dw, db, delta, a),
        "article epoch": lambda: epoch(be, *state, True),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--device", default="opencl", help="the OpenCL device to time")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"),
                        help="element type")
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated n")
    parser.add_argument("--reps", type=int, default=10, help="timed repetitions per layout")
    parser.add_argument("--calls", type=int, default=5, help="calls per timed repetition")
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)   # before the heavy imports: --help is instant
    import numpy as np
    import torch

    from opencl_ext.backend import OpenCLBackend

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
