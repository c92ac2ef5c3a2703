"""Time one training epoch of the article workload through the backend
contract alone, on any scratchnet backend, kernel by kernel.

The article workload: a 4-32-16-1 network (sigmoid, tanh, linear), 10,000
samples, full batch, quadratic cost, plain SGD with weight decay.  The epoch
below is the sequence of contract calls a fully connected network makes
(forward, cost, backward, update), so the figure is what the backend costs,
independent of the core's own bookkeeping.  ``--fused`` uses the optional
fused forward (linear_activation_forward).

    python scripts/opencl_kernels_bench.py --device cpu --device opencl
    python scripts/opencl_kernels_bench.py --interleave [--fused]
    python scripts/opencl_kernels_bench.py --sgd     # the same through sn.sgd
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from scratchnet.backends import get_backend

LAYERS = ((4, 32, "sigmoid"), (32, 16, "tanh"), (16, 1, "linear"))


def build(backend, n, seed=0):
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


def epoch(backend, net, params, grads, x, y, cost, fused, eta=0.1, lam=0.01, times=None):
    def t(label):
        if times is not None:
            backend.synchronize()
            times.append((label, time.perf_counter()))

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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", action="append", default=None)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fused", action="store_true")
    parser.add_argument("--breakdown", action="store_true")
    parser.add_argument("--interleave", action="store_true",
                        help="alternate short bursts of every device (fairer on a busy machine)")
    parser.add_argument("--sgd", action="store_true",
                        help="time scratchnet's own sgd (interleaved) instead of raw calls")
    parser.add_argument("--burst", type=int, default=50, help="epochs per burst (--interleave)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for both torch and PoCL (default: theirs)")
    args = parser.parse_args()
    if args.threads:
        # PoCL reads this when its platform is first loaded, i.e. below.
        os.environ.setdefault("POCL_MAX_PTHREAD_COUNT", str(args.threads))
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    torch.set_grad_enabled(False)
    if args.sgd:
        through_sgd(args, dtype)
        return
    if args.interleave:
        interleave(args, dtype)
        return
    for device in args.device or ["cpu", "opencl"]:
        backend = get_backend(device, dtype)
        state = build(backend, args.n)
        fused = args.fused
        for _ in range(20):
            epoch(backend, *state, fused)
        backend.read_scalar(state[-1])
        runs = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            for _ in range(args.epochs):
                epoch(backend, *state, fused)
            backend.read_scalar(state[-1])  # one host read per run, as sgd reads the cost
            runs.append((time.perf_counter() - start) / args.epochs * 1e3)
        print(f"{device:10s} {args.dtype} fused={fused}: median {statistics.median(runs):.3f} "
              f"ms/epoch (runs: {', '.join(f'{r:.3f}' for r in runs)})")
        if args.breakdown:
            acc = {}
            for _ in range(50):
                times = [("start", time.perf_counter())]
                backend.synchronize()
                epoch(backend, *state, fused, times=times)
                for (_, t0), (label, t1) in zip(times, times[1:], strict=False):
                    acc.setdefault(label, []).append((t1 - t0) * 1e6)
            for label, values in acc.items():
                print(f"    {label:32s} median {statistics.median(values):8.1f} us, "
                      f"best {min(values):8.1f} us")
        backend.close()


def interleave(args, dtype):
    """Alternate bursts of ``--burst`` epochs on each device, ``repeats`` x 20 times,
    so that load from other processes hits every device alike; print the
    median and the best burst per device and the ratio of the medians."""
    devices = args.device or ["cpu", "opencl"]
    setups = []
    for device in devices:
        backend = get_backend(device, dtype)
        state = build(backend, args.n)
        fused = args.fused
        for _ in range(20):
            epoch(backend, *state, fused)
        backend.read_scalar(state[-1])
        setups.append((device, backend, state, fused, []))
    for _ in range(args.repeats * 20):
        for _, backend, state, fused, times in setups:
            start = time.perf_counter()
            for _ in range(args.burst):
                epoch(backend, *state, fused)
            backend.read_scalar(state[-1])
            times.append((time.perf_counter() - start) / args.burst * 1e3)
    medians = {}
    for device, backend, _, fused, times in setups:
        medians[device] = statistics.median(times)
        print(f"{device:10s} {args.dtype} fused={fused}: median {medians[device]:.3f} ms/epoch, "
              f"best {min(times):.3f}")
        backend.close()
    if len(devices) > 1:
        base = medians[devices[0]]
        for device in devices[1:]:
            print(f"{device} / {devices[0]}: {medians[device] / base:.2f}x")


def through_sgd(args, dtype):
    """The article workload through the public API, bursts of ``--burst``
    epochs per sgd call (one host read each), devices interleaved."""
    import scratchnet as sn

    rng = np.random.default_rng(0)
    x = rng.random((args.n, 4))
    y = (np.sin(x[:, 0]) + np.cos(x[:, 1]) + np.tanh(x[:, 2]) + x[:, 3] ** 2).reshape(-1, 1)
    devices = args.device or ["cpu", "opencl"]
    runs = []
    for device in devices:
        net = sn.inference_network(4, [sn.fully_connected(32, sn.sigmoid),
                                       sn.fully_connected(16, sn.tanh),
                                       sn.fully_connected(1, sn.linear)],
                                   device=device, dtype=dtype, seed=0)
        train = sn.training_network(net, x)
        sn.sgd(train, y, sn.quadratic_cost, 20, (0.1, 0.01))
        runs.append((device, net, train, []))
    for _ in range(args.repeats * 5):
        for _, _, train, times in runs:
            start = time.perf_counter()
            sn.sgd(train, y, sn.quadratic_cost, args.burst, (0.1, 0.01))
            times.append((time.perf_counter() - start) / args.burst * 1e3)
    medians = {}
    for device, net, train, times in runs:
        medians[device] = statistics.median(times)
        print(f"{device:10s} {args.dtype} sgd: median {medians[device]:.3f} ms/epoch, "
              f"best {min(times):.3f}")
        train.close()
        net.close()
    for device in devices[1:]:
        print(f"{device} / {devices[0]}: {medians[device] / medians[devices[0]]:.2f}x")


if __name__ == "__main__":
    main()
