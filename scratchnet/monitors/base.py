"""The monitor protocol: what the training driver tells the objects that
watch (and may stop, or rewind) a training call.

Every hook is a method of :class:`Monitor`, a no-op by default, and the
driver (``scratchnet/fit/driver.py``) calls each one directly.  Each hook
gets the training network being trained (for mini-batch training, the one
of batch size B); its ``epoch`` counts the updates the parameters have had.

Order of calls in one ``sgd``/``train`` call::

    start(training, cost, optimizer)                 once, before any epoch
    for each schedule entry:
        begin(training, optimizer, epochs) -> optimizer | None
        after_chunk(training, first_epoch, costs) -> None | optimizer | Rewind
                                                     after every chunk
        eta_changed(training, epoch, eta)            after a rewind
    complete(training)                               after the last epoch, no error
    finish(training)                                 always, also after an error

``chunk`` is the number of epochs between ``after_chunk`` calls; the driver
runs chunks of the smallest ``chunk`` of its monitors and reads each
chunk's per-epoch costs with one device-to-host copy (``None``: this
monitor needs no costs and is called at whatever chunks the others ask
for, or once per schedule entry when nobody asks).

``after_chunk`` returns None to go on, an optimizer to go on with instead
(from the next epoch), or a :class:`Rewind`: the monitor has put the
network back to an earlier, verified state (the divergence guard) and the
driver resumes the schedule from that epoch, in the schedule entry it
belongs to, with the learning rate of the entry that diverged and every
later one multiplied by ``Rewind.eta_factor``.  The driver then calls
``eta_changed`` on every monitor.  A monitor may also raise to stop
training (``finish`` still runs).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rewind:
    """``after_chunk``'s answer when the parameters (and optimizer state)
    were restored to those after ``epoch`` updates: train again from
    there, with η × ``eta_factor`` from the entry where the chunk ended."""

    epoch: int
    eta_factor: float = 1.0


class Monitor:
    """Base of every monitor: each hook is a no-op and ``chunk`` is None
    (no costs needed).  Override what you need, usually ``chunk`` and
    :meth:`after_chunk`; the protocol is in this module's docstring."""

    chunk: int | None = None

    def start(self, train, cost, optimizer) -> None:
        """Once per call, before any epoch; ``optimizer`` is the first
        schedule entry's."""

    def begin(self, train, optimizer, epochs: int):
        """Before a schedule entry's first epoch (again after a rewind into
        it); return an optimizer to use instead, or None."""
        return None

    def after_chunk(self, train, first_epoch: int, costs: list[float]):
        """After each chunk: ``costs[i]`` is the cost of epoch
        ``first_epoch + i``'s forward pass (before its update).  Return
        None, a replacement optimizer, or a :class:`Rewind`."""
        return None

    def eta_changed(self, train, epoch: int, eta: float | None) -> None:
        """The driver rewound to ``epoch`` and trains on from there with
        learning rate ``eta`` (None for an optimizer without one)."""

    def complete(self, train) -> None:
        """Once, after the call's last epoch, when no error occurred."""

    def finish(self, train) -> None:
        """Once per call, also after an error: release what ``start`` made."""


def check_monitors(monitors) -> list[Monitor]:
    """``monitors`` as a list of :class:`Monitor` instances whose ``chunk``
    is None or an int >= 1 (TypeError naming the offending entry)."""
    if isinstance(monitors, (str, bytes)) or not hasattr(monitors, "__iter__"):
        raise TypeError(f"monitors: expected a list of scratchnet.Monitor objects, "
                        f"got {monitors!r}")
    monitors = list(monitors)
    for i, monitor in enumerate(monitors):
        if not isinstance(monitor, Monitor):
            raise TypeError(f"monitors[{i}]: expected a scratchnet.Monitor (subclass it and "
                            f"override the hooks you need), got {monitor!r}")
        chunk = monitor.chunk
        if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int)
                                  or chunk < 1):
            raise TypeError(f"monitors[{i}]: expected chunk None or an int >= 1, got "
                            f"{chunk!r} on {monitor!r}")
    return monitors
