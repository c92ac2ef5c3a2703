"""CUDA graphs: many epochs, one launch.

An epoch of the article network is about twenty kernels of a few µs each.
Launched one by one from Python, on a GPU the launches (host time, several
µs each) *are* the epoch, and the GPU idles between them.  A CUDA graph
records the kernels of K epochs once and replays them with a single launch;
the host only reads the cost when asked (sgd's return value, or a monitor's
chunk), exactly as in the eager loop.

What a capture bakes in, and how it stays valid:

* **addresses**: every array an epoch touches belongs to the training
  network (``layers.py``, ``network.py``) and lives as long as it; a graph
  is dropped with its training network (:meth:`GraphRunner.close`).  The
  per-epoch cost slots (monitors) are part of the key by address.
* **Python scalars**: η, λ (and 1/n) are arguments of the update kernels,
  so they are frozen into the capture.  Graphs are therefore cached by
  (optimizer key, cost, epochs per graph, cost slots); a new (η, λ)
  captures a new graph (a few ms), and at most :data:`MAX_GRAPHS` are kept
  (least recently used dropped).  An annealing schedule with thousands of
  distinct η would capture thousands of graphs: it is faster eager
  (``train.graphs = None``).
* **no allocation, no host sync** inside the loop: what the epoch loop
  already guarantees (tests: ``test_network.py``, ``test_cuda_graph.py``).

Only optimizers whose captured state is known take this path: scratchnet's
:class:`~scratchnet.optim.SGD` (key (η, λ)), or any optimizer with a
``graph_key()`` method returning a hashable value that changes whenever its
``step`` would launch different kernels or scalars.  Others run eagerly.

Before the first capture the runner trains one epoch eagerly on the capture
stream (CUDA graphs need the libraries' lazy initialisation, e.g. cuBLAS
handles and workspaces, done outside the capture); that epoch is a real one
and counts.

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


class CudaGraphs:
    """The CUDA side: a capture stream, eager warm-up on it, capture, and
    replay (``torch.cuda.CUDAGraph``)."""

    def __init__(self, device: torch.device):
        self.device = device
        with torch.cuda.device(device):
            self.stream = torch.cuda.Stream()

    def warm_up(self, body) -> None:
        """Run ``body`` eagerly on the capture stream, ordered after
        everything already queued and before everything queued later."""
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            body()
        current.wait_stream(self.stream)

    def capture(self, body):
        """Record ``body``'s kernels (nothing runs); returns the graph."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.device(self.device), torch.cuda.graph(graph, stream=self.stream):
            body()
        return graph

    @staticmethod
    def replay(graph) -> None:
        graph.replay()

    @staticmethod
    def drop(graph) -> None:
        graph.reset()


class GraphRunner:
    """Runs ``run_epochs``' work as graph replays for one training network.

    ``epoch_kernels(train, cost, k, optimizer, cost_slots)`` is the eager
    loop (``scratchnet.sgd.epoch_kernels``), recorded as it is: the graph
    replays exactly the kernels the eager path launches.
    """

    def __init__(self, mechanism, epoch_kernels, epochs_per_graph: int = EPOCHS_PER_GRAPH,
                 max_graphs: int = MAX_GRAPHS):
        self.mechanism = mechanism
        self.epoch_kernels = epoch_kernels
        self.epochs_per_graph = epochs_per_graph
        self.max_graphs = max_graphs
        self.graphs: OrderedDict = OrderedDict()
        self.warm = False
        self.captures = 0       # graphs recorded so far (for tests and tuning)
        self.replays = 0
        self.broken: str | None = None   # why capture failed, if it did

    def run(self, train, cost, epochs: int, optimizer, cost_slots=None) -> bool:
        """Do ``epochs`` epochs; ``False`` (nothing done) when this call
        must run eagerly instead (0 epochs, an optimizer without a key, or
        capture failed before)."""
        opt_key = graph_key(optimizer)
        if epochs == 0 or opt_key is None or self.broken is not None:
            return False
        slots = list(cost_slots) if cost_slots is not None else None
        if not self.warm:
            self.mechanism.warm_up(lambda: self.epoch_kernels(
                train, cost, 1, optimizer, slots[:1] if slots is not None else None))
            self.warm = True
            epochs -= 1
            slots = slots[1:] if slots is not None else None
        done = 0
        try:
            if slots is not None:
                # One graph for the whole chunk: slot i receives epoch i's cost.
                if epochs:
                    self._replay(train, cost, epochs, optimizer, slots, opt_key)
                return True
            full, rest = divmod(epochs, self.epochs_per_graph)
            for _ in range(full):
                self._replay(train, cost, self.epochs_per_graph, optimizer, None, opt_key)
                done += self.epochs_per_graph
            if rest:
                self._replay(train, cost, rest, optimizer, None, opt_key)
        except _CaptureFailed:
            # The piece whose capture failed did not run: finish eagerly.
            self.epoch_kernels(train, cost, epochs - done, optimizer, slots)
        return True

    def _replay(self, train, cost, k, optimizer, slots, opt_key) -> None:
        key = (opt_key, type(cost), id(cost), k,
               None if slots is None else _address(slots[0]))
        graph = self.graphs.get(key)
        if graph is None:
            try:
                graph = self.mechanism.capture(
                    lambda: self.epoch_kernels(train, cost, k, optimizer, slots))
            except RuntimeError as exc:
                self.broken = str(exc)
                warnings.warn(f"scratchnet: CUDA graph capture failed, training eagerly from "
                              f"now on: {exc}", RuntimeWarning, stacklevel=4)
                raise _CaptureFailed from None
            self.captures += 1
            self.graphs[key] = graph
            if len(self.graphs) > self.max_graphs:
                _, old = self.graphs.popitem(last=False)
                self.mechanism.drop(old)
        else:
            self.graphs.move_to_end(key)
        self.mechanism.replay(graph)
        self.replays += 1

    def close(self) -> None:
        """Drop every graph (their memory pools go with them)."""
        for graph in self.graphs.values():
            self.mechanism.drop(graph)
        self.graphs.clear()


class _CaptureFailed(Exception):
    """A capture raised; the runner is marked broken."""


def _address(array):
    ptr = getattr(array, "data_ptr", None)
    return ptr() if ptr is not None else id(array)


def runner_for(train):
    """A :class:`GraphRunner` for a training network on a CUDA torch
    device, ``None`` elsewhere or when ``SCRATCHNET_CUDA_GRAPHS=0``."""
    device = getattr(train.backend, "torch_device", None)
    if device is None or device.type != "cuda":
        return None
    if os.environ.get(ENV, "1").strip() == "0":
        return None
    from ..fit.sgd import epoch_kernels  # sgd imports network, which imports this

    return GraphRunner(CudaGraphs(device), epoch_kernels)
