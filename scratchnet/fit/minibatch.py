"""``train``: mini-batch training, ``train(net, x, y, cost, epochs, hyper, batch_size=B)``.

The series trains on the whole data set as one batch (its ``sgd``); Deep
Diamond's ``train-shuffle!`` adds mini-batches.  An epoch here is one pass
over the N samples in ⌈N/B⌉ steps of B samples, each step exactly the
series' one with n = the batch's size in the 1/n of the update
(``scratchnet/engine/reference.py``, :class:`MiniBatch`).  Everything else
(monitors, TensorBoard, the guard, checkpoints, progress) is the driver's,
as for ``sgd``: a logged step is an epoch, and the costs are the
sample-weighted epoch costs.
"""

from __future__ import annotations

import torch

from .. import validation as check
from ..engine import minibatch_runner
from ..engine.threads import get_num_threads, threads_for
from ..nn.distributed import data_parallel
from ..nn.network import Network, TrainingNetwork
from .common import build_monitors, parse_plan, refuse_unknown
from .driver import Driver


@torch.no_grad()
def train(net: Network, x, y, cost, epochs, hyper=None, *, batch_size: int = 32,
          shuffle: bool = True, seed: int | None = None, distributed=False, monitors=(),
          log_dir=None, test=None, log_every=1, hist_every=None, guard=True, guard_factor=1e3,
          guard_every=None, on_divergence="raise", max_backoffs=5, checkpoint=None,
          checkpoint_every=None, progress=False, **unknown):
    """Train ``net`` on samples ``x`` (N, in_dim) and targets ``y``
    (N, out_dim), rows are samples, in mini-batches of ``batch_size``.

    ``train(net, x, y, cost, epochs, hyper, batch_size=B)``: ``epochs``
    passes over the data with ``hyper`` (``eta``, ``(eta, lam)``,
    ``(eta, lam, mu)`` or an optimizer such as :class:`~scratchnet.Adam`);
    returns the last epoch's cost, the sample-weighted mean of its batches'
    costs (each measured before its batch's update, as in ``sgd``).
    ``train(net, x, y, cost, schedule, batch_size=B)``: ``schedule`` is an
    iterable of ``(epochs, hyper)`` pairs; returns one cost per pair.  The
    optimizer state (velocity, Adam moments) lives for the whole call.

    ``shuffle``: reshuffle the samples every epoch, epoch e with a
    generator seeded by (``seed``, rank, e): the same seed gives the same
    batches on every device and after a resume; ``shuffle=False`` keeps the
    data's order.  The last batch holds the N mod B remaining samples:
    nothing is dropped.

    ``net`` may also be a :class:`~scratchnet.TrainingNetwork` (typically
    ``load_training(checkpoint, x)``): training continues from its epoch
    count with its optimizer state (velocity, Adam moments), and with the
    same ``seed`` a resumed run equals one that never stopped.

    ``distributed``: ``True`` (the default process group) or a
    ``torch.distributed`` group: data-parallel training, every rank passing
    its own shard of the samples and the same everything else; every step
    sums the ranks' gradients, so it equals one process training on the
    ranks' k-th batches concatenated (``scratchnet/nn/distributed.py``).

    ``monitors``, ``log_dir``, ``test``, ``log_every``, ``hist_every``,
    ``guard``, ``guard_factor``, ``guard_every``, ``on_divergence``,
    ``max_backoffs``, ``checkpoint``, ``checkpoint_every`` and ``progress``
    mean what they mean for :func:`~scratchnet.sgd`, with epochs as the
    steps; monitors see the B-sized training network, and a checkpoint
    resumes with :func:`~scratchnet.load_training`.

    Every argument is checked before anything is allocated; a rejected call
    changes nothing.  Device memory is released when the call returns.
    """
    refuse_unknown("train(net, x, y, cost", unknown)
    resumed = None
    if isinstance(net, TrainingNetwork):   # e.g. load_training(checkpoint, x)
        resumed, net = net, net.net
        resumed._check_open()
    if not isinstance(net, Network):
        raise TypeError(f"net: expected a scratchnet Network (inference_network(...)) or a "
                        f"TrainingNetwork to resume, got {type(net).__name__}")
    net._check_open()
    schedule, single = parse_plan(cost, epochs, hyper, "train(net, x, y, cost")
    x = check.matrix("x", x, net.backend, cols=net.in_dim)
    y = check.matrix("y", y, net.backend, cols=net.out_dim, rows=int(x.shape[0]))
    cost.check(net, y)
    n = int(x.shape[0])
    batch_size = check.check_int("batch_size", batch_size, 1)
    if batch_size > n:
        raise ValueError(f"batch_size: expected at most the number of samples ({n}), "
                         f"got {batch_size}")
    if not isinstance(shuffle, bool):
        raise TypeError(f"shuffle: expected True or False, got {shuffle!r}")
    if seed is not None:
        check.check_int("seed", seed, 0)
    found = build_monitors(
        schedule=schedule, net=net, samples=n, monitors=monitors, log_dir=log_dir, test=test,
        log_every=log_every, hist_every=hist_every, guard=guard, guard_factor=guard_factor,
        guard_every=guard_every, on_divergence=on_divergence, max_backoffs=max_backoffs,
        checkpoint=checkpoint, checkpoint_every=checkpoint_every, progress=progress,
        progress_desc="train")
    get_num_threads()   # validates SCRATCHNET_NUM_THREADS before anything is allocated
    # None in one process; else every rank's architecture and plan agree
    parallel = data_parallel(net, n, distributed,
                             plan=("train", cost, schedule, batch_size, shuffle, seed))
    with minibatch_runner(net, x, y, batch_size, shuffle=shuffle, seed=seed, parallel=parallel,
                          resumed=resumed) as runner:
        try:
            costs = Driver(runner, cost, schedule, found, threads_for(runner.train)).run()
        finally:
            if resumed is not None:
                resumed.epoch = runner.train.epoch
    return costs[0] if single else costs
