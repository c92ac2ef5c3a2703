"""TensorBoard logging: watch the series' cost and max |w| while training runs.

    sgd(training, y, quadratic_cost, 1000, (0.1, 0.01), log_dir="runs/article",
        test=(x_test, y_test), log_every=1, hist_every=None)

is ``sgd`` with a :class:`TensorBoardLogger` monitor (``monitors/base.py``
explains monitors); ``train(...)`` takes the same keywords.  The series
makes its whole argument by printing the cost and
``(map amax (map weights (layers net)))`` between ``sgd`` calls; this logs
the same numbers, per epoch, to ``torch.utils.tensorboard``.

Steps and what a value at step e means
--------------------------------------
The step is the training network's cumulative epoch count ``train.epoch``
after the logged epoch, so it keeps counting across ``sgd`` calls.  With
W_e the weights after e updates (W_0 the initial ones):

    cost/train              C(W_{e−1}): epoch e's forward pass, before its update
                            (the series' sgd return value)
    cost/test               C_test(W_e)
    weights/layer{i}/amax   max |W_e| of layer i (0-based)
    weights/layer{i}/norm   ‖W_e‖_F = (Σ w²)^½
    weights/layer{i}        histogram of W_e (every ``hist_every`` epochs)

which are exactly the numbers a user sees when an ``sgd`` call that ends at
epoch e returns: its return value, then the amax of the weights it left.
The logged epochs are every ``log_every``-th epoch of a call and the call's
last epoch.  A histogram is written at each logged epoch that reaches a new
multiple of ``hist_every``.

Cost of logging
---------------
The monitor's ``chunk`` is ``log_every``: sgd reads the chunk's costs with one
host copy.  At a logged epoch the monitor copies the weights, on the device,
into a buffer whose last slot receives the test pass's Σ(a − y)², and reads
that buffer with a second host copy: amax, norm and histograms are then
computed on the host from the same numbers, with no per-layer device read.
Every buffer (that one, and the test pass's activations) is allocated in
``start`` and released in ``finish``, so the epochs allocate nothing.
"""

from __future__ import annotations

import os
import weakref

import numpy as np

from .. import validation as check
from ..nn.network import Network, TrainingNetwork
from .base import Monitor

#: Custom-scalar charts (tags are regular expressions): train and test cost
#: overlaid, and the amax of every layer in one chart.
LAYOUT = {
    "scratchnet": {
        "cost (train, test)": ["Multiline", [r"^cost/(train|test)$"]],
        "max |w| per layer": ["Multiline", [r"^weights/layer\d+/amax$"]],
        "‖W‖ per layer": ["Multiline", [r"^weights/layer\d+/norm$"]],
    }
}

HIST_BINS = 30

# Writers that already carry the layout (a caller's writer across sgd calls).
_HAS_LAYOUT: weakref.WeakSet = weakref.WeakSet()


def _summary_pb2():
    from tensorboard.compat.proto import summary_pb2

    return summary_pb2


def _summary_writer_class():
    from torch.utils.tensorboard import SummaryWriter  # imported on first use: heavy

    return SummaryWriter


class TensorBoardLogger(Monitor):
    """A monitor that logs ``train``'s cost and weights to TensorBoard.

    ``log_dir``: a run directory (str or path; a writer is opened at the
    start of each ``sgd`` call and closed at its end) or a
    ``torch.utils.tensorboard.SummaryWriter`` the caller owns (flushed, never
    closed).  ``test``: an ``(x_test, y_test)`` pair, checked like x and y.
    ``log_every``: epochs between logged epochs (>= 1).  ``hist_every``:
    epochs between weight histograms, or None for none.

    The constructor validates everything and touches nothing; ``start``
    allocates, ``finish`` releases (see the module docstring).
    """

    def __init__(self, log_dir, *, train: TrainingNetwork | None = None,
                 net: Network | None = None, test=None, log_every: int = 1,
                 hist_every: int | None = None):
        if train is not None and not isinstance(train, TrainingNetwork):
            raise TypeError(f"train: expected a TrainingNetwork, got {type(train).__name__}")
        if train is None and not isinstance(net, Network):
            raise TypeError(f"net: expected the Network to log (or train=), got "
                            f"{type(net).__name__}")
        writer_class = None
        if isinstance(log_dir, (str, os.PathLike)):
            if not os.fspath(log_dir):
                raise ValueError("log_dir: expected a run directory, got an empty path")
        elif log_dir is None:
            raise ValueError("log_dir: test=, log_every= and hist_every= configure TensorBoard "
                             "logging; give log_dir (a run directory or a SummaryWriter)")
        else:
            writer_class = _summary_writer_class()
            if not isinstance(log_dir, writer_class):
                raise TypeError(f"log_dir: expected a run directory (str or path) or a "
                                f"torch.utils.tensorboard.SummaryWriter, got "
                                f"{type(log_dir).__name__}")
        self.log_every = check.check_int("log_every", log_every, 1)
        self.hist_every = None if hist_every is None else check.check_int(
            "hist_every", hist_every, 1)
        net = train.net if train is not None else net
        if test is not None:
            if not isinstance(test, (tuple, list)) or len(test) != 2:
                raise TypeError(f"test: expected an (x_test, y_test) pair, got "
                                f"{type(test).__name__}"
                                + (f" of length {len(test)}" if hasattr(test, "__len__") else ""))
            x_test = check.matrix("test[0] (x_test)", test[0], net.backend, cols=net.in_dim)
            y_test = check.matrix("test[1] (y_test)", test[1], net.backend, cols=net.out_dim,
                                  rows=x_test.shape[0])
            test = (x_test, y_test)
        self.train = train
        self.log_dir = log_dir
        self.owns_writer = writer_class is None
        self.test = test
        self.chunk = self.log_every
        self.writer = None
        self._test_train = None
        self._snapshot = None
        # where each layer's weights start in net.params' weight prefix
        self._starts = np.cumsum([0] + [la.out_dim * la.in_dim for la in net.layers[:-1]])

    def __repr__(self) -> str:
        return (f"TensorBoardLogger({self.log_dir!r}, log_every={self.log_every}, "
                f"hist_every={self.hist_every}, test={self.test is not None})")

    # ------------------------------------------------------------ monitor
    def start(self, train, cost, optimizer) -> None:
        if self.train is not None and train is not self.train:
            raise ValueError("train: this TensorBoardLogger was made for another training "
                             "network")
        self.cost = cost
        self._last = train.epoch      # the last logged step (or the call's start)
        self._pending = None          # (step, cost) of an unlogged chunk end
        try:
            be, net = train.backend, train.net
            self._snapshot = be.zeros((net.n_weights + 1,))
            self._weights = be.view(self._snapshot, 0, (net.n_weights,))
            self._test_sum = be.view(self._snapshot, net.n_weights, (1,))
            if self.test is not None:
                self._test_train = TrainingNetwork(net, self.test[0])
                self._test_train.load_y(self.test[1])
            if self.owns_writer:
                self.writer = _summary_writer_class()(log_dir=os.fspath(self.log_dir))
            else:
                self.writer = self.log_dir
            if self.writer not in _HAS_LAYOUT:
                self.writer.add_custom_scalars(LAYOUT)
                _HAS_LAYOUT.add(self.writer)
        except BaseException:
            self.finish(train)
            raise

    def after_chunk(self, train, first_epoch, costs):
        step = train.epoch
        if step - self._last >= self.log_every:
            self._log(train, step, costs[-1])
        else:
            self._pending = (step, costs[-1])
        return None

    def eta_changed(self, train, epoch, eta) -> None:
        """The divergence guard's backoff restored epoch ``epoch`` and set η:
        log ``train/eta`` there and resume logging from that step."""
        if self.writer is not None:
            self.writer.add_scalar("train/eta", eta, epoch)
        self._last = min(self._last, epoch)
        self._pending = None

    def finish(self, train) -> None:
        """Log the call's last epoch if its chunk was not logged, then flush
        (a caller's writer) or close (our own) and release the buffers."""
        try:
            if self._pending is not None and self._pending[0] == train.epoch \
                    and self.writer is not None:
                self._log(train, *self._pending)
        finally:
            self._pending = None
            if self.writer is not None:
                if self.owns_writer:
                    self.writer.close()
                else:
                    self.writer.flush()
                self.writer = None
            if self._test_train is not None:
                self._test_train.close()
                self._test_train = None
            if self._snapshot is not None:
                train.backend.release(self._snapshot)
                self._snapshot = self._weights = self._test_sum = None

    # ------------------------------------------------------------ logging
    def _log(self, train, step: int, train_cost: float) -> None:
        """Write every tag for step ``step`` (weights W_step, see the module
        docstring), with one host read."""
        be = train.backend
        be.copy_(self._weights, train.weights_flat)
        if self._test_train is not None:
            t = self._test_train
            out = t.layers[-1]
            t.forward()
            self.cost.bind(t.net).gradient(be, out.z, out.a, t.y, self._test_sum)
        host = be.to_numpy(self._snapshot).astype(np.float64)
        weights = host[:-1]
        starts = self._starts
        # one reduction per statistic over all layers; np.maximum propagates
        # NaN, so a diverged layer logs NaN, as sn.amax reports it
        amax = np.maximum.reduceat(np.abs(weights), starts)
        norm = np.sqrt(np.add.reduceat(weights * weights, starts))
        values = [("cost/train", train_cost)]
        if self._test_train is not None:
            values.append(("cost/test", self.cost.finish(float(host[-1]), self._test_train.n)))
        for i in range(len(starts)):
            values += [(f"weights/layer{i}/amax", amax[i]), (f"weights/layer{i}/norm", norm[i])]
        # All scalars of a step in one event (SummaryWriter.add_scalar would
        # write one event per tag, 8 for the article's network).
        summary = _summary_pb2().Summary(value=[
            _summary_pb2().Summary.Value(tag=tag, simple_value=float(v)) for tag, v in values])
        self.writer._get_file_writer().add_summary(summary, step)
        if self.hist_every is not None and step // self.hist_every > (
                self._last // self.hist_every):
            for i, (lo, hi) in enumerate(zip(starts, list(starts[1:]) + [len(weights)])):
                # Bins spanning the finite values: NaN cannot be binned, and
                # TensorBoard's default bins end at 1e20, so a diverging run's
                # weights would fall outside all of them (an error, not a chart).
                layer = weights[lo:hi]
                finite = layer[np.isfinite(layer)]
                if finite.size:
                    self.writer.add_histogram(f"weights/layer{i}", finite, step,
                                              bins=HIST_BINS)
        self._last = step
        self._pending = None
