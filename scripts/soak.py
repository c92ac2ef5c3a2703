"""Long-run soak: does anything grow over 10^5 epochs?

    python scripts/soak.py                      # 10^5 epochs on the CPU
    python scripts/soak.py --epochs 1000000 --device cuda

Trains a small network (4-16-8-1, sigmoid/tanh/linear, 256 samples of the
series' data set) in calls of --per-call epochs through the whole public
path a long run uses: the divergence guard (on by default), periodic atomic
checkpoints (every --checkpoint-every epochs, into the run folder), a
monitor reading every epoch's cost, and an inference call after every sgd
call.  It measures after the first periodic checkpoint (warm: every lazy
buffer exists) and at the end:

* the process's resident set size (/proc/self/statm; CPU memory);
* live Python objects (gc.get_objects());
* device bytes where the backend can say: torch.cuda.memory_allocated on
  CUDA, or a backend's allocated_bytes() if it has one (OpenCL).

It exits with status 1 if RSS grew by more than --max-growth-mb, or if the
last checkpoint does not hold the final network.  The summary table also
goes to <run>/summary.md.
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (scripts/common.py, however this file is run)

SCRIPT = "soak"


def build_parser():
    p = common.parser(__doc__)
    common.add_device(p)
    p.add_argument("--epochs", type=common.positive_int, default=100_000,
                   help="epochs in all")
    p.add_argument("--per-call", type=common.positive_int, default=1000,
                   help="epochs per sgd call")
    p.add_argument("--checkpoint-every", type=common.positive_int, default=10_000,
                   help="epochs between checkpoints")
    p.add_argument("--max-growth-mb", type=common.nonnegative_float, default=4.0,
                   help="RSS growth (MiB) above which the soak fails")
    common.add_threads(p)
    common.add_log_dir(p, SCRIPT, " (the checkpoint, the summary)")
    return p


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
        import torch

        return torch.cuda.memory_allocated(backend.torch_device)
    allocated = getattr(backend, "allocated_bytes", None)
    return allocated() if callable(allocated) else None


def measure(net, training) -> dict:
    """Objects first, RSS last: gc.get_objects() builds a list of ~10^5
    pointers whose freed memory would otherwise show up as growth."""
    gc.collect()
    objects = len(gc.get_objects())
    gc.collect()
    return {"objects": objects, "rss": rss_bytes(), "device": device_bytes(net.backend),
            "epoch": training.epoch}


def last_cost():
    """A monitor that keeps only the last cost (it reads every epoch's)."""
    import scratchnet as sn

    class LastCost(sn.Monitor):
        chunk = 1
        last = float("nan")

        def after_chunk(self, train, first_epoch, costs):
            self.last = costs[-1]

    return LastCost()


def soak(device: str, epochs: int, per_call: int, checkpoint_every: int, folder: Path,
         bar=None) -> dict:
    import numpy as np

    import scratchnet as sn

    x, y = common.series_data(256, 0)
    path = str(folder / "soak.ckpt")
    monitor = last_cost()
    with sn.inference_network(4, common.article_layers((16, 8)), device=device,
                              seed=0) as net, sn.training_network(net, x) as training:

        def call():
            sn.sgd(training, y, sn.quadratic_cost, per_call, (0.1, 0.01), monitors=[monitor],
                   checkpoint=path, checkpoint_every=checkpoint_every)
            net(x[:32])
            if bar is not None:   # between calls: the bar allocates nothing inside them
                bar.update(training.epoch - bar.n)

        while training.epoch < checkpoint_every + per_call:   # warm: a periodic save done
            call()
        start = measure(net, training)
        with common.Stopwatch() as t:
            while training.epoch < epochs:
                call()
        end = measure(net, training)
        restored = sn.load(path, device=device)
        same = np.array_equal(sn.to_numpy(restored.params), sn.to_numpy(net.params))
        restored.close()
    return {"start": start, "end": end, "seconds": t.seconds, "cost": monitor.last,
            "checkpoint_matches": same}


def main(argv=None) -> int:
    args, folder = common.start(build_parser(), argv, SCRIPT)

    import torch

    torch.set_num_threads(args.threads)
    with common.progress_bar(total=args.epochs, desc="soak", unit="epoch") as bar:
        r = soak(args.device, args.epochs, args.per_call, args.checkpoint_every, folder, bar)
    s, e = r["start"], r["end"]
    mb = 1 / 2**20
    rows = [["RSS (MiB)", f"{s['rss'] * mb:.2f}", f"{e['rss'] * mb:.2f}",
             f"{(e['rss'] - s['rss']) * mb:+.2f}"],
            ["Python objects", str(s["objects"]), str(e["objects"]),
             f"{e['objects'] - s['objects']:+d}"]]
    if s["device"] is not None:
        rows.append(["device bytes", str(s["device"]), str(e["device"]),
                     f"{e['device'] - s['device']:+d}"])
    grew = (e["rss"] - s["rss"]) * mb > args.max_growth_mb
    lines = [
        f"soak on {args.device}: epochs {s['epoch']} -> {e['epoch']} in {r['seconds']:.1f} s, "
        f"final cost {r['cost']:.6g}",
        common.table(["measured at epoch", str(s["epoch"]), str(e["epoch"]), "growth"], rows),
        f"last checkpoint equals the final network: {r['checkpoint_matches']}",
        f"RSS growth within {args.max_growth_mb:g} MiB: {not grew}"]
    if s["device"] is None:
        lines.insert(2, "device bytes: not reported by this backend")
    text = "\n".join(lines)
    print(text)
    common.write_summary(folder, text, SCRIPT, argv)
    print(f"\nRun folder: {folder}")
    return 1 if grew or not r["checkpoint_matches"] else 0


if __name__ == "__main__":
    sys.exit(main())
