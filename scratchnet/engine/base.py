"""The epoch-runner contract: what an epoch *is*, behind one small interface.

The training driver (``scratchnet/fit/driver.py``) owns the schedule, the
chunks and the monitors; it never launches a kernel itself.  It hands a
runner a cost, a number of epochs and an optimizer, and reads back the
costs.  What happens inside is the runner's business:

* :class:`~scratchnet.engine.reference.FullBatch`: the series' epoch, one
  full-batch step (forward, δ, backward, update) launched kernel by kernel
  from Python: the readable reference every other runner is checked against;
* :class:`~scratchnet.engine.reference.MiniBatch`: ⌈N/B⌉ such steps on
  gathered batches;
* :class:`~scratchnet.engine.native.runner.NativeFullBatch` and
  :class:`~scratchnet.engine.native.runner.NativeMiniBatch`: the same steps
  in C++, many epochs per call (the CPU's default);
* :class:`~scratchnet.engine.cuda_graph.GraphRunner`: the full-batch
  runner's kernels replayed from CUDA graphs;

:func:`scratchnet.engine.runner_for` and
:func:`scratchnet.engine.minibatch_runner` are the one place that picks.

Contract
--------
A runner trains one :class:`~scratchnet.nn.network.TrainingNetwork`,
``runner.train``: the one monitors watch (its ``net.params``, ``state``,
``epoch``).  ``runner.n_samples`` is the n an epoch's cost is averaged over
(every sample of the epoch, over every rank when data parallel).

* ``run(cost, epochs, optimizer, record)`` trains ``epochs`` >= 1 epochs
  with ``optimizer`` (already ``prepare``-d).  ``train.epoch`` counts every
  epoch as it completes, so after an exception it equals the updates the
  weights received.  With ``record`` every epoch's raw cost sum goes into
  its own slot (read with :meth:`costs`); without, only the last one is
  kept (read with :meth:`last_cost`).  The cost of an epoch is measured on
  its forward passes, before their updates, as in the series.  ``run``
  returns early, between epochs, when ``runner.stop`` says so (the driver's
  deferred Ctrl-C).
* ``costs(cost, k)``: the first ``k`` recorded costs, finished
  (``cost.finish``), with one device-to-host copy.
* ``last_cost(cost)``: the last epoch's cost, one read.
* ``measure(cost)``: the cost of the current parameters: forward passes
  only, no update, ``train.epoch`` unchanged.
* ``close()``: release what the runner allocated (not the training network
  it was handed, unless it made it).

Nothing is allocated in ``run``: buffers are made at construction or on
the first call that needs them, and reused.
"""

from __future__ import annotations


class Stop:
    """A flag the driver raises to stop a runner between epochs (its
    deferred Ctrl-C).  Runners check ``stop.requested`` once per epoch."""

    __slots__ = ("requested",)

    def __init__(self) -> None:
        self.requested = False


#: The flag of runners nobody stops.
NEVER = Stop()


class EpochRunner:
    """Base class of runners: the contract in the module docstring, with
    the bookkeeping every runner shares."""

    #: Why this runner was chosen (shown by ``scratchnet.engine.describe``).
    kind = "abstract"

    def __init__(self, train, n_samples: int):
        self.train = train
        self.n_samples = n_samples
        self.stop = NEVER

    def run(self, cost, epochs: int, optimizer, record: bool = False) -> None:
        raise NotImplementedError(f"{type(self).__name__}.run")

    def costs(self, cost, k: int) -> list[float]:
        raise NotImplementedError(f"{type(self).__name__}.costs")

    def last_cost(self, cost) -> float:
        raise NotImplementedError(f"{type(self).__name__}.last_cost")

    def measure(self, cost) -> float:
        raise NotImplementedError(f"{type(self).__name__}.measure")

    def close(self) -> None:
        """Release what the runner allocated; the base runner holds nothing."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
