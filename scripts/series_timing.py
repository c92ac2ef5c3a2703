"""Time the series' part 15 run on every device: 4-32-16-1 (sigmoid, tanh,
linear), 10,000 samples, 4,000 full-batch epochs at (η, λ) = (0.1, 0.01).

    python scripts/series_timing.py                    # every available device, 2 rounds
    python scripts/series_timing.py --device cpu opencl --rounds 3     # or --device cpu,opencl

The series printed 1,496 ms on a GTX 1080 Ti (CUDA) and 27,598 ms on an
R9 290X (OpenCL) for these 4,000 epochs (and 5,940 ms for 1,000 epochs on an
i7-4790k).  Devices alternate round after round so that outside load hits
them alike; each round trains a fresh network after one untimed warm-up
epoch (which compiles kernels).  The summary table also goes to
<run>/summary.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (scripts/common.py, however this file is run)

SCRIPT = "series_timing"
HYPER = (0.1, 0.01)


def build_parser():
    p = common.parser(__doc__)
    common.add_device(p, default=None, many=True,
                      help="devices to time, separated by spaces or commas (default: one of "
                           "each kind available: cpu, and cuda, opencl where present)")
    p.add_argument("--rounds", type=common.positive_int, default=2,
                   help="rounds over the devices")
    p.add_argument("--epochs", type=common.positive_int, default=4000,
                   help="timed epochs per round")
    p.add_argument("--samples", type=common.positive_int, default=10_000,
                   help="training samples")
    common.add_threads(p, default=None)
    common.add_log_dir(p, SCRIPT, " (the summary)")
    return p


def time_device(device: str, x, y, epochs: int, bar) -> tuple[float, float]:
    """(seconds for ``epochs`` epochs after a warm-up epoch, final cost)."""
    import scratchnet as sn

    with sn.inference_network(4, common.article_layers(), device=device, seed=0) as net, \
            sn.training_network(net, x) as training:
        sn.sgd(training, y, sn.quadratic_cost, 1, HYPER)   # warm-up (compiles)
        # The bar reads costs once per 1,000 epochs: negligible next to them.
        monitors = [common.bar_monitor(bar, chunk=1000)] if not bar.disable else []
        with common.Stopwatch(common.device_sync(device)) as t:
            cost = sn.sgd(training, y, sn.quadratic_cost, epochs, HYPER, monitors=monitors)
    return t.seconds, cost


def main(argv=None) -> int:
    args, folder = common.start(build_parser(), argv, SCRIPT)

    import scratchnet as sn

    if args.threads is not None:
        sn.set_num_threads(args.threads)
    devices = ([d for item in args.device for d in item.split(",") if d] if args.device
               else sorted({d.split(":")[0] for d in sn.available_devices()}))
    x, y = common.series_data(args.samples, 0)
    results: dict = {d: [] for d in devices}
    with common.progress_bar(total=args.rounds * len(devices) * args.epochs, unit="epoch",
                             desc="series timing") as bar:
        for _ in range(args.rounds):
            for device in devices:
                bar.set_postfix_str(device, refresh=False)
                start = bar.n
                results[device].append(time_device(device, x, y, args.epochs, bar))
                bar.update(start + args.epochs - bar.n)
    rows = []
    for device in devices:
        s = common.stats(seconds for seconds, _ in results[device])
        rows.append([device, f"{s.median * 1e3:.0f}", s.spread(1e3, ".0f"),
                     f"{s.median / args.epochs * 1e3:.3f}", f"{results[device][-1][1]:.5f}"])
    text = (f"{args.epochs} epochs of 4-32-16-1 on {args.samples} samples, (η, λ) = {HYPER}, "
            f"{args.rounds} round(s)\n"
            + common.table(["device", "ms (median)", "min .. max", "ms per epoch", "final cost"],
                           rows, align="lrrrr"))
    print(text)
    common.write_summary(folder, text, SCRIPT, argv)
    print(f"\nRun folder: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
