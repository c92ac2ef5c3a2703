"""What the scripts in ``scripts/`` share, written once.

* the series' data set, f(x) = sin x0 + cos x1 + tanh x2 + x3², and its
  4-32-16-1 network (:func:`series_data`, :func:`article_layers`);
* command-line pieces that read the same in every script: a help formatter
  that shows every default, ``--device``, ``--log-dir``, ``--seeds`` (a
  list: ``--seeds 0 1 2``, ``--seeds 1000-1009``) and checked number types;
* the run folder: ``runs/<script>/<YYYYmmdd-HHMMSS>/`` unless the user names
  one, never an existing TensorBoard run (:func:`run_folder`);
* timing and statistics: :class:`Stopwatch`, :func:`stats`,
  :func:`interleave` (configurations measured round after round);
* progress: :func:`progress_bar`, and :func:`bar_monitor`, a scratchnet
  monitor that moves one bar across many ``sgd`` calls;
* tables: :func:`table` (GitHub Markdown, columns padded), and
  :func:`write_summary`, which saves the summary into the run folder.

Nothing here imports numpy, torch or scratchnet at module level: a script
parses its arguments first, so ``--help`` and a bad flag answer before the
heavy imports.  Functions that need them import them when called.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import math
import re
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

#: Where run folders go unless the user names one (relative to the working directory).
RUNS = Path("runs")

# ----------------------------------------------------------------------------- data


def series_data(n: int, rng=0):
    """The series' regression task: ``x`` (n, 4) ~ U[0, 1)⁴ in float32 and
    ``y`` (n, 1) = sin x0 + cos x1 + tanh x2 + x3².  ``rng``: a seed, or a
    ``numpy.random.Generator`` to draw from (two calls on one generator give
    a training set and a test set)."""
    import numpy as np

    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    x = rng.random((n, 4), dtype=np.float32)
    y = np.sin(x[:, 0]) + np.cos(x[:, 1]) + np.tanh(x[:, 2]) + x[:, 3] ** 2
    return x, y.reshape(-1, 1).astype(np.float32)


def article_layers(hidden: Sequence[int] = (32, 16)) -> list:
    """The series' layers after the 4 inputs: ``hidden[0]`` sigmoid units,
    ``hidden[1]`` tanh units, one linear output (4-32-16-1 by default)."""
    import scratchnet as sn

    return [sn.fully_connected(hidden[0], sn.sigmoid), sn.fully_connected(hidden[1], sn.tanh),
            sn.fully_connected(1, sn.linear)]


# ----------------------------------------------------------------------------- arguments


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the script's docstring as written and appends each flag's
    default, unless its help already says what the default is (a default
    of None or False is explained in words instead of printed)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if "default" in text or default is None or default is False or \
                default is argparse.SUPPRESS:
            return text
        if action.option_strings or action.nargs in ("?", "*"):
            if isinstance(default, (list, tuple)):
                default = " ".join(map(str, default))
            text += f" (default: {default})".replace("%", "%%")
        return text


def parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser whose ``--help`` shows the script's docstring
    ``doc`` and every default."""
    return argparse.ArgumentParser(description=doc, formatter_class=Formatter)


def _number(kind: type, low: float, strict: bool = False) -> Callable[[str], float]:
    relation = ">" if strict else ">="

    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'} {relation} {low:g}, "
                f"got {text!r}") from None
        if not (value > low if strict else value >= low) or not math.isfinite(value):
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'} {relation} {low:g}, "
                f"got {text!r}")
        return value

    convert.__name__ = f"{kind.__name__} {relation} {low:g}"
    return convert


#: argparse types that name what they expect: ``type=positive_int`` ...
positive_int = _number(int, 1)
nonnegative_int = _number(int, 0)
positive_float = _number(float, 0.0, strict=True)
nonnegative_float = _number(float, 0.0)


def seed_list(text: str) -> list[int]:
    """One ``--seeds`` token: ``7`` or an inclusive range ``0-9``."""
    first, dash, last = text.partition("-")
    try:
        lo = int(first)
        hi = int(last) if dash else lo
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected seeds as integers >= 0 or ranges A-B, got {text!r}") from None
    if lo < 0 or hi < lo:
        raise argparse.ArgumentTypeError(
            f"expected seeds as integers >= 0 or ranges A-B with A <= B, got {text!r}")
    return list(range(lo, hi + 1))


class _Seeds(argparse.Action):
    """Flattens ``--seeds 0 3-5`` into [0, 3, 4, 5] and refuses repeats."""

    def __call__(self, parser, namespace, values, option_string=None):
        seeds = [s for chunk in values for s in chunk]
        repeated = sorted({s for s in seeds if seeds.count(s) > 1})
        if repeated:
            parser.error(f"argument --seeds: each seed once, got {repeated[0]} twice")
        setattr(namespace, self.dest, seeds)


def add_seeds(p: argparse.ArgumentParser, default: str, what: str) -> None:
    """``--seeds``, a list in every script: integers and inclusive ranges,
    ``--seeds 0 1 2`` or ``--seeds 0-2``; ``default`` is written the same way."""
    p.add_argument("--seeds", nargs="+", type=seed_list, action=_Seeds, default=default,
                   metavar="SEED", help=f"{what}: integers or ranges A-B (default: {default})")


def add_device(p: argparse.ArgumentParser, default: str = "cpu", many: bool = False,
               help: str | None = None) -> None:
    """``--device``: a scratchnet device string (``many``: one or more)."""
    text = help or "scratchnet device: cpu, cuda, cuda:1, opencl, opencl:0:1, ..."
    if many:
        p.add_argument("--device", nargs="+", default=default, help=text)
    else:
        p.add_argument("--device", default=default, help=text)


def add_log_dir(p: argparse.ArgumentParser, script: str, what: str = "") -> None:
    """``--log-dir``: where this run's files go."""
    p.add_argument("--log-dir", type=Path, default=None, metavar="DIR",
                   help=f"folder for this run's files{what}; it must not hold an earlier "
                        f"TensorBoard run (default: a fresh {RUNS}/{script}/YYYYmmdd-HHMMSS/)")


def add_threads(p: argparse.ArgumentParser, default: int | None = 1) -> None:
    """``--threads``: torch's intra-op CPU threads."""
    if default is None:
        p.add_argument("--threads", type=positive_int, default=None,
                       help="torch CPU threads (default: scratchnet's rule for the "
                            "product sizes)")
    else:
        p.add_argument("--threads", type=positive_int, default=default,
                       help="torch CPU threads (on a shared machine, spinning threads "
                            "slow small products down)")


def _event_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("events.out.tfevents.*")) if folder.is_dir() else []


def check_log_dir(p: argparse.ArgumentParser, log_dir: Path | None) -> None:
    """Refuse (``p.error``) a named folder that already holds a TensorBoard
    run: a second run into it would stack on the same steps.  Creates nothing."""
    if log_dir is None:
        return
    if log_dir.exists() and not log_dir.is_dir():
        p.error(f"argument --log-dir: expected a folder, got the file {log_dir}")
    found = _event_files(log_dir)
    if found:
        p.error(f"argument --log-dir: {log_dir} already holds a TensorBoard run "
                f"({found[0].relative_to(log_dir)}); a second run would write over the same "
                f"steps. Name a new folder, or leave --log-dir out for a fresh one under "
                f"{RUNS}/")


def start(parser: argparse.ArgumentParser, argv, script: str):
    """What every script does first: parse the arguments (before anything
    heavy is imported), refuse a ``--log-dir`` that already holds a run,
    and make the run folder.  Returns ``(args, folder)``."""
    args = parser.parse_args(argv)
    check_log_dir(parser, args.log_dir)
    return args, run_folder(script, args.log_dir)


def run_folder(script: str, log_dir: Path | None = None, now: datetime.datetime | None = None
               ) -> Path:
    """The run's folder, created: ``log_dir`` when given (check it first
    with :func:`check_log_dir`), else ``runs/<script>/<YYYYmmdd-HHMMSS>``,
    with ``-2``, ``-3``, ... appended when that second is already taken."""
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        return log_dir
    stamp = (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")
    parent = RUNS / script
    parent.mkdir(parents=True, exist_ok=True)
    for k in range(1, 1000):
        folder = parent / (stamp if k == 1 else f"{stamp}-{k}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise RuntimeError(f"no free run folder for {parent / stamp}")


def write_summary(folder: Path, text: str, script: str, argv: Sequence[str] | None = None,
                  name: str = "summary.md") -> Path:
    """Save ``text`` (the summary the script printed) as ``folder/name``,
    under the command line that produced it (``argv``: the script's
    arguments, default ``sys.argv[1:]``)."""
    args = sys.argv[1:] if argv is None else list(argv)
    command = " ".join(shlex.quote(a) for a in [f"scripts/{script}.py", *args])
    path = folder / name
    path.write_text(f"```\n$ python {command}\n```\n\n{text.rstrip()}\n", encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- tables


_NUMERIC = re.compile(r"^[-+]?(\d[\d,]*\.?\d*|\.\d+)([eE][-+]?\d+)?\s?(%|x|×|s|ms|µs|/\d+)?$")
# Cells that may stand in a column of numbers without making it text.
_NEUTRAL = {"", "-", "–", "nan", "inf", "diverged"}


def _numeric(cells: list[str]) -> bool:
    return all(_NUMERIC.match(c) for c in cells if c not in _NEUTRAL)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]],
          align: str | None = None) -> str:
    """A GitHub Markdown table with padded columns.  ``align``: one letter
    per column, ``l`` or ``r`` (default: columns of numbers right, others
    left).  Cells are printed with ``str``; format numbers before.  A ``|``
    in a cell is escaped as ``\\|``, as Markdown wants."""
    rows = [[str(c).replace("|", "\\|") for c in row] for row in rows]
    headers = [str(h).replace("|", "\\|") for h in headers]
    if any(len(r) != len(headers) for r in rows):
        raise ValueError(f"table: expected {len(headers)} cells in every row")
    if align is None:
        align = "".join("r" if _numeric([r[i] for r in rows]) else "l"
                        for i in range(len(headers)))
    if len(align) != len(headers) or set(align) - {"l", "r"}:
        raise ValueError(f"table: expected {len(headers)} alignment letters l or r, "
                         f"got {align!r}")
    widths = [max(len(h), *(len(r[i]) for r in rows), 3) for i, h in enumerate(headers)]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) if a == "l" else c.rjust(w)
                                 for c, w, a in zip(cells, widths, align)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if a == "r" else ("-" * (w + 2))
                          for w, a in zip(widths, align)) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def fmt(value: float, spec: str = ".4g", nonfinite: str = "diverged") -> str:
    """``format(value, spec)``, or ``nonfinite`` for inf and NaN."""
    return format(value, spec) if math.isfinite(value) else nonfinite


# ----------------------------------------------------------------------------- timing


class Stopwatch:
    """``with Stopwatch(sync) as t: ...`` then ``t.seconds``: wall-clock
    time of the block.  ``sync`` (e.g. ``torch.cuda.synchronize``) is called
    before the clock starts and before it stops, so queued device work is
    counted where it was launched."""

    def __init__(self, sync: Callable[[], object] | None = None):
        self.sync = sync
        self.seconds = math.nan

    def __enter__(self) -> Stopwatch:
        if self.sync is not None:
            self.sync()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.sync is not None:
            self.sync()
        self.seconds = time.perf_counter() - self._start


def device_sync(device: str) -> Callable[[], object] | None:
    """What to call to wait for ``device``'s queued work (None: nothing)."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.synchronize
    return None


@dataclass(frozen=True)
class Stats:
    """Median and spread of repeated measurements."""

    n: int
    median: float
    low: float
    high: float
    q1: float
    q3: float

    def spread(self, scale: float = 1.0, spec: str = ".3g") -> str:
        """``min .. max`` scaled (e.g. 1e3 for seconds to ms)."""
        return f"{self.low * scale:{spec}} .. {self.high * scale:{spec}}"


def stats(values: Iterable[float]) -> Stats:
    """:class:`Stats` of ``values`` (at least one): median, min, max and
    the quartiles (``statistics.quantiles``, inclusive method)."""
    values = sorted(values)
    if not values:
        raise ValueError("stats: expected at least one value, got none")
    q1, _, q3 = (statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1
                 else (values[0],) * 3)
    return Stats(len(values), statistics.median(values), values[0], values[-1], q1, q3)


def interleave(labels: Sequence, rounds: int, measure: Callable[[object], object],
               desc: str = "rounds") -> dict:
    """Run ``measure(label)`` for every label, round after round (so that a
    change in the machine's load hits every configuration alike), under a
    progress bar; return ``{label: [result of each round]}``."""
    results: dict = {label: [] for label in labels}
    with progress_bar(total=rounds * len(labels), desc=desc, unit="run") as bar:
        for _ in range(rounds):
            for label in labels:
                bar.set_postfix_str(str(label), refresh=False)
                results[label].append(measure(label))
                bar.update()
    return results


# ----------------------------------------------------------------------------- progress


def progress_bar(**kwargs):
    """A tqdm bar on stderr, shown when stderr is a terminal (quiet in logs
    and under pytest).  Keywords go to ``tqdm``."""
    from tqdm.auto import tqdm

    kwargs.setdefault("disable", None)   # None: off when stderr is not a tty
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("file", sys.stderr)
    return tqdm(**kwargs)


@functools.cache
def _bar_monitor_class():
    import scratchnet as sn

    class BarMonitor(sn.Monitor):
        """Moves a tqdm bar to the epochs trained, across calls."""

        def __init__(self, bar, chunk: int | None):
            self.bar, self.chunk = bar, chunk
            self.offset = 0

        def start(self, train, cost, optimizer):
            self.offset = self.bar.n - train.epoch   # the bar may span several calls

        def _show(self, epoch, costs=None):
            if costs:
                self.bar.set_postfix(cost=fmt(costs[-1], ".4g", "nan/inf"), refresh=False)
            self.bar.update(epoch + self.offset - self.bar.n)

        def after_chunk(self, train, first_epoch, costs):
            self._show(train.epoch, costs)

        def eta_changed(self, train, epoch, eta):
            self._show(epoch)

        def complete(self, train):
            self._show(train.epoch)

    return BarMonitor


def bar_monitor(bar, chunk: int | None = 10):
    """A :class:`scratchnet.Monitor` that advances ``bar`` (from
    :func:`progress_bar`) to the epochs trained, with the latest cost, every
    ``chunk`` epochs (None: whenever other monitors read costs, or at the
    end of each schedule entry).  Pass the same one to successive calls to
    follow a run of many calls on one bar."""
    return _bar_monitor_class()(bar, chunk)
