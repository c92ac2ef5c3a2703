"""The training driver: one loop behind ``sgd`` and ``train``.

The driver owns the schedule, the chunks and the monitors; what an epoch
*is* belongs to the epoch runner it is handed (``scratchnet/engine``):

    for each schedule entry (epochs, optimizer):
        while the entry's last epoch is not reached:
            run a chunk of epochs on the runner
            read the chunk's costs (one device-to-host copy)
            hand them to every monitor; a monitor may stop training, swap
            the optimizer, or rewind to a verified epoch (the guard)

Without monitors that want costs an entry runs as one chunk and the host
reads one number at its end: the series' ``sgd`` return value.

Rewinds.  Every entry's last epoch is fixed when the call starts (entry i
ends at ``start + e_0 + … + e_i``).  When a monitor rewinds to epoch e, the
driver resumes in the entry e belongs to, so each lost epoch is trained
again with its own entry's learning rate; the rewind's η factor applies to
the entry where the chunk ended and to every later one.

Interruptions.  In the main thread a first Ctrl-C (SIGINT) is deferred to
the end of the current epoch: the runner stops there, the monitors finish,
and ``KeyboardInterrupt`` is raised with ``train.epoch`` equal to the
updates the weights have had.  A second Ctrl-C interrupts at once.

Threads.  ``train.lock`` is held while a chunk runs, so a ``save`` from
another thread waits for the end of the chunk and writes a consistent
(weights, epoch, optimizer state).
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading

from ..engine.base import Stop
from ..engine.threads import epoch_threads
from ..monitors.base import Rewind


@contextlib.contextmanager
def deferred_interrupts(stop: Stop):
    """Turn the first SIGINT into ``stop.requested`` (the runner stops
    between epochs); the second one raises at once.  Outside the main
    thread, or when someone else handles SIGINT, nothing changes."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return

    def handler(signum, frame):
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested = True

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _eta(optimizer):
    eta = getattr(optimizer, "eta", None)
    return eta if isinstance(eta, (int, float)) else None


class Driver:
    """One call of ``sgd``/``train``: a runner, a cost, a validated
    schedule of (epochs, optimizer) pairs and the monitors, in the order
    they are to see each chunk."""

    def __init__(self, runner, cost, schedule, monitors, threads=None):
        self.runner = runner
        self.train = runner.train
        self.cost = cost
        self.schedule = schedule
        self.monitors = monitors
        self.threads = threads

    def run(self) -> list[float]:
        """Train every entry; one cost per entry (the cost of its last
        epoch's forward pass, or of the current parameters for 0 epochs)."""
        train, monitors = self.train, self.monitors
        first = self.schedule[0][1] if self.schedule else None
        stop = Stop()
        self.runner.stop = stop
        started = []
        try:
            for monitor in monitors:
                monitor.start(train, self.cost, first)
                started.append(monitor)
            with epoch_threads(self.threads), deferred_interrupts(stop):
                costs = self._entries(stop)
                if stop.requested:   # a Ctrl-C during the last chunk's monitors
                    raise KeyboardInterrupt
            for monitor in monitors:
                monitor.complete(train)
            return costs
        finally:
            self.runner.stop = Stop()
            for monitor in started:
                monitor.finish(train)

    def _entries(self, stop: Stop) -> list[float]:
        train, runner, cost = self.train, self.runner, self.cost
        ends, at = [], train.epoch
        for epochs, _ in self.schedule:
            at += epochs
            ends.append(at)
        factor = [1.0] * len(self.schedule)
        costs = [math.nan] * len(self.schedule)
        chunks = [m.chunk for m in self.monitors if m.chunk is not None]
        chunk = min(chunks) if chunks else None
        i = 0
        while i < len(self.schedule):
            optimizer = self._optimizer(i, factor[i])
            epochs = ends[i] - train.epoch
            for monitor in self.monitors:
                replacement = monitor.begin(train, optimizer, epochs)
                if replacement is not None:
                    optimizer = replacement
            optimizer.prepare(train)
            if epochs == 0:
                costs[i] = runner.measure(cost)
                i += 1
                continue
            rewound = None
            while train.epoch < ends[i] and rewound is None:
                k = ends[i] - train.epoch if chunk is None else min(chunk, ends[i] - train.epoch)
                start = train.epoch
                with train.lock:
                    runner.run(cost, k, optimizer, record=chunk is not None)
                if stop.requested:
                    raise KeyboardInterrupt
                if chunk is None:
                    costs[i] = runner.last_cost(cost)
                    continue
                chunk_costs = runner.costs(cost, k)
                costs[i] = chunk_costs[-1]
                for monitor in self.monitors:
                    answer = monitor.after_chunk(train, start, chunk_costs)
                    if isinstance(answer, Rewind):
                        rewound = answer
                        break
                    if answer is not None:
                        optimizer = answer
                        optimizer.prepare(train)
            if rewound is None:
                i += 1
                continue
            # Resume in the entry the restored epoch belongs to.
            train.epoch = rewound.epoch
            for j in range(i, len(factor)):
                factor[j] *= rewound.eta_factor
            i = next(j for j, end in enumerate(ends) if rewound.epoch < end or j == len(ends) - 1)
            eta = _eta(self._optimizer(i, factor[i]))
            for monitor in self.monitors:
                monitor.eta_changed(train, rewound.epoch, eta)
        return costs

    def _optimizer(self, i: int, factor: float):
        optimizer = self.schedule[i][1]
        if factor == 1.0:
            return optimizer
        return optimizer.with_eta(optimizer.eta * factor)
