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


class QuadraticCost:
    """C0 = 1/(2n) Σ_x ‖y_x − a_x‖².  Call it as ``quadratic_cost(y, a)`` on
    any arrays of the same shape (rows are samples), or hand it to
    :func:`~scratchnet.sgd`."""

    name = "quadratic"

    def __call__(self, y, a) -> float:
        y, a = np.asarray(to_numpy(y), np.float64), np.asarray(to_numpy(a), np.float64)
        if y.shape != a.shape or y.ndim != 2:
            raise ValueError(f"a: expected the shape of y {y.shape} (2-D, rows are samples), "
                             f"got {a.shape}")
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
