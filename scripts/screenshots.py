"""Take the TensorBoard screenshots in docs/ from a fresh run.

    python scripts/screenshots.py                 # docs/dashboard.png, docs/dashboard-scalars.png
    python scripts/screenshots.py --seed 6 --out /tmp/shots --chromium /usr/bin/chromium

1. Trains the weight-decay replay (scripts/weight_decay.py --replay-only:
   4-32-16-1, η = 0.3, λ = 0 and 0.9, 2,170 epochs, every epoch logged) into
   a fresh run folder, runs/screenshots/YYYYmmdd-HHMMSS/ unless --log-dir
   names one.
2. Starts a real TensorBoard server in this process, on 127.0.0.1 and a free
   port, over that folder; it loads the runs once before serving.
3. Opens its Custom Scalars tab and its Scalars tab in headless Chromium
   (a fresh profile in a temporary folder, no network but loopback needed)
   and saves <out>/dashboard.png and <out>/dashboard-scalars.png.
4. Stops the server.

Chromium: apt-get install chromium (Debian), or name the binary with
--chromium.  --wait-ms is the virtual time Chromium gives the page to fetch
the data and draw the charts before the screenshot.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (scripts/common.py, however this file is run)

SCRIPT = "screenshots"
ROOT = Path(__file__).resolve().parent.parent
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
SHOTS = (("dashboard.png", "custom_scalars"), ("dashboard-scalars.png", "scalars"))


def build_parser():
    p = common.parser(__doc__)
    common.add_device(p, help="device the replay trains on")
    p.add_argument("--seed", type=common.nonnegative_int, default=6,
                   help="seed of the replay (seed 0 diverges at once: charts of nothing but "
                        "the blow-up)")
    p.add_argument("--out", type=Path, default=ROOT / "docs",
                   help="folder the PNG files go to (default: the repository's docs/)")
    p.add_argument("--chromium", default=None,
                   help=f"Chromium binary (default: the first of {', '.join(BROWSERS)} "
                        f"on PATH)")
    p.add_argument("--size", default="1400,1000", help="window size in pixels, WIDTH,HEIGHT")
    p.add_argument("--wait-ms", type=common.positive_int, default=15_000,
                   help="virtual time for the page to load and draw")
    p.add_argument("--timeout", type=common.positive_float, default=120.0,
                   help="seconds one Chromium run may take")
    common.add_log_dir(p, SCRIPT, " (the replay's TensorBoard runs)")
    return p


def find_chromium(name: str | None) -> str | None:
    if name is not None:
        return shutil.which(name) or (name if Path(name).is_file() else None)
    return next((found for b in BROWSERS if (found := shutil.which(b))), None)


def start_tensorboard(logdir: Path):
    """A TensorBoard server on 127.0.0.1:<free port> over ``logdir``, in
    this process, the runs loaded once before it serves; returns
    (url, stop) where ``stop()`` shuts it down."""
    from tensorboard import program

    servers = []

    def make_server(app, flags):
        servers.append(program.WerkzeugServer(app, flags))
        return servers[-1]

    tb = program.TensorBoard(server_class=make_server)
    tb.configure(argv=[None, "--logdir", str(logdir), "--host", "127.0.0.1", "--port", "0",
                       "--load_fast", "false", "--reload_interval", "0",
                       "--reload_task", "blocking"])
    url = tb.launch().rstrip("/")
    (server,) = servers

    def stop():
        server.shutdown()
        server.server_close()
        for t in threading.enumerate():
            if t.name == "TensorBoard":
                t.join(10)

    return url, stop


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's header; ValueError if it is not a PNG."""
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise ValueError(f"{path}: not a PNG file")
    return struct.unpack(">II", head[16:24])


def screenshot(chromium: str, url: str, path: Path, size: str, wait_ms: int,
               timeout: float) -> None:
    """Headless Chromium, a fresh profile, ``url`` saved as ``path``."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                   "--no-first-run", "--disable-background-networking",
                   "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                   f"--user-data-dir={profile}", f"--screenshot={path}",
                   f"--window-size={size}", f"--virtual-time-budget={wait_ms}", url]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not path.is_file():
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        raise RuntimeError(f"chromium exited with status {proc.returncode} and no "
                           f"{path}:\n{tail}")


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    common.check_log_dir(p, args.log_dir)
    try:
        width, height = (int(v) for v in args.size.split(","))
        if width < 1 or height < 1:
            raise ValueError
    except ValueError:
        p.error(f"argument --size: expected WIDTH,HEIGHT in pixels, got {args.size!r}")
    chromium = find_chromium(args.chromium)
    if chromium is None:
        p.error(f"argument --chromium: no Chromium found ({args.chromium or ', '.join(BROWSERS)}"
                f"); install it (apt-get install chromium) or name the binary")

    import weight_decay

    folder = common.run_folder(SCRIPT, args.log_dir)
    weight_decay.main(["--replay-only", "--seed", str(args.seed), "--device", args.device,
                       "--log-dir", str(folder)])
    args.out.mkdir(parents=True, exist_ok=True)
    url, stop = start_tensorboard(folder)
    rows = []
    try:
        with common.progress_bar(total=len(SHOTS), desc="screenshots", unit="shot") as bar:
            for name, tab in SHOTS:
                target = args.out / name
                with tempfile.TemporaryDirectory() as tmp:   # never half a file in docs/
                    shot = Path(tmp) / name
                    with common.Stopwatch() as t:
                        screenshot(chromium, f"{url}/#{tab}", shot, f"{width},{height}",
                                   args.wait_ms, args.timeout)
                    got = png_size(shot)
                    if got != (width, height):
                        raise RuntimeError(f"{name}: {got[0]}x{got[1]} pixels, expected "
                                           f"{width}x{height}")
                    shutil.move(str(shot), target)
                rows.append([str(target), f"#{tab}", f"{width}x{height}",
                             f"{target.stat().st_size // 1024} KiB", f"{t.seconds:.1f}"])
                bar.update()
    finally:
        stop()
    text = common.table(["file", "tab", "pixels", "size", "seconds"], rows)
    print(f"\nTensorBoard over {folder} (server stopped), Chromium {chromium}\n{text}")
    # next to the replay's own summary.md
    common.write_summary(folder, text, SCRIPT, argv, name="screenshots.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
