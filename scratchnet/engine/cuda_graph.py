"""CUDA graphs: many epochs, one launch.

An epoch of the article network is about twenty kernels of a few µs each.
Launched one by one from Python, on a GPU the launches (host time, several
µs each) *are* the epoch, and the GPU idles between them.  A CUDA graph
records the kernels of K epochs once and replays them with a single launch;
the host only reads the cost when asked (sgd's return value, or a monitor's
chunk), exactly as in the eager loop.

What a capture bakes in, and how it stays valid:

* **addresses**: every array an epoch touches belongs to the training
  network (``nn/layers.py``, ``nn/network.py``) or to the runner and lives
  as long as it; a graph is dropped with its training network
  (:meth:`GraphRunner.close`).  The cost slots are part of the key by
  address.
* **Python scalars**: η, λ (and 1/n) are arguments of the update kernels,
  so they are frozen into the capture.  Graphs are therefore cached by
  (optimizer key, cost, epochs per graph, cost slots); a new (η, λ)
  captures a new graph (a few ms), and at most :data:`MAX_GRAPHS` are kept
  (least recently used dropped).  An annealing schedule with thousands of
  distinct η would capture thousands of graphs: it is faster eager
  (``train.runner = FullBatch(train)``).
* **no allocation, no host sync** inside the loop: what the epoch loop
  already guarantees (tests: ``test_network.py``, ``test_cuda_graph.py``).

Only optimizers whose captured state is known take this path: scratchnet's
:class:`~scratchnet.nn.optim.SGD` (key (η, λ, μ)), or any optimizer with a
``graph_key()`` method returning a hashable value that changes whenever its
``step`` would launch different kernels or scalars.  Others run eagerly.

Before the first capture for an (optimizer, cost) pair the runner trains
one epoch of it eagerly on the capture stream: CUDA graphs need the
libraries' lazy initialisation (cuBLAS handles and workspaces, the
optimizer's scalar register, kernels loaded on first launch) done outside
the capture.  That epoch is a real one and counts.

Captures use the thread-local error mode (another thread's CUDA call during
a capture does not break it), one memory pool shared by every graph of the
runner, and no device-wide synchronisation or cache flush per capture.

The mechanism (warm-up stream, capture, replay) is one small class,
:class:`CudaGraphs`, so the runner's bookkeeping is tested on any machine
with a stand-in (``tests/test_cuda_graph.py``); the real capture is tested
where CUDA exists.  ``SCRATCHNET_CUDA_GRAPHS=0`` turns graphs off for new
training networks.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict

import torch

from ..nn.optim import SGD
from .reference import FullBatch, step

#: Epochs recorded in one graph: long calls replay it ⌊epochs/K⌋ times
#: (plus one graph for the remainder).  64 epochs of the article network
#: are ~1,300 graph nodes: captured in milliseconds, replayed in one launch.
EPOCHS_PER_GRAPH = 64

#: Graphs kept per training network (least recently used dropped first).
MAX_GRAPHS = 8

ENV = "SCRATCHNET_CUDA_GRAPHS"


def graph_key(optimizer):
    """A hashable value that fixes what ``optimizer.step`` launches, or
    ``None`` when the optimizer cannot be captured (then: eager)."""
    if type(optimizer) is SGD:   # momentum's μ and its state's address are fixed too
        return ("SGD", optimizer.eta, optimizer.lam, optimizer.mu, optimizer.nesterov)
    key_fn = getattr(optimizer, "graph_key", None)
    return None if key_fn is None else (type(optimizer), key_fn())


def graphs_enabled(backend) -> bool:
    """True for a CUDA torch backend, unless ``SCRATCHNET_CUDA_GRAPHS=0``."""
    device = getattr(backend, "torch_device", None)
    return (device is not None and device.type == "cuda"
            and os.environ.get(ENV, "1").strip() != "0")


class CudaGraphs:
    """The CUDA side: a capture stream, eager warm-up on it, capture, and
    replay (``torch.cuda.CUDAGraph``)."""

    def __init__(self, device: torch.device):
        self.device = device
        with torch.cuda.device(device):
            self.stream = torch.cuda.Stream()
        self.pool = torch.cuda.graph_pool_handle()

    def warm_up(self, body) -> None:
        """Run ``body`` eagerly on the capture stream, ordered after
        everything already queued and before everything queued later."""
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            body()
        current.wait_stream(self.stream)

    def capture(self, body):
        """Record ``body``'s kernels (nothing runs); returns the graph.
        The stream context is entered outside the capture so that it is
        left even when ``capture_end`` fails."""
        graph = torch.cuda.CUDAGraph()
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            graph.capture_begin(pool=self.pool, capture_error_mode="thread_local")
            try:
                body()
            finally:
                graph.capture_end()
        current.wait_stream(self.stream)
        return graph

    @staticmethod
    def replay(graph) -> None:
        graph.replay()

    @staticmethod
    def drop(graph) -> None:
        graph.reset()


class GraphRunner(FullBatch):
    """The full-batch runner whose epochs are replayed from CUDA graphs;
    it records exactly the kernels :class:`FullBatch` launches, and falls
    back to launching them (an optimizer without a key, data-parallel
    training, or after a failed capture).  ``mechanism`` is
    :class:`CudaGraphs` on CUDA, a stand-in in tests."""

    kind = "cuda-graphs"

    def __init__(self, train, mechanism=None, epochs_per_graph: int = EPOCHS_PER_GRAPH,
                 max_graphs: int = MAX_GRAPHS):
        super().__init__(train)
        self.mechanism = CudaGraphs(train.backend.torch_device) if mechanism is None \
            else mechanism
        self.epochs_per_graph = epochs_per_graph
        self.max_graphs = max_graphs
        self.graphs: OrderedDict = OrderedDict()
        self.warm: set = set()   # (optimizer key, cost) pairs run eagerly once
        self.captures = 0        # graphs recorded so far (for tests and tuning)
        self.replays = 0
        self.broken: str | None = None   # why capture failed, if it did

    def run(self, cost, epochs: int, optimizer, record: bool = False) -> None:
        opt_key = graph_key(optimizer)
        train = self.train
        if opt_key is None or self.broken is not None or train.all_reduce is not None:
            super().run(cost, epochs, optimizer, record)
            return
        bound = cost.bind(train.net)
        slots = self.slots.get(epochs if record else 1)

        def wanted(start: int, k: int) -> list:
            """The cost slots of epochs start … start + k − 1: each its own
            when recording, else the last epoch of every piece writes the
            one slot (so a 64-epoch piece is the same graph wherever it is)."""
            return list(slots[start:start + k]) if record else [None] * (k - 1) + [slots[0]]

        done = 0
        warm_key = (opt_key, type(cost), id(cost))
        if warm_key not in self.warm:
            slot = wanted(0, 1)[0] if record or epochs == 1 else None
            self.mechanism.warm_up(lambda: step(train, bound, optimizer, slot))
            self.warm.add(warm_key)
            train.epoch += 1
            done = 1
        while done < epochs:
            if self.stop.requested:
                return
            k = min(self.epochs_per_graph, epochs - done)
            if not self._replay(bound, k, optimizer, wanted(done, k), (*warm_key, k)):
                # The capture failed: the rest eagerly.
                rest = wanted(done, epochs - done)
                for slot in rest:
                    if self.stop.requested:
                        return
                    step(train, bound, optimizer, slot)
                    train.epoch += 1
                return
            train.epoch += k
            done += k

    def _replay(self, bound, k: int, optimizer, slots, key) -> bool:
        """Replay (capturing first if needed) ``k`` epochs writing their
        costs into ``slots``; False when the capture failed."""
        key = (*key, tuple(None if s is None else _address(s) for s in slots))
        graph = self.graphs.get(key)
        if graph is None:
            train = self.train

            def body():
                for slot in slots:
                    step(train, bound, optimizer, slot)

            try:
                graph = self.mechanism.capture(body)
            except RuntimeError as exc:
                self.broken = str(exc)
                warnings.warn(f"scratchnet: CUDA graph capture failed, training eagerly from "
                              f"now on: {exc}", RuntimeWarning, stacklevel=4)
                return False
            self.captures += 1
            self.graphs[key] = graph
            if len(self.graphs) > self.max_graphs:
                _, old = self.graphs.popitem(last=False)
                self.mechanism.drop(old)
        else:
            self.graphs.move_to_end(key)
        self.mechanism.replay(graph)
        self.replays += 1
        return True

    def close(self) -> None:
        """Drop every graph (their memory goes with them) and the slots."""
        for graph in self.graphs.values():
            self.mechanism.drop(graph)
        self.graphs.clear()
        super().close()


def _address(array):
    ptr = getattr(array, "data_ptr", None)
    return ptr() if ptr is not None else id(array)
