"""Long-run soak: does anything grow over 10^5 epochs?

    python scripts/soak.py                      # 10^5 epochs on the CPU
    python scripts/soak.py --epochs 1000000 --device cuda

Trains a small network (4-16-8-1, sigmoid/tanh/linear, 256 samples) in
calls of ``--per-call`` epochs through the whole public path a long run uses:
the divergence guard (default on), periodic atomic checkpoints (every
``--checkpoint-every`` epochs), a monitor reading every epoch's cost, and an
inference call after every ``sgd`` call.  It measures after the first
periodic checkpoint (warm: every lazy buffer exists) and at
the end:

* the process's resident set size (``/proc/self/statm``; CPU memory);
* live Python objects (``gc.get_objects()``);
* device bytes where the backend can say: ``torch.cuda.memory_allocated``
  on CUDA, or a backend's ``allocated_bytes()`` if it has one (OpenCL).

It exits with status 1 if RSS grew by more than ``--max-growth-mb``.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time

import numpy as np
import torch

import scratchnet as sn


def rss_bytes() -> int:
    """Resident set size now (Linux /proc; ru_maxrss elsewhere is a peak)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def device_bytes(backend) -> int | None:
    if backend.device.startswith("cuda"):
        return torch.cuda.memory_allocated(backend.torch_device)
    allocated = getattr(backend, "allocated_bytes", None)
    return allocated() if callable(allocated) else None


def measure(net, train) -> dict:
    """Objects first, RSS last: gc.get_objects() builds a list of ~10^5
    pointers whose freed memory would otherwise show up as growth."""
    gc.collect()
    objects = len(gc.get_objects())
    gc.collect()
    return {"objects": objects, "rss": rss_bytes(), "device": device_bytes(net.backend),
            "epoch": train.epoch}


class Costs(sn.Monitor):
    """A monitor that keeps only the last cost (reads every epoch)."""

    chunk = 1
    last = float("nan")


    def after_chunk(self, train, first_epoch, costs):
        self.last = costs[-1]



def soak(device: str, epochs: int, per_call: int, checkpoint_every: int, folder: str) -> dict:
    rng = np.random.default_rng(0)
    x = rng.random((256, 4), dtype=np.float32)
    y = (np.sin(x[:, 0]) + np.cos(x[:, 1]) + np.tanh(x[:, 2]) + x[:, 3] ** 2)
    y = y.reshape(-1, 1).astype(np.float32)
    path = os.path.join(folder, "soak.ckpt")
    monitor = Costs()
    with sn.inference_network(4, [sn.fully_connected(16, sn.sigmoid),
                                  sn.fully_connected(8, sn.tanh),
                                  sn.fully_connected(1, sn.linear)],
                              device=device, seed=0) as net, \
            sn.training_network(net, x) as train:

        def call():
            sn.sgd(train, y, sn.quadratic_cost, per_call, (0.1, 0.01), monitors=[monitor],
                   checkpoint=path, checkpoint_every=checkpoint_every)
            net(x[:32])

        while train.epoch < checkpoint_every + per_call:   # warm: a periodic save done
            call()
        start = measure(net, train)
        t0 = time.perf_counter()
        while train.epoch < epochs:
            call()
        seconds = time.perf_counter() - t0
        end = measure(net, train)
        final_cost = monitor.last
        restored = sn.load(path, device=device)
        same = np.array_equal(sn.to_numpy(restored.params), sn.to_numpy(net.params))
        restored.close()
    return {"start": start, "end": end, "seconds": seconds, "cost": final_cost,
            "checkpoint_matches": same}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=100_000)
    parser.add_argument("--per-call", type=int, default=1000)
    parser.add_argument("--checkpoint-every", type=int, default=10_000)
    parser.add_argument("--max-growth-mb", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        r = soak(args.device, args.epochs, args.per_call, args.checkpoint_every, folder)
    s, e = r["start"], r["end"]
    mb = 1 / 2**20
    print(f"soak on {args.device}: epochs {s['epoch']} -> {e['epoch']} in {r['seconds']:.1f} s, "
          f"final cost {r['cost']:.6g}")
    print(f"  RSS          {s['rss'] * mb:9.2f} MiB -> {e['rss'] * mb:9.2f} MiB "
          f"(growth {(e['rss'] - s['rss']) * mb:+.2f} MiB)")
    print(f"  Python objs  {s['objects']:9d}     -> {e['objects']:9d}     "
          f"(growth {e['objects'] - s['objects']:+d})")
    if s["device"] is not None:
        print(f"  device bytes {s['device']:9d}     -> {e['device']:9d}     "
              f"(growth {e['device'] - s['device']:+d})")
    else:
        print("  device bytes: not reported by this backend")
    print(f"  last checkpoint equals the final network: {r['checkpoint_matches']}")
    grew = (e["rss"] - s["rss"]) * mb > args.max_growth_mb
    return 1 if grew or not r["checkpoint_matches"] else 0


if __name__ == "__main__":
    sys.exit(main())
