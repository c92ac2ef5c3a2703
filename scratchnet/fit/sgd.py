"""``sgd``: the series' training call (part 12, with part 15's weight decay).

Every epoch is one full-batch step (the series' "sgd" has no mini-batches):

    forward;  g_L = a_L − y;  backward (δ, ∇W, ∇b for every layer);  update

``sgd`` checks its arguments, builds the monitors its keywords ask for,
and hands the training network's epoch runner to the driver
(``scratchnet/fit/driver.py``).  The host reads the device once per call
(the returned cost) unless a monitor wants per-epoch costs: then the epochs
run in chunks and each chunk's costs are read with one copy.
"""

from __future__ import annotations

import torch

from .. import validation as check
from ..engine import runner_for
from ..engine.threads import threads_for
from ..nn.distributed import agree_on_plan
from ..nn.network import TrainingNetwork
from .common import build_monitors, parse_plan, refuse_unknown
from .driver import Driver


@torch.no_grad()
def sgd(training: TrainingNetwork, y, cost, epochs, hyper=None, *, monitors=(), log_dir=None,
        test=None, log_every=1, hist_every=None, guard=True, guard_factor=1e3,
        guard_every=None, on_divergence="raise", max_backoffs=5, checkpoint=None,
        checkpoint_every=None, progress=False, **unknown):
    """Train ``training`` (a :func:`~scratchnet.training_network`) towards
    targets ``y`` (n, out_dim) on ``cost``.

    ``sgd(training, y, cost, epochs, hyper)``: ``epochs`` steps with ``hyper``
    (``eta``, ``(eta, lam)``, ``(eta, lam, mu)`` or an optimizer such as
    :class:`~scratchnet.SGD` or :class:`~scratchnet.Adam`); returns the cost
    of the last epoch (a float): the cost of its forward pass, before its
    update, as in the series.

    ``sgd(training, y, cost, schedule)``: ``schedule`` is an iterable of
    ``(epochs, hyper)`` pairs run in order; returns a list with one cost per
    pair (eager, unlike the series' lazy ``map``).  An entry of 0 epochs
    returns the cost of the current parameters and changes nothing.

    ``monitors``: :class:`~scratchnet.Monitor` objects that watch the
    per-epoch cost (``scratchnet/monitors/base.py``).

    ``log_dir``: log to TensorBoard (a run directory or a caller's
    ``SummaryWriter``): cost, per-layer max |w| and norm every ``log_every``
    epochs, the cost on ``test=(x_test, y_test)`` when given, weight
    histograms every ``hist_every`` epochs (``scratchnet/monitors/tensorboard.py``).

    ``guard`` (default on): the divergence guard.  When a cost is not
    finite or exceeds ``guard_factor`` × the best cost of this call, the
    parameters (and optimizer state) of the last verified epoch are
    restored and :class:`~scratchnet.DivergenceError` is raised;
    ``on_divergence="backoff"`` halves η instead (at most ``max_backoffs``
    times) and trains the lost epochs again.  ``guard_every``: epochs
    between the guard's reads and snapshots; None (the default) picks 16, or
    more when epochs are tiny (:func:`scratchnet.monitors.guard.automatic_every`),
    so that the guard costs a few percent at most.  ``guard=False`` lets a
    run explode.

    ``checkpoint``: a path; ``training`` is saved there (atomically,
    :func:`~scratchnet.save`) every ``checkpoint_every`` epochs (a state the
    guard has verified, when it is on) and after the last epoch.

    ``progress``: show a progress bar on stderr.

    Every argument is checked before any epoch runs; a rejected call changes
    nothing.  On an exception (Ctrl-C included) ``training.epoch`` equals the
    updates the weights have had.
    """
    refuse_unknown("sgd(training, y, cost", unknown)
    train = training
    if not isinstance(train, TrainingNetwork):
        raise TypeError(f"training: expected a TrainingNetwork (training_network(net, x)), "
                        f"got {type(train).__name__}")
    train._check_open()
    schedule, single = parse_plan(cost, epochs, hyper, "sgd(training, y, cost")
    y = check.matrix("y", y, train.backend, cols=train.net.out_dim, rows=train.n)
    cost.check(train.net, y)
    found = build_monitors(
        schedule=schedule, net=train.net, samples=train.n, train=train, monitors=monitors,
        log_dir=log_dir, test=test, log_every=log_every, hist_every=hist_every, guard=guard,
        guard_factor=guard_factor, guard_every=guard_every, on_divergence=on_divergence,
        max_backoffs=max_backoffs, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
        progress=progress, progress_desc="sgd")
    threads = threads_for(train)   # CPU thread count for this call (validates the env)
    if train.all_reduce is not None:
        agree_on_plan(train.all_reduce, "sgd", cost, schedule)
    train.load_y(y)
    costs = Driver(runner_for(train), cost, schedule, found, threads).run()
    return costs[0] if single else costs
