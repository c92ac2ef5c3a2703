"""Mini-batch training: ``train(net, x, y, cost, epochs, hyper, batch_size=…)``.

The series trains on the whole data set as one batch (its ``sgd``); Deep
Diamond's ``train-shuffle!`` adds mini-batches.  An epoch here is one pass
over the N samples in ⌈N/B⌉ steps of B samples (B = ``batch_size``), each
step exactly the series' one: forward, δ, backward, update, with n = the
batch's size in the 1/n of the update.

Where things live
-----------------
The data is copied to the device once, as (features, N) columns.  Every step
*gathers* its batch's columns into the training network's preallocated x
and y buffers on the device (``backend.gather_columns``) through an index
array that holds the epoch's permutation; the host only shuffles N integers
in place once per epoch (a seeded ``numpy.random.Generator``, so every
device sees the same batches) and uploads them into that same index array.
Nothing is allocated after setup: the buffers belong to the training
networks, the index array and its per-batch views are made once.

The last, short batch
---------------------
When B does not divide N, the remaining r = N mod B samples are a batch of
their own: it is not dropped, and it is not padded.  A second training
network sized for r shares the parameters (both are views of ``net.params``)
and the optimizer state (``state`` is the same dict), so momentum and Adam
see one sequence of steps.  It costs r columns of buffers per layer; a
masked B-wide step would cost the same memory and waste B − r columns of
compute.

Costs
-----
Each step writes the raw cost sum of its batch into a device slot; the
epoch's cost, read with one copy, is Σ over the batches / N: the mean over
batches weighted by their sizes, i.e. the cost of the epoch's samples under
the weights each saw.  Only the epochs whose cost is wanted compute it.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import validation as check
from ..engine.threads import epoch_threads, get_num_threads, threads_for
from ..nn.network import Network, TrainingNetwork
from .sgd import after_chunk, check_monitors, parse_plan


class _Batches:
    """The device side of mini-batch training for one ``train`` call: the
    data, the index array, the training networks and the cost slots."""

    def __init__(self, net: Network, x, y, batch_size: int):
        be = self.backend = net.backend
        self.x = self.y = self.index = self.slots_buffer = None
        self.nets: list[TrainingNetwork] = []
        try:
            self.x = check.to_columns(x, be)
            self.y = check.to_columns(y, be)
            n = self.n = int(self.x.shape[1])
            full, rest = divmod(n, batch_size)
            self.sizes = [batch_size] * full + ([rest] if rest else [])
            shapes = sorted(set(self.sizes), reverse=True)
            for size in shapes:   # one training network per batch size
                self.nets.append(TrainingNetwork(net, np.zeros((size, net.in_dim))))
            for other in self.nets[1:]:
                other.state = self.nets[0].state   # one optimizer state
            self.main = self.nets[0]
            by_size = {tn.n: tn for tn in self.nets}
            self.index = be.index_buffer(n)
            self.steps = []
            for k, size in enumerate(self.sizes):
                self.steps.append((by_size[size], be.view(self.index, k * batch_size, (size,))))
            self.order = np.arange(n, dtype=np.int64)
            be.load_index(self.index, self.order)
            self.slots = []
        except BaseException:
            self.close()
            raise

    def cost_slots(self, epochs: int) -> list:
        """``epochs`` × batches one-element slots, views of one buffer that is
        allocated once (grown if a chunk ever needs more)."""
        k = epochs * len(self.sizes)
        if len(self.slots) < k:
            if self.slots_buffer is not None:
                self.backend.release(self.slots_buffer)
            self.slots_buffer = self.backend.zeros((k,))
            self.slots = [self.backend.view(self.slots_buffer, i, (1,)) for i in range(k)]
        return self.slots[:k]

    def read_costs(self, cost, epochs: int) -> list[float]:
        """Per-epoch costs from the slots, with one device-to-host copy; the
        batch sums are added on the host in float64."""
        raw = self.backend.to_numpy(self.slots_buffer)[:epochs * len(self.sizes)]
        sums = raw.astype(np.float64).reshape(epochs, len(self.sizes)).sum(axis=1)
        return [cost.finish(float(s), self.n) for s in sums]

    def run(self, cost, epochs: int, optimizer, rng, slots=None) -> None:
        """``epochs`` passes over the data; with ``slots``, every batch's raw
        cost goes into its slot (``len(slots) == epochs × batches``).  With 0
        epochs: one pass that only measures the cost (no update)."""
        be = self.backend
        bound = cost.bind(self.main.net)
        measure_only = epochs == 0
        for epoch in range(max(epochs, 1)):
            if rng is not None and not measure_only:
                rng.shuffle(self.order)           # in place: no allocation
                be.load_index(self.index, self.order)
            for k, (tn, index) in enumerate(self.steps):
                be.gather_columns(tn.x, self.x, index)
                be.gather_columns(tn.y, self.y, index)
                tn.forward()
                out = tn.layers[-1]
                slot = None if slots is None else slots[epoch * len(self.steps) + k]
                bound.gradient(be, out.z, out.a, tn.y, slot)
                if measure_only:
                    continue
                tn.backward(bound.fused)
                optimizer.step(tn)
            if not measure_only:
                for tn in self.nets:
                    tn.epoch += 1

    def close(self) -> None:
        for tn in self.nets:
            tn.close()
        for name in ("x", "y", "index", "slots_buffer"):
            if getattr(self, name) is not None:
                self.backend.release(getattr(self, name))
                setattr(self, name, None)
        self.nets, self.slots = [], []


def _run(batches: _Batches, cost, epochs: int, optimizer, rng, monitors) -> float:
    """One (epochs, optimizer) entry; the cost of its last epoch."""
    main = batches.main
    optimizer.prepare(main)
    if not monitors or epochs == 0:
        if epochs > 1:
            batches.run(cost, epochs - 1, optimizer, rng)
        batches.run(cost, min(epochs, 1), optimizer, rng, batches.cost_slots(1))
        return batches.read_costs(cost, 1)[0]
    chunk = min(m.chunk for m in monitors)
    done, last = 0, float("nan")
    while done < epochs:
        k = min(chunk, epochs - done)
        first = main.epoch
        batches.run(cost, k, optimizer, rng, batches.cost_slots(k))
        costs = batches.read_costs(cost, k)
        last = costs[-1]
        done += k
        optimizer = after_chunk(monitors, main, first, costs, optimizer)
    return last


@torch.no_grad()
def train(net: Network, x, y, cost, epochs, hyper=None, *, batch_size: int = 32,
          shuffle: bool = True, seed: int | None = None, monitors=()):
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

    ``shuffle``: reshuffle the samples every epoch with a generator seeded by
    ``seed`` (the same seed gives the same batches on every device);
    ``shuffle=False`` keeps the data's order.  The last batch holds the
    N mod B remaining samples: nothing is dropped.  ``monitors`` are the
    same objects ``sgd`` takes (they see the B-sized training network).  On
    the CPU the thread count follows ``sgd``'s rule
    (:mod:`scratchnet.threads`), judged on the B-sized products.

    Every argument is checked before anything is allocated; a rejected call
    changes nothing.  Device memory is released when the call returns.
    """
    if not isinstance(net, Network):
        raise TypeError(f"net: expected a scratchnet Network (inference_network(...)), "
                        f"got {type(net).__name__}")
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
    monitors = check_monitors(monitors)

    get_num_threads()   # validates SCRATCHNET_NUM_THREADS before anything is allocated

    rng = np.random.default_rng(seed) if shuffle else None
    batches = _Batches(net, x, y, batch_size)
    try:
        for monitor in monitors:
            monitor.start(batches.main, cost, schedule[0][1] if schedule else None)
        try:
            # sgd's CPU thread rule, judged on the batch-sized products
            with epoch_threads(threads_for(batches.main)):
                costs = [_run(batches, cost, e, opt, rng, monitors) for e, opt in schedule]
        finally:
            for monitor in monitors:
                monitor.finish(batches.main)
    finally:
        batches.close()
    return costs[0] if single else costs
