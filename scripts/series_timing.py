"""Time the series' part 15 run on every device: 4-32-16-1 (sigmoid, tanh,
linear), 10,000 samples, 4,000 full-batch epochs at (η, λ) = (0.1, 0.01).

The series printed 1,496 ms on a GTX 1080 Ti (CUDA) and 27,598 ms on an
R9 290X (OpenCL) for these 4,000 epochs (and 5,940 ms for 1,000 epochs on an
i7-4790k).  Devices alternate so that outside load hits them alike.

    python scripts/series_timing.py [--rounds 2] [--devices cpu,opencl]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import scratchnet as sn


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", default=",".join(
        sorted({d.split(":")[0] for d in sn.available_devices()})))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4000)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    x = rng.random((10_000, 4), dtype=np.float32)
    y = np.sin(x[:, 0]) + np.cos(x[:, 1]) + np.tanh(x[:, 2]) + x[:, 3] ** 2
    y = y.reshape(-1, 1).astype(np.float32)
    for _ in range(args.rounds):
        for device in args.devices.split(","):
            layers = [sn.fully_connected(32, sn.sigmoid), sn.fully_connected(16, sn.tanh),
                      sn.fully_connected(1, sn.linear)]
            with sn.inference_network(4, layers, device=device, seed=0) as net, \
                    sn.training_network(net, x) as train:
                sn.sgd(train, y, sn.quadratic_cost, 1, (0.1, 0.01))   # warm-up (compiles)
                start = time.perf_counter()
                cost = sn.sgd(train, y, sn.quadratic_cost, args.epochs, (0.1, 0.01))
                print(f"{device:8s} {args.epochs} epochs in {time.perf_counter() - start:6.2f} s, "
                      f"cost {cost:.5f}")


if __name__ == "__main__":
    main()
