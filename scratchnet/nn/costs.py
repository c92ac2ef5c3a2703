"""Cost functions: the value reported to the user and the gradient that
starts the backward pass.

Quadratic cost (parts 7 and 15), n = number of samples:

    C0 = 1/(2n) Σ_x ‖y_x − a_x‖²          ∇_{a} (n C0) = a − y

The training loop writes a − y into the output layer's z buffer (the 1/n is
applied once, in the update), and when the cost is wanted reads Σ(a − y)²
from that same buffer before the backward pass turns it into δ: the cost of
an epoch is the cost of its forward pass, before its update, as in the series.

Cross-entropy (after the series; Deep Diamond's ``:crossentropy``):

    softmax outputs   C = −(1/n) Σ_x Σ_j y_j ln a_j                δ_L = a − y
    sigmoid outputs   C = −(1/n) Σ_x Σ_j [y ln a + (1 − y) ln(1 − a)]   δ_L = a − y

In both pairings the activation's derivative cancels against the cost's, so
the training loop writes δ_L = a − y into the output z buffer and the output
layer skips σ' (:meth:`Cost.fuses`): no softmax Jacobian, and no
(a − y)/(a(1 − a)) that would lose everything where a rounds to 0 or 1.

A cost is a :class:`Cost`: ``sgd`` and ``train`` accept any subclass.  The
loop talks to it through :meth:`Cost.bind`, which returns the cost
specialised to the network's output layer.
"""

from __future__ import annotations

import numpy as np

from ..arrays import to_numpy


def _host64(name: str, data) -> np.ndarray:
    """``data`` (array of any backend, tensor, numpy array or list of real
    numbers) as a float64 host array; TypeError naming ``name`` otherwise."""
    if isinstance(data, (list, tuple)):
        try:
            data = np.asarray(data)
        except ValueError as exc:
            raise ValueError(f"{name}: a ragged list is not a matrix ({exc})") from None
    try:
        data = to_numpy(data)
    except TypeError:
        raise TypeError(f"{name}: expected a matrix (torch tensor, numpy array, list or "
                        f"backend array), got {type(data).__name__}") from None
    if data.dtype.kind not in "iuf":
        raise TypeError(f"{name}: expected real numbers, got dtype {data.dtype}")
    return data.astype(np.float64)


class Cost:
    """The protocol ``sgd``/``train`` use; subclasses define the maths.

    ``bind(net)`` returns an object with ``fused`` (bool: the gradient it
    writes is δ_L itself), ``gradient(backend, g, a, y, out)`` (g := n·∇_a C,
    or n·δ_L when fused; when ``out`` is given, also out := the raw cost sum
    of the batch; ``g`` arrives holding z and may be used as scratch before
    the gradient is written) and ``finish(raw, n)`` (the cost from raw sums
    over n samples).  ``check(net, y)`` refuses a network or targets the
    cost cannot train, before anything runs.
    """

    name = "cost"

    def check(self, net, y) -> None:
        """Raise ``ValueError`` when this cost cannot train ``net`` on ``y``
        (``y`` None: targets already checked, check the network only)."""

    def bind(self, net) -> Cost:
        """This cost specialised to ``net``'s output layer."""
        return self

    fused = False

    def gradient(self, backend, g, a, y, out=None) -> None:
        self.output_gradient(backend, g, a, y)
        if out is not None:
            self.accumulate(backend, g, out)

    def output_gradient(self, backend, g, a, y) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def accumulate(self, backend, g, out) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def finish(self, raw: float, n: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError


class QuadraticCost(Cost):
    """C0 = 1/(2n) Σ_x ‖y_x − a_x‖².  Call it as ``quadratic_cost(y, a)`` on
    any arrays of the same shape (rows are samples), or hand it to
    :func:`~scratchnet.sgd`."""

    name = "quadratic"

    def __call__(self, y, a) -> float:
        y, a = _host64("y", y), _host64("a", a)
        if y.shape != a.shape or y.ndim != 2:
            raise ValueError(f"a: expected the shape of y {y.shape} (2-D, rows are samples), "
                             f"got {a.shape}")
        with np.errstate(all="ignore"):   # NaN/inf in, NaN/inf out: faithfully
            return float(np.sum((y - a) ** 2) / (2 * y.shape[0]))

    # The three steps sgd uses, on the device, in column layout.
    def output_gradient(self, backend, g, a, y) -> None:
        """g := a − y  (n · ∇_a C0)."""
        backend.subtract(g, a, y)

    def accumulate(self, backend, g, out) -> None:
        """out := Σ g², with g = a − y as left by :meth:`output_gradient`."""
        backend.sum_squares(g, out)

    def finish(self, raw: float, n: int) -> float:
        """The cost from the accumulated Σ (a − y)²."""
        return raw / (2 * n)

    def __repr__(self) -> str:
        return "scratchnet.quadratic_cost"


quadratic_cost = QuadraticCost()


def _host(y, a) -> tuple[np.ndarray, np.ndarray]:
    y, a = _host64("y", y), _host64("a", a)
    if y.shape != a.shape or y.ndim != 2:
        raise ValueError(f"a: expected the shape of y {y.shape} (2-D, rows are samples), "
                         f"got {a.shape}")
    return y, a


#: ln a is floored here (torch's BCE convention): a sample the network gets
#: confidently wrong costs 100, not inf, so the cost stays a usable number.
LOG_FLOOR = -100.0


class CrossEntropyCost(Cost):
    """Cross-entropy: categorical after a softmax output layer, binary after
    a sigmoid one (see the module docstring).  ``cross_entropy(y, a)``
    computes it on the host (``binary=None`` picks the binary form for a
    single output column); ``sgd``/``train`` pick the form from the output
    activation and refuse any other output layer."""

    name = "cross_entropy"
    fused = True

    def __init__(self, binary: bool | None = None):
        self.binary = binary

    def __call__(self, y, a, binary: bool | None = None) -> float:
        y, a = _host(y, a)
        binary = (y.shape[1] == 1) if binary is None else binary
        with np.errstate(divide="ignore"):
            terms = y * np.maximum(np.log(a), LOG_FLOOR)
            if binary:
                terms += (1 - y) * np.maximum(np.log1p(-a), LOG_FLOOR)
        return float(-np.sum(terms) / y.shape[0])

    def check(self, net, y) -> None:
        act = net.layers[-1].activation.name
        if act not in ("softmax", "sigmoid"):
            raise ValueError(f"cost: cross_entropy needs a softmax (categorical) or sigmoid "
                             f"(binary) output layer, got a {act} output layer")
        if y is None:
            return
        host = np.asarray(to_numpy(y), np.float64)
        if host.min() < 0 or host.max() > 1:
            raise ValueError(f"y: cross_entropy expects targets in [0, 1] (probabilities, "
                             f"e.g. one-hot rows), got values in [{host.min()}, {host.max()}]")
        if act == "softmax":
            sums = host.sum(axis=1)
            bad = np.flatnonzero(np.abs(sums - 1) > 1e-4)
            if bad.size:
                raise ValueError(f"y: with a softmax output every row must sum to 1 (one-hot "
                                 f"or a distribution); row {bad[0]} sums to {sums[bad[0]]}")

    def bind(self, net) -> CrossEntropyCost:
        binary = net.layers[-1].activation.name == "sigmoid"
        return self if self.binary is binary else CrossEntropyCost(binary)

    def gradient(self, backend, g, a, y, out=None) -> None:
        """out := −Σ y ln a (+ (1 − y) ln(1 − a), binary), using g as
        scratch; then g := a − y, which *is* n·δ_L (fused)."""
        if out is not None:
            backend.cross_entropy_sum(g, a, y, out, bool(self.binary))
        backend.subtract(g, a, y)

    def finish(self, raw: float, n: int) -> float:
        return raw / n

    def __repr__(self) -> str:
        return "scratchnet.cross_entropy"


cross_entropy = CrossEntropyCost()
