"""Cost functions: the value reported to the user and the gradient that
starts the backward pass.

Quadratic cost (parts 7 and 15), n = number of samples:

    C0 = 1/(2n) Σ_x ‖y_x − a_x‖²          ∇_{a} (n C0) = a − y

The training loop writes a − y into the output layer's z buffer (the 1/n is
applied once, in the update), and when the cost is wanted reads Σ(a − y)²
from that same buffer before the backward pass turns it into δ: the cost of
an epoch is the cost of its forward pass, before its update, as in the series.
"""

from __future__ import annotations

import numpy as np

from .arrays import to_numpy


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


class QuadraticCost:
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
