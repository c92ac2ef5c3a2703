"""Epoch runners: what an epoch is, and the one place that picks a runner.

    base.py         the contract every runner keeps (and the stop flag)
    reference.py    the series' step from Python: full batch, mini-batches
    native/         the same steps in C++, compiled at first use (CPU)
    cuda_graph.py   the full-batch runner replayed from CUDA graphs
    threads.py      how many CPU threads an epoch uses

:func:`runner_for` and :func:`minibatch_runner` are the only places that
choose between them:

* a CUDA network replays CUDA graphs (``cuda_graph.py``);
* a CPU network of float32 or float64 trains on the native runner
  (``native/``), which falls back to the reference step, call by call, for
  a cost or optimizer it does not know (a user's own classes) and for
  data-parallel training.  The native runner uses one thread, so a network
  whose products are large enough for several (``threads.py``: largest
  product ≥ ``SMALL_PRODUCT`` and more than one thread allowed) stays on
  the reference runner and torch's multi-threaded BLAS;
* everything else (OpenCL, other plugins, the native kernels unavailable)
  trains on the reference runners.

The environment variable ``SCRATCHNET_RUNNER`` overrides the choice:
``auto`` (the default, above), ``reference`` (never the native runner) or
``native`` (as ``auto``, but where the native kernels cannot be built or
loaded that is an error instead of a warning).  It is read each time a
runner is made.
"""

from __future__ import annotations

import os
import warnings

import torch

from .base import EpochRunner
from .cuda_graph import GraphRunner, graphs_enabled
from .reference import FullBatch, MiniBatch
from .threads import SMALL_PRODUCT, get_num_threads

#: Environment variable that picks the CPU epoch runner.
RUNNER_ENV = "SCRATCHNET_RUNNER"
RUNNER_CHOICES = ("auto", "reference", "native")

_warned = False


def requested_runner() -> str:
    """``SCRATCHNET_RUNNER``: auto (unset or empty), reference or native."""
    raw = os.environ.get(RUNNER_ENV, "").strip().lower() or "auto"
    if raw not in RUNNER_CHOICES:
        raise ValueError(f"{RUNNER_ENV}: expected one of {', '.join(RUNNER_CHOICES)}, "
                         f"got {os.environ.get(RUNNER_ENV)!r}")
    return raw


def _multithreaded(net, n: int) -> bool:
    """True when an epoch on ``n`` samples is large enough for several
    threads (largest product ≥ ``SMALL_PRODUCT``) and would get them (the
    user's setting, else torch's).  Below that one native thread is faster
    than any number of reference ones, whatever the setting."""
    product = max(layer.out_dim * layer.in_dim for layer in net.layers) * n
    if product < SMALL_PRODUCT:
        return False
    requested = get_num_threads()
    return (requested if requested is not None else torch.get_num_threads()) > 1


def _native_module(net, n: int):
    """The native package when it should train ``net`` on batches of
    ``n``, else None.  A failed build warns once per process (auto) or
    raises (native)."""
    global _warned
    mode = requested_runner()
    if mode == "reference":
        return None
    from . import native

    if native.supports_network(net) is not None or _multithreaded(net, n):
        return None
    try:
        native.load()
    except native.NativeUnavailable as exc:
        if mode == "native":
            raise native.NativeUnavailable(f"{RUNNER_ENV}=native, but {exc}") from None
        if not _warned:
            _warned = True
            warnings.warn(f"scratchnet: the native epoch runner is unavailable, training on "
                          f"the reference runner instead: {exc}", RuntimeWarning, stacklevel=4)
        return None
    return native


def runner_for(train) -> EpochRunner:
    """The full-batch runner of training network ``train``, made on first
    use and kept with it (CUDA graphs and buffers survive across calls;
    ``train.close()`` closes it).  Set ``train.runner`` to choose another."""
    if train.runner is None:
        if graphs_enabled(train.backend):
            train.runner = GraphRunner(train)
        else:
            native = _native_module(train.net, train.n)
            train.runner = FullBatch(train) if native is None else native.NativeFullBatch(train)
    return train.runner


def minibatch_runner(net, x, y, batch_size: int, *, shuffle: bool = True,
                     seed: int | None = None, parallel=None, resumed=None) -> EpochRunner:
    """A mini-batch runner for one ``train`` call (the caller closes it).
    ``parallel``: the data-parallel setup of ``nn.distributed.data_parallel``;
    ``resumed``: a training network whose epoch and optimizer state go on."""
    extra = {} if resumed is None else {"state": resumed.state, "epoch": resumed.epoch}
    if parallel is None:
        native = _native_module(net, min(batch_size, int(x.shape[0])))
        kind = MiniBatch if native is None else native.NativeMiniBatch
        return kind(net, x, y, batch_size, shuffle=shuffle, seed=seed, **extra)
    return MiniBatch(net, x, y, batch_size, shuffle=shuffle, seed=seed,
                     reducer=parallel.reducer, shard_sizes=parallel.shard_sizes,
                     rank=parallel.rank, **extra)


def describe(runner: EpochRunner) -> str:
    """One line naming the runner and, for the native one, its vector width."""
    if getattr(runner, "kind", None) == "native":
        return f"native ({runner.kernels.describe()})"
    return type(runner).__name__ + f" ({runner.kind})"
