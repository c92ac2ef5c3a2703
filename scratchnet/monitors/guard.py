"""The divergence guard: training that cannot silently blow up.

The series' own experiment (part 15) shows the failure users meet first: at
η = 0.3 the cost climbs past a million, the weights fill with NaN, and the
network cannot recover.  The guard is a monitor (``scratchnet/monitors/base.py``)
that watches the cost ``sgd`` already computes and stops (or backs off)
before such a state is all that is left.

What a cost certifies
---------------------
Let θ_e be the parameters after e updates.  Epoch e runs forward on θ_e,
records C(θ_e), then updates θ_e → θ_{e+1}.  So a cost read for epoch e
speaks about θ_e, the state *before* update e, and nothing yet about the
θ_{e+1} the network holds afterwards.  A snapshot of θ taken at the end of a
chunk (epoch s = train.epoch) is therefore *pending*: it becomes *verified*
only when the next chunk reports C(θ_s).  The guard keeps two snapshot slots
(double buffering): the verified one it would restore, and the pending one.
When C(θ_s) is good the roles swap (no copy); when it is bad, the verified
slot is restored.

A cost is bad when it is not finite or when

    C(θ_e) > guard_factor · max(best, ε²)

where ``best`` is the lowest cost seen in this ``sgd`` call and ε the
dtype's machine epsilon (a cost at the float noise floor moving by rounding
is not an explosion).

The last update of a schedule entry is not followed by a forward pass, so
at the end of each entry the guard also checks Σθ² is finite (one reduction
of the parameters and one read): NaN weights are never handed back.

``guard_every`` is the number of epochs between reads and snapshots: every
epoch's cost is still checked, in chunks of that many epochs.  Each chunk
costs the host a read, a Python check and a snapshot, a few µs whatever
the network: against an epoch of a few µs (a small network on the native
runner) that is everything.  So the default, ``None``, picks 16 epochs, or
the smallest power of two above it whose epochs hold :data:`AUTO_WORK`
multiply-adds (:func:`automatic_every`): per chunk the guard then costs a
few percent of the training at most (docs/reliability.md measures it).

Snapshots are ``backend.copy_`` of ``net.params`` (one flat array) and of
every optimizer state buffer in ``train.state`` into buffers the training
network owns (:meth:`TrainingNetwork.buffer`), allocated once per training
network: the guard allocates nothing per epoch.

A snapshot also records ``best`` as it was when the snapshot was taken, so
a restore puts the guard's own bookkeeping back too: the costs of a
discarded attempt never judge the states before it.

On divergence, ``train.epoch`` is moved back to the restored state's epoch
(it counts the updates that produced the parameters the network holds), and
then either :class:`DivergenceError` is raised (``on_divergence="raise"``) or
the guard answers the driver with a :class:`~scratchnet.monitors.base.Rewind`
that halves η (``"backoff"``, at most ``max_backoffs`` times per call): the
driver reruns the lost epochs, each in the schedule entry it belongs to,
with η halved from the entry that diverged on, and tells every monitor
(``eta_changed``; the TensorBoard monitor logs ``train/eta``).  Each backoff
issues a :class:`DivergenceWarning`.
"""

from __future__ import annotations

import math
import numbers
import warnings

import torch

from .. import validation as check
from .base import Monitor, Rewind

ON_DIVERGENCE = ("raise", "backoff")

#: Multiply-adds of training the automatic ``guard_every`` puts between two
#: reads: a millisecond or two of one CPU core.
AUTO_WORK = 2**25


def automatic_every(net, samples: int) -> int:
    """The default ``guard_every`` for ``net`` trained on ``samples`` per
    epoch: 16, doubled while 16·2ᵏ epochs hold fewer than :data:`AUTO_WORK`
    multiply-adds (an epoch is ~3 products per layer: forward, ∇W, ∇a)."""
    per_epoch = 3 * samples * sum(layer.in_dim * layer.out_dim for layer in net.layers)
    every = 16
    while every * per_epoch < AUTO_WORK:
        every *= 2
    return every


class DivergenceError(FloatingPointError):
    """Training diverged; the network holds the restored, verified state.

    Attributes: ``epoch`` and ``cost`` where divergence was seen (the cost
    of that epoch's forward pass, possibly NaN or inf), ``restored_epoch``
    and ``restored_cost`` of the state now in the network (``train.epoch ==
    restored_epoch``), ``eta`` the learning rate in use, ``backoffs`` how many
    backoffs this call made before giving up.
    """

    def __init__(self, message: str, *, epoch: int, cost: float, restored_epoch: int,
                 restored_cost: float, eta: float | None = None, backoffs: int = 0):
        super().__init__(message)
        self.epoch = epoch
        self.cost = cost
        self.restored_epoch = restored_epoch
        self.restored_cost = restored_cost
        self.eta = eta
        self.backoffs = backoffs


class DivergenceWarning(RuntimeWarning):
    """Issued by ``on_divergence="backoff"`` each time η is halved."""


class _Snapshot:
    """One slot: which buffers, and what they hold."""

    def __init__(self, index: int):
        self.index = index
        self.epoch: int | None = None
        self.cost: float | None = None   # None while pending
        self.best = math.inf             # the guard's best cost when taken
        self.state_keys: tuple = ()


def _eta_of(optimizer):
    eta = getattr(optimizer, "eta", None)
    return eta if isinstance(eta, numbers.Real) else None


class Guard(Monitor):
    """The divergence guard monitor; :func:`~scratchnet.sgd` and
    :func:`~scratchnet.train` build one from their ``guard*`` keywords
    (see the module docstring)."""

    def __init__(self, *, factor=1e3, every: int = 16, on_divergence="raise", max_backoffs=5):
        if isinstance(factor, bool) or not isinstance(factor, numbers.Real):
            raise TypeError(f"guard_factor: expected a number > 1, got {factor!r}")
        if math.isnan(factor) or factor <= 1:
            raise ValueError(f"guard_factor: expected a number > 1 (inf: only non-finite "
                             f"costs count), got {factor}")
        self.factor = float(factor)
        self.chunk = check.check_int("guard_every", every, 1)
        if not isinstance(on_divergence, str) or on_divergence not in ON_DIVERGENCE:
            raise ValueError(f"on_divergence: expected one of {', '.join(map(repr, ON_DIVERGENCE))}"
                             f", got {on_divergence!r}")
        self.on_divergence = on_divergence
        self.max_backoffs = check.check_int("max_backoffs", max_backoffs, 0)
        self.verified: _Snapshot | None = None

    @classmethod
    def build(cls, guard, *, factor, every, on_divergence, max_backoffs,
              optimizers, net, samples: int) -> Guard | None:
        """Validate the guard keywords; None when ``guard`` is False.
        ``every=None`` is :func:`automatic_every` for ``net`` on ``samples``
        samples per epoch."""
        if not isinstance(guard, bool):
            raise TypeError(f"guard: expected True or False, got {guard!r}")
        if every is None:
            every = automatic_every(net, samples)
        made = cls(factor=factor, every=every, on_divergence=on_divergence,
                   max_backoffs=max_backoffs)
        if made.on_divergence == "backoff":
            for i, opt in enumerate(optimizers):
                if not callable(getattr(opt, "with_eta", None)) or _eta_of(opt) is None:
                    where = "hyper" if len(optimizers) == 1 else f"schedule[{i}]"
                    raise TypeError(f"{where}: on_divergence='backoff' needs an optimizer with "
                                    f"an eta and a with_eta(eta) method, got {opt!r}")
        return made if guard else None

    def verified_state(self, train):
        """The last state whose cost was measured good, as ``(epoch,
        params, state)`` device buffers (what a checkpoint may safely
        write), or None before the first verification."""
        slot = self.verified
        if slot is None:
            return None
        params, state = self._slot_buffers(train, slot, slot.state_keys)
        return slot.epoch, params, state

    # ------------------------------------------------------------ monitor
    def start(self, train, cost, optimizer) -> None:
        self.eta = _eta_of(optimizer)
        self.best = math.inf
        self.floor = torch.finfo(train.backend.dtype).eps ** 2
        self.backoffs = 0
        self.entry_end = None
        self.slots = [_Snapshot(0), _Snapshot(1)]
        self.verified: _Snapshot | None = None
        self.pending: _Snapshot | None = None
        self._norm = train.buffer("guard/norm", (1,))
        self._params_slots = [train.buffer(f"guard/{i}/params", (train.net.n_params,))
                              for i in (0, 1)]
        self._snapshot(train)   # the state this call starts from (pending)

    def begin(self, train, optimizer, epochs):
        """A schedule entry (re)starts: remember where it ends."""
        self.entry_end = train.epoch + epochs
        self.eta = _eta_of(optimizer)
        return None

    def eta_changed(self, train, epoch, eta) -> None:
        self.eta = eta

    def after_chunk(self, train, first_epoch, costs):
        lowest, total = min(costs), sum(costs)
        # Every epoch passes when the highest cost is within guard_factor of
        # the lowest best any epoch of the chunk can be judged against (and
        # the sum is finite, so no cost is NaN or inf): one pass in C over a
        # chunk of hundreds of epochs, instead of a Python loop.
        if math.isfinite(total) and max(costs) <= self.factor * max(min(self.best, lowest),
                                                                    self.floor):
            self.best = min(self.best, lowest)
            pending = self.pending
            if pending is not None and 0 <= pending.epoch - first_epoch < len(costs):
                pending.cost = costs[pending.epoch - first_epoch]   # verified: swap roles
                self.verified, self.pending = pending, None
        else:
            for i, c in enumerate(costs):
                epoch = first_epoch + i
                if not math.isfinite(c) or c > self.factor * max(self.best, self.floor):
                    return self._diverged(train, epoch, c)
                self.best = min(self.best, c)
                if self.pending is not None and self.pending.epoch == epoch:
                    self.pending.cost = c                       # verified: swap roles
                    self.verified, self.pending = self.pending, None
        at_end = train.epoch == self.entry_end
        if at_end and not self._params_finite(train):
            return self._diverged(train, train.epoch, math.nan)
        # Also at the end of an entry: a backoff in the next entry then
        # reruns none of this one.
        if train.epoch - self.last_snapshot >= self.chunk or (
                at_end and train.epoch > self.last_snapshot):
            self._snapshot(train)
        return None

    # ---------------------------------------------------------- internals
    def _slot_buffers(self, train, slot: _Snapshot, keys):
        """The device buffers of ``slot``: params and one per state key."""
        params = self._params_slots[slot.index]
        if not keys:
            return params, {}
        state = {k: train.buffer(f"guard/{slot.index}/state/{k}", tuple(train.state[k].shape))
                 for k in keys}
        return params, state

    def _snapshot(self, train) -> None:
        """Copy θ (and optimizer state) into the slot not holding the
        verified state; it becomes the pending snapshot."""
        slot = self.slots[1] if self.verified is self.slots[0] else self.slots[0]
        be = train.backend
        keys = tuple(train.state)
        params, state = self._slot_buffers(train, slot, keys)
        be.copy_(params, train.net.params)
        for k in keys:
            be.copy_(state[k], train.state[k])
        slot.epoch, slot.cost, slot.state_keys, slot.best = train.epoch, None, keys, self.best
        self.pending = slot
        self.last_snapshot = train.epoch

    def _restore(self, train, slot: _Snapshot) -> None:
        """Put the network, its optimizer state, its epoch count and the
        guard's own best cost back to ``slot``."""
        be = train.backend
        params, state = self._slot_buffers(train, slot, slot.state_keys)
        be.copy_(train.net.params, params)
        for k, buf in train.state.items():
            if k in state:
                be.copy_(buf, state[k])
            else:   # state that appeared after the snapshot starts afresh
                zeros = be.zeros(tuple(buf.shape))
                be.copy_(buf, zeros)
                be.release(zeros)
        train.epoch = slot.epoch
        self.last_snapshot = slot.epoch
        self.best = slot.best if slot.cost is None else min(slot.best, slot.cost)

    def _params_finite(self, train) -> bool:
        """Σθ² on the device, one read: finite iff every weight is (a sum
        of squares overflowing float is a divergence too)."""
        train.backend.sum_squares(train.net.params, self._norm)
        return math.isfinite(train.backend.read_scalar(self._norm))

    def _diverged(self, train, epoch: int, cost: float):
        slot = self.verified
        what = (f"cost {cost:.6g} at epoch {epoch}" if not math.isnan(cost) or epoch != train.epoch
                else f"non-finite parameters after epoch {epoch}")
        if slot is None:
            # The first cost of the call is already bad: the only state to
            # go back to is the one the call started from.
            start = self.slots[0] if self.pending is None else self.pending
            self._restore(train, start)
            self.pending = None
            raise DivergenceError(
                f"the parameters this call started from (epoch {start.epoch}) already "
                f"give cost {cost:.6g}; restored them as they were.  Lowering eta cannot help: "
                f"reinitialise the network or load a checkpoint",
                epoch=epoch, cost=cost, restored_epoch=start.epoch, restored_cost=cost,
                eta=self.eta, backoffs=self.backoffs)
        why = ("is not finite" if not math.isfinite(cost) else
               f"exceeds guard_factor {self.factor:g} x the best cost {self.best:.6g} of this "
               f"call")
        self._restore(train, slot)
        self.pending = None
        if self.on_divergence == "backoff" and self.backoffs < self.max_backoffs:
            self.backoffs += 1
            warnings.warn(
                f"{what} {why}; restored epoch {slot.epoch} (cost {slot.cost:.6g}) and "
                f"halved eta {self.eta:g} -> {self.eta / 2:g} "
                f"(backoff {self.backoffs} of {self.max_backoffs})",
                DivergenceWarning, stacklevel=2)
            return Rewind(slot.epoch, 0.5)
        tried = (f" after {self.backoffs} backoff(s) (max_backoffs={self.max_backoffs})"
                 if self.on_divergence == "backoff" else "")
        raise DivergenceError(
            f"diverged: {what} {why}{tried}.  Restored the parameters of epoch "
            f"{slot.epoch} (cost {slot.cost:.6g}); the network is usable.  Lower eta, pass "
            f"on_divergence='backoff', or guard=False to watch it explode",
            epoch=epoch, cost=cost, restored_epoch=slot.epoch, restored_cost=slot.cost,
            eta=self.eta, backoffs=self.backoffs)
