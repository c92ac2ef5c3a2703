"""A progress bar for long calls: ``sgd(..., progress=True)``.

A tqdm bar on stderr showing epochs done, the latest cost and epochs per
second.  It reads nothing from the device: it is updated with the costs
the driver already read for a chunk (the guard's, the logger's).
"""

from __future__ import annotations

import sys
import time

from .base import Monitor

#: Seconds between redraws (tqdm's own default).
REDRAW = 0.1


class Progress(Monitor):
    """The bar for one call of ``total`` epochs (see the module docstring).
    ``chunk``: None to follow the other monitors' chunks, or the epochs
    between updates when no other monitor reads costs."""

    def __init__(self, total: int, desc: str = "training", chunk: int | None = None):
        self.total = total
        self.desc = desc
        self.chunk = chunk
        self.bar = None

    def start(self, train, cost, optimizer) -> None:
        from tqdm.auto import tqdm  # imported on first use

        self.origin = train.epoch
        self.cost = None
        self.bar = tqdm(total=self.total, desc=self.desc, unit="epoch", file=sys.stderr,
                        dynamic_ncols=True, leave=True)
        self.drawn = time.monotonic()

    def after_chunk(self, train, first_epoch, costs):
        self.cost = costs[-1]
        now = time.monotonic()
        if now - self.drawn >= REDRAW:   # formatting costs more than a small chunk
            self.bar.set_postfix(cost=f"{self.cost:.4g}", refresh=False)
            self.bar.update(train.epoch - self.origin - self.bar.n)
            self.drawn = now
        return None

    def eta_changed(self, train, epoch, eta) -> None:
        self.bar.set_postfix(eta=f"{eta:g}" if eta is not None else "?", refresh=False)
        self.bar.n = epoch - self.origin
        self.bar.refresh()

    def complete(self, train) -> None:
        if self.cost is not None:
            self.bar.set_postfix(cost=f"{self.cost:.4g}", refresh=False)
        self.bar.update(train.epoch - self.origin - self.bar.n)

    def finish(self, train) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
