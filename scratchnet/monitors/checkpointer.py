"""The checkpoint monitor: ``sgd(..., checkpoint=path, checkpoint_every=k)``.

The file format and ``save``/``load`` are in :mod:`scratchnet.nn.checkpoint`.
"""

from __future__ import annotations

import os

from .. import validation as check
from ..nn.checkpoint import check_path, save, save_snapshot
from .base import Monitor


class Checkpointer(Monitor):
    """The monitor behind ``checkpoint=path, checkpoint_every=k``:
    saves every ``k`` epochs and after the call's last epoch.  With the
    divergence guard on, the periodic saves write the guard's *verified*
    snapshot (a state whose cost was measured good), never a state the next
    epoch might show to be NaN."""

    def __init__(self, path, every, guard=None):
        self.path = check_path(path)
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise ValueError(f"checkpoint: the folder {folder!r} does not exist")
        self.every = None if every is None else check.check_int("checkpoint_every", every, 1)
        self.chunk = self.every   # None: only the save after the last epoch
        self.guard = guard

    @classmethod
    def build(cls, path, every, guard) -> Checkpointer | None:
        if path is None:
            if every is not None:
                raise ValueError("checkpoint_every: given without checkpoint=path")
            return None
        try:
            return cls(path, every, guard)
        except (TypeError, ValueError) as exc:
            msg = str(exc)
            raise type(exc)(msg if not msg.startswith("path:") else "checkpoint" + msg[4:]) \
                from None

    def start(self, train, cost, optimizer) -> None:
        self.last = train.epoch

    def after_chunk(self, train, first_epoch, costs):
        if self.every is None:
            return None
        if self.guard is None:
            if train.epoch - self.last >= self.every:
                save(train, self.path)
                self.last = train.epoch
            return None
        verified = self.guard.verified_state(train)
        if verified is not None and verified[0] - self.last >= self.every:
            epoch, params, state = verified
            save_snapshot(train, self.path, params, epoch, state)
            self.last = epoch
        return None

    def complete(self, train) -> None:
        save(train, self.path)
        self.last = train.epoch
