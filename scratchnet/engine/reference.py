"""The reference epoch runners: the series' training step, launched from Python.

One step is the body of the series' ``sgd`` (part 12), on one batch:

    forward:    a_l = σ(W_l a_{l−1} + b_l 1ᵀ)           for l = 1 … L
    cost:       g_L = n ∇_{a_L} C   (a − y for the quadratic cost)
    backward:   δ_l = g_l ⊙ σ'(z_l),  ∇W_l = δ_l a_{l−1}ᵀ,  ∇b_l = δ_l 1,
                g_{l−1} = W_lᵀ δ_l                       for l = L … 1
    update:     the optimizer, with the 1/n of the mean (``nn/optim.py``)

:class:`FullBatch` makes that step an epoch (the series: the whole data set
is one batch); :class:`MiniBatch` runs it on ⌈N/B⌉ gathered batches per
epoch.  Every other runner must give the same numbers as these two (see
``scratchnet/engine/base.py`` for the contract).

Data parallel (``train.all_reduce`` set, see ``scratchnet/nn/distributed.py``):
the step's cost goes into ``train.cost_sum``, the tail of the gradient
buffer, and one all-reduce between backward and update sums gradients and
cost over the ranks; every rank runs the same collectives whatever monitors
it has, and reads only global costs.
"""

from __future__ import annotations

import numpy as np

from .. import validation as check
from ..nn.network import Network, TrainingNetwork
from .base import EpochRunner


def step(train: TrainingNetwork, cost, optimizer, slot=None) -> None:
    """One training step on ``train``'s batch.  ``cost`` is bound to the
    network (``cost.bind(net)``); when ``slot`` is given, the batch's raw
    cost sum is written there (before the update, as in the series)."""
    train.forward()
    out = train.layers[-1]
    reduce = train.all_reduce
    cost.gradient(train.backend, out.z, out.a, train.y,
                  train.cost_sum if reduce is not None else slot)
    train.backward(cost.fused)
    if reduce is not None:
        reduce(train.reduce_buffer)   # [∇W | ∇b | cost] summed over the ranks
        if slot is not None:
            train.backend.copy_(slot, train.cost_sum)
    optimizer.step(train)


def forward_cost(train: TrainingNetwork, cost, slot) -> None:
    """The cost of the current parameters on ``train``'s batch, into
    ``slot``: a forward pass and the cost, no backward, no update."""
    train.forward()
    out = train.layers[-1]
    reduce = train.all_reduce
    cost.gradient(train.backend, out.z, out.a, train.y,
                  train.cost_sum if reduce is not None else slot)
    if reduce is not None:
        reduce(train.cost_sum)
        train.backend.copy_(slot, train.cost_sum)


class _Slots:
    """One-element device arrays that receive raw cost sums: views of one
    buffer, allocated on first use and grown (never shrunk) when a chunk
    needs more, so a run of equal chunks allocates once."""

    def __init__(self, backend):
        self.backend = backend
        self.buffer = None
        self.views: list = []

    def get(self, k: int) -> list:
        if len(self.views) < k:
            self.release()
            self.buffer = self.backend.zeros((k,))
            self.views = [self.backend.view(self.buffer, i, (1,)) for i in range(k)]
        return self.views[:k]

    def read(self, k: int) -> np.ndarray:
        """The first ``k`` raw sums as float64, one device-to-host copy."""
        return self.backend.to_numpy(self.buffer)[:k].astype(np.float64)

    def release(self) -> None:
        if self.buffer is not None:
            self.backend.release(self.buffer)
        self.buffer, self.views = None, []


class FullBatch(EpochRunner):
    """The series' epoch: one full-batch :func:`step` on ``train``'s whole
    batch (``training_network(net, x)``)."""

    kind = "reference"

    def __init__(self, train: TrainingNetwork):
        super().__init__(train, train.n_global)
        self.backend = train.backend
        self.slots = _Slots(train.backend)

    def run(self, cost, epochs: int, optimizer, record: bool = False) -> None:
        train = self.train
        bound = cost.bind(train.net)
        slots = self.slots.get(epochs if record else 1)
        self.n_samples = train.n_global
        for i in range(epochs):
            if self.stop.requested:
                return
            slot = slots[i] if record else (slots[0] if i == epochs - 1 else None)
            step(train, bound, optimizer, slot)
            train.epoch += 1

    def costs(self, cost, k: int) -> list[float]:
        return [cost.finish(float(s), self.n_samples) for s in self.slots.read(k)]

    def last_cost(self, cost) -> float:
        return cost.finish(self.backend.read_scalar(self.slots.views[0]), self.n_samples)

    def measure(self, cost) -> float:
        train = self.train
        forward_cost(train, cost.bind(train.net), self.slots.get(1)[0])
        return cost.finish(self.backend.read_scalar(self.slots.views[0]), train.n_global)

    def close(self) -> None:
        self.slots.release()


class MiniBatch(EpochRunner):
    """An epoch of ⌈N/B⌉ steps on batches of B samples (the last one holds
    the N mod B left over: nothing is dropped, nothing padded).

    Where things live
    -----------------
    The data is copied to the device once, as (features, N) columns.  Every
    step *gathers* its batch's columns into a training network's x and y
    buffers (``backend.gather_columns``) through an index array holding the
    epoch's permutation; the host shuffles N integers once per epoch and
    uploads them into that same array.  Epoch e's permutation comes from a
    generator seeded with (seed, rank, e): every device sees the same
    batches, an epoch trained again after a rewind sees the same batches,
    and a run resumed from a checkpoint at epoch e goes on exactly as if it
    had not stopped.  The short last
    batch has a training network of its own that shares the parameters and
    the optimizer state (``state`` is the same dict), so momentum and Adam
    see one sequence of steps; ``train`` (the one monitors watch) is the
    B-sized one.  Nothing is allocated after setup.

    Data parallel (``reducer`` given, see ``scratchnet/nn/distributed.py``):
    rank r holds n_r samples; step k of an epoch sums, over the ranks, the
    gradients of each rank's k-th batch (a rank whose shard has run out adds
    zeros) and updates with n = the sizes of those batches summed, so the
    step is the single-process step on the ranks' k-th batches concatenated.
    ``shard_sizes`` lists every rank's n_r (every rank knows them all).

    Costs: each step writes its batch's raw cost sum into a slot; an
    epoch's cost is the sum of its slots / N, the sample-weighted mean over
    its batches, each measured before that batch's update.
    """

    kind = "reference"

    def __init__(self, net: Network, x, y, batch_size: int, *, shuffle: bool = True,
                 seed: int | None = None, reducer=None, shard_sizes=None, rank: int = 0,
                 state: dict | None = None, epoch: int = 0):
        be = self.backend = net.backend
        self.shared_state = state is not None   # a resumed network's: not ours to free
        self.x = self.y = self.index = None
        self.nets: list[TrainingNetwork] = []
        self.slots = _Slots(be)
        self.empty = None
        try:
            self.x = check.to_columns(x, be)
            self.y = check.to_columns(y, be)
            n = int(self.x.shape[1])
            sizes = _batch_sizes(n, batch_size)
            shards = [n] if shard_sizes is None else list(shard_sizes)
            per_rank = [_batch_sizes(m, batch_size) for m in shards]
            n_steps = max(len(s) for s in per_rank)
            #: n of every step: the batch sizes of all ranks at that step, summed
            self.step_sizes = [sum(s[k] if k < len(s) else 0 for s in per_rank)
                               for k in range(n_steps)]
            for size in sorted(set(sizes), reverse=True):   # one network per batch size
                self.nets.append(TrainingNetwork(net, np.zeros((size, net.in_dim))))
            for tn in self.nets:                             # one optimizer state
                tn.state = self.nets[0].state if state is None else state
            for tn in self.nets:
                tn.all_reduce = reducer
            by_size = {tn.n: tn for tn in self.nets}
            self.index = be.index_buffer(n)
            self.steps = [(by_size[size], be.view(self.index, k * batch_size, (size,)))
                          for k, size in enumerate(sizes)]
            # Steps where this rank's shard has run out: a zero gradient.
            self.steps += [(None, None)] * (n_steps - len(sizes))
            if len(self.steps) > len(sizes):
                self.empty = be.zeros((net.n_params + 1,))
            self.order = np.arange(n, dtype=np.int64)
            self.identity = np.arange(n, dtype=np.int64)
            be.load_index(self.index, self.order)
            self.shuffle = shuffle
            self.seed = [int(np.random.SeedSequence().entropy) if seed is None else seed, rank]
            self.nets[0].epoch = epoch
        except BaseException:
            self.close()
            raise
        super().__init__(self.nets[0], sum(shards))

    def run(self, cost, epochs: int, optimizer, record: bool = False) -> None:
        bound = cost.bind(self.train.net)
        per_epoch = len(self.steps)
        slots = self.slots.get(per_epoch * (epochs if record else 1))
        for epoch in range(epochs):
            if self.stop.requested:
                return
            if self.shuffle:
                self.permute()
                self.backend.load_index(self.index, self.order)
            wanted = record or epoch == epochs - 1
            base = per_epoch * (epoch if record else 0)
            for k, (tn, index) in enumerate(self.steps):
                slot = slots[base + k] if wanted else None
                if tn is None:
                    self._empty_step(optimizer, k, slot)
                    continue
                self._gather(tn, index)
                tn.n_global = self.step_sizes[k]
                step(tn, bound, optimizer, slot)
            self.train.epoch += 1

    def permute(self) -> None:
        """``order`` := the permutation of epoch ``train.epoch`` (host only),
        from a generator seeded with (seed, rank, epoch)."""
        np.copyto(self.order, self.identity)
        np.random.default_rng([*self.seed, self.train.epoch]).shuffle(self.order)

    def _gather(self, tn: TrainingNetwork, index) -> None:
        self.backend.gather_columns(tn.x, self.x, index)
        self.backend.gather_columns(tn.y, self.y, index)

    def _empty_step(self, optimizer, k: int, slot) -> None:
        """A step in which this rank has no batch: it adds zero gradients
        and a zero cost to the others' sums, and updates like every rank."""
        tn = self.train
        be = self.backend
        be.copy_(tn.reduce_buffer, self.empty)
        tn.all_reduce(tn.reduce_buffer)
        if slot is not None:
            be.copy_(slot, tn.cost_sum)
        tn.n_global = self.step_sizes[k]
        optimizer.step(tn)

    def costs(self, cost, k: int) -> list[float]:
        raw = self.slots.read(k * len(self.steps)).reshape(k, len(self.steps)).sum(axis=1)
        return [cost.finish(float(s), self.n_samples) for s in raw]

    def last_cost(self, cost) -> float:
        return cost.finish(float(self.slots.read(len(self.steps)).sum()), self.n_samples)

    def measure(self, cost) -> float:
        """One pass over the batches in the current order, no update."""
        bound = cost.bind(self.train.net)
        slots = self.slots.get(len(self.steps))
        for k, (tn, index) in enumerate(self.steps):
            if tn is None:
                tn = self.train
                self.backend.copy_(tn.reduce_buffer, self.empty)
                tn.all_reduce(tn.cost_sum)
                self.backend.copy_(slots[k], tn.cost_sum)
                continue
            self._gather(tn, index)
            forward_cost(tn, bound, slots[k])
        return self.last_cost(cost)

    def close(self) -> None:
        for tn in self.nets:
            if self.shared_state:
                tn.state = {}
            tn.close()
        for name in ("x", "y", "index", "empty"):
            if getattr(self, name) is not None:
                self.backend.release(getattr(self, name))
                setattr(self, name, None)
        self.slots.release()
        self.nets = []


def _batch_sizes(n: int, batch_size: int) -> list[int]:
    """⌊n/B⌋ batches of B, and one of n mod B when B does not divide n."""
    full, rest = divmod(n, batch_size)
    return [batch_size] * full + ([rest] if rest else [])
