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

and optionally

    begin(train, optimizer, epochs) -> optimizer | None
                                     # before each schedule entry's first epoch
    complete(train)                  # once, after the last epoch, if no error
    eta_changed(train, epoch, eta)   # the guard's backoff changed η

A monitor may also move ``train.epoch`` back (the divergence guard restores
an earlier state): an entry runs until ``train.epoch`` reaches the epoch it
was asked to reach, so epochs lost to a restore are run again.

TensorBoard logging, the divergence guard and checkpoints are monitors; the
guard (``scratchnet/guard.py``) and the checkpointer
(``scratchnet/checkpoint.py``) are built by :func:`sgd` from its keywords.
"""

from __future__ import annotations

import math
import numbers

import torch

from .. import validation as check
from ..engine.threads import epoch_threads, threads_for
from ..monitors.guard import Guard
from ..monitors.tensorboard import TensorBoardLogger
from ..nn.checkpoint import Checkpointer
from ..nn.costs import Cost
from ..nn.network import TrainingNetwork
from ..nn.optim import as_optimizer


class Monitor:
    """A convenient base for monitors: every hook is a no-op, ``chunk`` is 1.
    Override what you need (usually ``chunk`` and :meth:`after_chunk`); the
    protocol is in this module's docstring."""

    chunk = 1

    def start(self, train, cost, optimizer) -> None:
        """Once per sgd call, before any epoch."""

    def after_chunk(self, train, first_epoch: int, costs: list[float]):
        """After each chunk; return a replacement optimizer or None."""
        return None

    def finish(self, train) -> None:
        """Once per sgd call, also after an error."""


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


def check_monitors(monitors) -> list:
    """``monitors`` as a list, each with an int ``chunk`` >= 1 (TypeError
    naming the offending entry otherwise)."""
    if isinstance(monitors, (str, bytes)) or not hasattr(monitors, "__iter__"):
        raise TypeError(f"monitors: expected a list of monitors, got {monitors!r}")
    monitors = list(monitors)
    for i, monitor in enumerate(monitors):
        chunk = getattr(monitor, "chunk", None)
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise TypeError(f"monitors[{i}]: expected a monitor with an int chunk >= 1, "
                            f"got {monitor!r}")
    return monitors


def parse_plan(cost, epochs, hyper, call: str) -> tuple[list[tuple[int, object]], bool]:
    """The checks ``sgd`` and ``train`` share: ``cost`` is a scratchnet cost,
    and either ``epochs`` with ``hyper`` or a schedule in ``epochs``.
    Returns ``(schedule, single)``; ``call`` names the caller in messages."""
    if not isinstance(cost, Cost):
        raise TypeError(f"cost: expected a scratchnet cost such as scratchnet.quadratic_cost "
                        f"or scratchnet.cross_entropy, got {cost!r}")
    if hyper is None:
        if isinstance(epochs, numbers.Integral) and not isinstance(epochs, bool):
            raise TypeError(f"hyper: missing; call {call}, epochs, hyper) or "
                            f"{call}, [(epochs, hyper), ...])")
        return _parse_schedule(epochs), False
    return [(check.check_int("epochs", epochs, 0), as_optimizer(hyper))], True


def run_epochs(train: TrainingNetwork, cost, epochs: int, optimizer, cost_slots=None) -> None:
    """``epochs`` full-batch steps, entirely on the device (no host read).

    Σ(a − y)² of each epoch's forward pass (before its update) goes into
    ``cost_slots[i]`` when given (one 1-element device array per epoch),
    else only the last epoch's goes into ``train.cost_sum``.  With 0 epochs:
    one forward pass and its cost, no update.  On CUDA the kernels are
    replayed from CUDA graphs (``cuda_graph.py``) when ``train.graphs`` is
    set; they are the same kernels either way.

    Data parallel (``train.all_reduce`` set, see ``scratchnet/distributed.py``):
    every epoch's cost goes into ``cost_sum``, the tail of the gradient
    buffer, and one all-reduce between backward and update sums gradients and
    cost over the ranks; so every rank runs the same collectives whatever
    monitors it has, and reads only global costs.  (Such epochs run eagerly:
    a collective is not captured in a graph.)"""
    graphs = train.graphs
    if graphs is None or train.all_reduce is not None or not graphs.run(
            train, cost, epochs, optimizer, cost_slots):
        epoch_kernels(train, cost, epochs, optimizer, cost_slots)
    train.epoch += epochs


def epoch_kernels(train: TrainingNetwork, cost, epochs: int, optimizer, cost_slots=None) -> None:
    """The eager loop behind :func:`run_epochs`: launches the kernels of
    ``epochs`` epochs and touches no host state (a CUDA graph records it)."""
    be = train.backend
    out = train.layers[-1]
    cost = cost.bind(train.net)   # e.g. cross-entropy: binary or categorical
    reduce = train.all_reduce
    if epochs == 0:
        train.forward()
        cost.gradient(be, out.z, out.a, train.y, train.cost_sum)
        if reduce is not None:
            reduce(train.cost_sum)
        return
    # The hot loop: every name it calls is bound once here (at n = 100 an
    # epoch is 20 kernels of 1-5 µs each, so Python's lookups show).
    forward, backward, step = train.forward, train.backward, optimizer.step
    gradient, fused = cost.gradient, cost.fused
    g, a, y = out.z, out.a, train.y
    last = epochs - 1
    for epoch in range(epochs):
        forward()
        if reduce is not None:
            slot = train.cost_sum   # reduced with the gradients below
        elif cost_slots is not None:
            slot = cost_slots[epoch]
        else:
            slot = train.cost_sum if epoch == last else None
        gradient(be, g, a, y, slot)
        backward(fused)
        if reduce is not None:
            reduce(train.reduce_buffer)
            if cost_slots is not None:
                be.copy_(cost_slots[epoch], train.cost_sum)
        step(train)


def _run(train: TrainingNetwork, cost, epochs: int, optimizer, monitors) -> float:
    """Run one (epochs, optimizer) entry; return the cost of its last forward
    pass, the series' ``sgd`` return value."""
    for monitor in monitors:
        begin = getattr(monitor, "begin", None)
        replacement = begin(train, optimizer, epochs) if begin is not None else None
        if replacement is not None:
            optimizer = replacement
    optimizer.prepare(train)
    if not monitors or epochs == 0:
        run_epochs(train, cost, epochs, optimizer)
        return cost.finish(train.backend.read_scalar(train.cost_sum), train.n_global)
    chunk = min(m.chunk for m in monitors)
    last = math.nan
    target = train.epoch + epochs   # a monitor may move train.epoch back
    while train.epoch < target:
        k = min(chunk, target - train.epoch)
        first = train.epoch
        run_epochs(train, cost, k, optimizer, train.cost_slots(k))
        costs = [cost.finish(raw, train.n_global) for raw in train.read_costs(k)]
        last = costs[-1]
        optimizer = after_chunk(monitors, train, first, costs, optimizer)
    return last


def after_chunk(monitors, train, first_epoch: int, costs: list[float], optimizer):
    """Hand a chunk's costs to every monitor in order; returns the optimizer
    to go on with (a monitor may replace it, e.g. the guard's backoff)."""
    for monitor in monitors:
        replacement = monitor.after_chunk(train, first_epoch, costs)
        if replacement is not None:
            optimizer = replacement
            optimizer.prepare(train)
    return optimizer


@torch.no_grad()
def sgd(train: TrainingNetwork, y, cost, epochs, hyper=None, *, monitors=(), log_dir=None,
        test=None, log_every=1, hist_every=None, guard=True, guard_factor=1e3,
        guard_every=16, on_divergence="raise", max_backoffs=5, checkpoint=None,
        checkpoint_every=None):
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

    ``log_dir``: log to TensorBoard (a run directory or a caller's
    ``SummaryWriter``): cost, per-layer max |w| and norm every ``log_every``
    epochs, the cost on ``test=(x_test, y_test)`` when given, weight
    histograms every ``hist_every`` epochs (see :mod:`scratchnet.tensorboard`).

    ``guard`` (default on): the divergence guard, :class:`~scratchnet.guard.Guard`.
    When a cost is non-finite or exceeds ``guard_factor`` × the best cost of
    this call, the parameters (and optimizer state) of the last verified
    epoch are restored and :class:`~scratchnet.DivergenceError` is raised;
    ``on_divergence="backoff"`` halves η instead (at most ``max_backoffs``
    times) and runs the lost epochs again.  ``guard_every`` (16): epochs
    between the guard's reads and snapshots; 16 keeps its cost at 1-4% on
    the article workload where every epoch costs ~8% (README, Reliability).
    ``guard=False`` lets a run explode.

    ``checkpoint``: a path; the training network is saved there (atomically,
    :func:`~scratchnet.save`) every ``checkpoint_every`` epochs (a state the
    guard has verified, when it is on) and after the last epoch.

    Every argument is checked before any epoch runs; a rejected call changes
    nothing.
    """
    if not isinstance(train, TrainingNetwork):
        raise TypeError(f"train: expected a TrainingNetwork (training_network(net, x)), "
                        f"got {type(train).__name__}")
    train._check_open()
    schedule, single = parse_plan(cost, epochs, hyper, "sgd(train, y, cost")
    # The finite-values scan is skipped for the tensor already loaded and unchanged.
    held = train.holds_y(y)
    y = check.matrix("y", y, train.backend, cols=train.net.out_dim, rows=train.n,
                     check_values=not held)
    cost.check(train.net, None if held else y)
    monitors = check_monitors(monitors)
    logger = None
    if log_dir is not None or test is not None or hist_every is not None or log_every != 1:
        logger = TensorBoardLogger(log_dir, train=train, test=test, log_every=log_every,
                                   hist_every=hist_every)
    watch = Guard.build(guard, factor=guard_factor, every=guard_every,
                        on_divergence=on_divergence, max_backoffs=max_backoffs,
                        optimizers=[opt for _, opt in schedule],
                        listeners=[m for m in [logger, *monitors] if m is not None])
    saver = Checkpointer.build(checkpoint, checkpoint_every, watch)
    # The logger first: a chunk is logged (explosion included) before the
    # guard can stop training; then the guard, which restores before the
    # caller's monitors see a chunk; the saver last.
    monitors = [m for m in [logger, watch, *monitors, saver] if m is not None]

    threads = threads_for(train)   # CPU thread count for this call (validates the env)
    train.load_y(y)
    for monitor in monitors:
        monitor.start(train, cost, schedule[0][1] if schedule else None)
    try:
        with epoch_threads(threads):
            costs = [_run(train, cost, n, optimizer, monitors) for n, optimizer in schedule]
        for monitor in monitors:
            complete = getattr(monitor, "complete", None)
            if complete is not None:
                complete(train)
    finally:
        for monitor in monitors:
            monitor.finish(train)
    return costs[0] if single else costs
