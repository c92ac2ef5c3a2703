"""Epoch runners: what an epoch is, and the one place that picks a runner.

    base.py         the contract every runner keeps (and the stop flag)
    reference.py    the series' step from Python: full batch, mini-batches
    cuda_graph.py   the full-batch runner replayed from CUDA graphs
    threads.py      how many CPU threads an epoch uses

:func:`runner_for` and :func:`minibatch_runner` are the only places that
choose between them.
"""

from __future__ import annotations

from .base import EpochRunner
from .cuda_graph import GraphRunner, graphs_enabled
from .reference import FullBatch, MiniBatch


def runner_for(train) -> EpochRunner:
    """The full-batch runner of training network ``train``, made on first
    use and kept with it (CUDA graphs and buffers survive across calls;
    ``train.close()`` closes it).  Set ``train.runner`` to choose another."""
    if train.runner is None:
        if graphs_enabled(train.backend):
            train.runner = GraphRunner(train)
        else:
            train.runner = FullBatch(train)
    return train.runner


def minibatch_runner(net, x, y, batch_size: int, *, shuffle: bool = True,
                     seed: int | None = None, parallel=None, resumed=None) -> EpochRunner:
    """A mini-batch runner for one ``train`` call (the caller closes it).
    ``parallel``: the data-parallel setup of ``nn.distributed.data_parallel``;
    ``resumed``: a training network whose epoch and optimizer state go on."""
    extra = {} if resumed is None else {"state": resumed.state, "epoch": resumed.epoch}
    if parallel is not None:
        extra.update(reducer=parallel.reducer, shard_sizes=parallel.shard_sizes,
                     rank=parallel.rank)
    return MiniBatch(net, x, y, batch_size, shuffle=shuffle, seed=seed, **extra)
