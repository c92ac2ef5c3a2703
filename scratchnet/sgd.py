"""The training loop: ``sgd`` as in part 12, with part 15's weight decay.

Every epoch is one full-batch step (the series' "sgd" has no mini-batches):

    forward;  g_L = a_L − y;  backward (δ, ∇W, ∇b for every layer);  update

The loop allocates nothing: every buffer belongs to the training network.  The
host reads the device once per call (the returned cost) unless a *monitor*
wants per-epoch costs: then the epochs run in chunks, each epoch writes its
cost into a slot of a device buffer, and the host reads the whole chunk with
one copy (reading every epoch would force a GPU sync every epoch).

A monitor is any object with

    chunk: int                       # epochs between reads (>= 1)
    start(train, cost, optimizer)    # once per sgd call, before any epoch
    after_chunk(train, first_epoch, costs) -> optimizer | None
                                     # costs: host floats, one per epoch of the
                                     # chunk (the cost before that epoch's
                                     # update); may raise to stop training, or
                                     # return a replacement optimizer
    finish(train)                    # once per sgd call, also after an error

TensorBoard logging, the divergence guard and checkpoints are monitors.
"""

from __future__ import annotations

import math
import numbers

import torch

from . import validation as check
from .costs import QuadraticCost
from .network import TrainingNetwork
from .optim import as_optimizer
from .threads import epoch_threads, threads_for


def _parse_schedule(schedule) -> list[tuple[int, object]]:
    """Validate a whole schedule before any epoch runs."""
    if isinstance(schedule, (str, bytes)) or not hasattr(schedule, "__iter__"):
        raise TypeError(f"schedule: expected an iterable of (epochs, hyper) pairs, "
                        f"got {schedule!r}")
    parsed = []
    for i, entry in enumerate(schedule):
        if not isinstance(entry, (tuple, list)) or len(entry) != 2:
            raise ValueError(f"schedule[{i}]: expected an (epochs, hyper) pair, got {entry!r}")
        epochs = check.check_int(f"schedule[{i}] epochs", entry[0], 0)
        parsed.append((epochs, as_optimizer(entry[1], f"schedule[{i}]")))
    return parsed


def run_epochs(train: TrainingNetwork, cost, epochs: int, optimizer, cost_slots=None) -> None:
    """``epochs`` full-batch steps, entirely on the device (no host read).

    Σ(a − y)² of each epoch's forward pass (before its update) goes into
    ``cost_slots[i]`` when given (one 1-element device array per epoch),
    else only the last epoch's goes into ``train.cost_sum``.  With 0 epochs:
    one forward pass and its cost, no update.  On CUDA the kernels are
    replayed from CUDA graphs (``cuda_graph.py``) when ``train.graphs`` is
    set; they are the same kernels either way."""
    graphs = train.graphs
    if graphs is None or not graphs.run(train, cost, epochs, optimizer, cost_slots):
        epoch_kernels(train, cost, epochs, optimizer, cost_slots)
    train.epoch += epochs


def epoch_kernels(train: TrainingNetwork, cost, epochs: int, optimizer, cost_slots=None) -> None:
    """The eager loop behind :func:`run_epochs`: launches the kernels of
    ``epochs`` epochs and touches no host state (a CUDA graph records it)."""
    be = train.backend
    out = train.layers[-1]
    if epochs == 0:
        train.forward()
        cost.output_gradient(be, out.z, out.a, train.y)
        cost.accumulate(be, out.z, train.cost_sum)
        return
    # The hot loop: every name it calls is bound once here (at n = 100 an
    # epoch is 20 kernels of 1-5 µs each, so Python's lookups show).
    forward, backward, step = train.forward, train.backward, optimizer.step
    gradient, accumulate = cost.output_gradient, cost.accumulate
    g, a, y = out.z, out.a, train.y
    last = epochs - 1
    for epoch in range(epochs):
        forward()
        gradient(be, g, a, y)
        if cost_slots is not None:
            accumulate(be, g, cost_slots[epoch])
        elif epoch == last:
            accumulate(be, g, train.cost_sum)
        backward()
        step(train)


def _run(train: TrainingNetwork, cost, epochs: int, optimizer, monitors) -> float:
    """Run one (epochs, optimizer) entry; return the cost of its last forward
    pass, the series' ``sgd`` return value."""
    optimizer.prepare(train)
    if not monitors or epochs == 0:
        run_epochs(train, cost, epochs, optimizer)
        return cost.finish(train.backend.read_scalar(train.cost_sum), train.n)
    chunk = min(m.chunk for m in monitors)
    last = math.nan
    done = 0
    while done < epochs:
        k = min(chunk, epochs - done)
        first = train.epoch
        run_epochs(train, cost, k, optimizer, train.cost_slots(k))
        costs = [cost.finish(raw, train.n) for raw in train.read_costs(k)]
        last = costs[-1]
        done += k
        for monitor in monitors:
            replacement = monitor.after_chunk(train, first, costs)
            if replacement is not None:
                optimizer = replacement
                optimizer.prepare(train)
    return last


@torch.no_grad()
def sgd(train: TrainingNetwork, y, cost, epochs, hyper=None, *, monitors=()):
    """Train ``train`` towards targets ``y`` (n, out_dim) on ``cost``.

    ``sgd(train, y, cost, epochs, hyper)``: ``epochs`` steps with ``hyper``
    (``eta``, ``(eta, lam)`` or an optimizer such as :class:`~scratchnet.SGD`);
    returns the cost of the last epoch (a float): the cost of its forward
    pass, before its update, as in the series.

    ``sgd(train, y, cost, schedule)``: ``schedule`` is an iterable of
    ``(epochs, hyper)`` pairs run in order; returns a list with one cost per
    pair (eager, unlike the series' lazy ``map``).

    ``monitors``: objects that watch the per-epoch cost (see the module
    docstring).

    Every argument is checked before any epoch runs; a rejected call changes
    nothing.
    """
    if not isinstance(train, TrainingNetwork):
        raise TypeError(f"train: expected a TrainingNetwork (training_network(net, x)), "
                        f"got {type(train).__name__}")
    train._check_open()
    if not isinstance(cost, QuadraticCost):
        raise TypeError(f"cost: expected a scratchnet cost such as scratchnet.quadratic_cost, "
                        f"got {cost!r}")
    if hyper is None:
        if isinstance(epochs, numbers.Integral) and not isinstance(epochs, bool):
            raise TypeError("hyper: missing; call sgd(train, y, cost, epochs, hyper) or "
                            "sgd(train, y, cost, [(epochs, hyper), ...])")
        schedule, single = _parse_schedule(epochs), False
    else:
        schedule = [(check.check_int("epochs", epochs, 0), as_optimizer(hyper))]
        single = True
    # The finite-values scan is skipped for the tensor already loaded and unchanged.
    y = check.matrix("y", y, train.backend, cols=train.net.out_dim, rows=train.n,
                     check_values=not train.holds_y(y))
    monitors = list(monitors)
    for i, monitor in enumerate(monitors):
        chunk = getattr(monitor, "chunk", None)
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise TypeError(f"monitors[{i}]: expected a monitor with an int chunk >= 1, "
                            f"got {monitor!r}")

    threads = threads_for(train)   # CPU thread count for this call (validates the env)
    train.load_y(y)
    for monitor in monitors:
        monitor.start(train, cost, schedule[0][1] if schedule else None)
    try:
        with epoch_threads(threads):
            costs = [_run(train, cost, n, optimizer, monitors) for n, optimizer in schedule]
    finally:
        for monitor in monitors:
            monitor.finish(train)
    return costs[0] if single else costs
