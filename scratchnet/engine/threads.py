"""How many CPU threads the epoch loop uses.

torch runs its CPU kernels on an OpenMP pool as large as the machine's
cores.  For the series' networks that is the wrong default: the products
are small (the article's 4-32-16-1 at n = 10,000 multiplies 32×4 by 4×10⁴),
the second thread gains little, and when another process holds a core the
threads spin at every barrier (docs/performance.md, "Threads", has the numbers
measured on the shared 2-core development machine: under outside load two
threads were many times slower than one).

So, by default, :func:`~scratchnet.sgd` runs a CPU training network whose
largest product is *small* (out · in · n below :data:`SMALL_PRODUCT`
multiply-adds) on **one** thread, and larger ones on torch's own setting.
The choice is scoped: sgd sets torch's thread count on entry and restores
it on return, so nothing changes for other torch code, and importing
scratchnet changes nothing at all.

The user decides with :func:`set_num_threads` (``None`` = the automatic
rule above) or the environment variable ``SCRATCHNET_NUM_THREADS`` (a
positive int, read at the first sgd call; :func:`set_num_threads` overrides
it; a malformed value raises ``ValueError`` there).
"""

from __future__ import annotations

import contextlib
import os

import torch

from .. import validation as check

#: Environment variable that fixes the epoch loop's CPU thread count.
ENV = "SCRATCHNET_NUM_THREADS"

#: Largest product (out · in · n multiply-adds) still run on one thread.
#: A judgment from the measurements in docs/performance.md ("Threads"): on the
#: shared 2-core machine a second thread made 4-256-256-1 at n = 10,000
#: (6.6·10⁸) 3× slower under load and 1.8× faster when the other core was
#: idle; the article network at n = 10,000 (5·10⁶) lost in both cases.
#: From 10⁹ (~10 ms of one core) up, where a machine with idle cores gains
#: most, torch's own setting is kept.
SMALL_PRODUCT = 1_000_000_000


_UNSET = object()
_requested = _UNSET   # an int, None (automatic), or _UNSET (not decided: read ENV)


def _from_env() -> int | None:
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{ENV}: expected a positive int, got {raw!r}")
    return int(raw)


def set_num_threads(threads: int | None) -> None:
    """Fix the number of CPU threads :func:`~scratchnet.sgd` trains with
    (a positive int), or ``None`` for the automatic rule (one thread for
    small products, torch's setting otherwise).  Overrides
    ``SCRATCHNET_NUM_THREADS``."""
    global _requested
    if threads is not None:
        threads = check.check_int("threads", threads, 1)
    _requested = threads


def get_num_threads() -> int | None:
    """What :func:`set_num_threads` or ``SCRATCHNET_NUM_THREADS`` asked
    for; ``None`` when the automatic rule is in force."""
    global _requested
    if _requested is _UNSET:
        _requested = _from_env()
    return _requested


def largest_product(train) -> int:
    """out · in · n of the training network's largest matrix product."""
    return max(tl.layer.out_dim * tl.layer.in_dim for tl in train.layers) * train.n


def threads_for(train) -> int | None:
    """The thread count sgd will use for ``train``; ``None`` means torch's
    own setting is left alone (not a CPU torch network, or a large one)."""
    device = getattr(train.backend, "torch_device", None)
    if device is None or device.type != "cpu":
        return None
    requested = get_num_threads()
    if requested is not None:
        return requested
    return automatic_threads(largest_product(train))


def automatic_threads(product: int) -> int | None:
    """The automatic rule: 1 thread when the largest product (out · in · n
    multiply-adds) is below :data:`SMALL_PRODUCT`, else ``None`` (torch's)."""
    return 1 if product < SMALL_PRODUCT else None


@contextlib.contextmanager
def epoch_threads(wanted: int | None):
    """Run the body with ``wanted`` torch CPU threads (``None``: leave
    torch's setting), then put torch's setting back."""
    previous = torch.get_num_threads()
    if wanted is None or wanted == previous:
        yield
        return
    torch.set_num_threads(wanted)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
