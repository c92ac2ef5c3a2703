"""What ``sgd`` and ``train`` share: checking the plan, building the
monitors from keywords, and errors that say where a setting goes here."""

from __future__ import annotations

import math
import numbers

from .. import validation as check
from ..monitors.base import check_monitors
from ..monitors.checkpointer import Checkpointer
from ..monitors.guard import Guard
from ..monitors.progress import Progress
from ..monitors.tensorboard import TensorBoardLogger
from ..nn.costs import Cost
from ..nn.optim import as_optimizer

#: Keywords users bring from PyTorch or Keras, and where the setting goes.
HINTS = {
    "lr": "the learning rate is eta, the first entry of hyper: "
          "{call}, epochs, (eta, lam, mu)) or hyper=scratchnet.SGD(eta) / scratchnet.Adam(eta)",
    "learning_rate": "the learning rate is eta, the first entry of hyper: "
                     "{call}, epochs, (eta, lam, mu)) or hyper=scratchnet.SGD(eta)",
    "weight_decay": "L2 weight decay is lam, the second entry of hyper: "
                    "{call}, epochs, (eta, lam)) or hyper=scratchnet.SGD(eta, lam=...)",
    "momentum": "momentum is mu, the third entry of hyper: "
                "{call}, epochs, (eta, lam, mu)) or hyper=scratchnet.SGD(eta, mu=0.9)",
    "nesterov": "Nesterov momentum is an optimizer: hyper=scratchnet.SGD(eta, mu=0.9, "
                "nesterov=True)",
    "optimizer": "the optimizer is hyper: {call}, epochs, scratchnet.Adam(0.01))",
    "loss": "the cost is the third argument: {call}, epochs, hyper) with cost "
            "scratchnet.quadratic_cost or scratchnet.cross_entropy",
    "num_epochs": "epochs is the fourth argument: {call}, epochs, hyper)",
    "callbacks": "monitors=[...] takes scratchnet.Monitor objects",
    "verbose": "progress=True shows a progress bar",
    "validation_data": "test=(x_test, y_test) logs the test cost (with log_dir=)",
    "tensorboard": "log_dir='runs/name' logs to TensorBoard",
}


def refuse_unknown(call: str, unknown: dict) -> None:
    """A ``TypeError`` for the first keyword ``call`` does not take, saying
    where the setting goes when it is one users bring from elsewhere."""
    if not unknown:
        return
    name = next(iter(unknown))
    front = call.split("(")[0]
    if front == "sgd" and name in ("batch_size", "shuffle", "seed"):
        hint = ("sgd trains on the full batch, as the series does; for mini-batches call "
                "scratchnet.train(net, x, y, cost, epochs, hyper, batch_size=B)")
    else:
        hint = HINTS.get(name, "").format(call=call)
    raise TypeError(f"{front}() got an unexpected keyword argument {name!r}"
                    + (f": {hint}" if hint else ""))


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


def build_monitors(*, schedule, net, samples, train=None, monitors=(), log_dir=None, test=None,
                   log_every=1, hist_every=None, guard=True, guard_factor=1e3, guard_every=None,
                   on_divergence="raise", max_backoffs=5, checkpoint=None,
                   checkpoint_every=None, progress=False, progress_desc="training") -> list:
    """Validate every monitor keyword (nothing is allocated) and return the
    monitors in the order they see each chunk (``samples``: per epoch, for
    the guard's automatic ``guard_every``): the logger first (a chunk is
    logged, explosion included, before the guard can stop training), then
    the guard (which restores before the caller's monitors see a chunk),
    the caller's monitors, the checkpointer, the progress bar."""
    monitors = check_monitors(monitors)
    logger = None
    if log_dir is not None or test is not None or hist_every is not None or log_every != 1:
        logger = TensorBoardLogger(log_dir, train=train, net=net, test=test,
                                   log_every=log_every, hist_every=hist_every)
    watch = Guard.build(guard, factor=guard_factor, every=guard_every,
                        on_divergence=on_divergence, max_backoffs=max_backoffs,
                        optimizers=[opt for _, opt in schedule], net=net, samples=samples)
    saver = Checkpointer.build(checkpoint, checkpoint_every, watch)
    if not isinstance(progress, bool):
        raise TypeError(f"progress: expected True or False, got {progress!r}")
    found = [m for m in [logger, watch, *monitors, saver] if m is not None]
    if progress:
        total = sum(epochs for epochs, _ in schedule)
        # Updated at the chunks the other monitors ask for; alone, it asks
        # for about a hundred updates per call.
        paced = any(m.chunk is not None for m in found)
        found.append(Progress(total, progress_desc,
                              chunk=None if paced else max(1, math.ceil(total / 100))))
    return found
