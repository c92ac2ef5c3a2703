"""Activation functions: what they compute and how their derivative is read.

The kernels live in the backends; this module names them and holds the maths
so a reader finds each formula once.  Every derivative is written through the
activation's *output* a = f(z), not z: the backward pass then needs no copy of
z, and the z buffer is free to receive the gradient (see ``layers.py``).

=========  ======================  ==========================
name       f(z)                    f'(z) written through a
=========  ======================  ==========================
sigmoid    1 / (1 + e^(−z))        a (1 − a)
tanh       tanh z                  1 − a²
linear     z                       1
relu       max(z, 0)               1 if a > 0 else 0
elu        z if z > 0 else eᶻ − 1  1 if a > 0 else a + 1
softmax    eᶻʲ / Σₖ eᶻᵏ (a column) diag(a) − a aᵀ (a Jacobian)
=========  ======================  ==========================

``elu`` and ``softmax`` come after the series (Deep Diamond has both).
Softmax is the one activation that is not elementwise: it normalises each
column (one sample's features), so its backward pass is a Jacobian–vector
product, g ← a ⊙ (g − aᵀg), per column, and both passes need an (n,) work
vector.  Paired with ``cross_entropy`` that product is never computed: the
cost hands the layer δ = a − y directly (see ``costs.py``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Activation:
    """A named elementwise activation; its kernels come from the backend."""

    name: str
    formula: str
    derivative: str

    #: True when the activation needs an (n,) work vector (column-wise).
    columnwise = False
    #: True when the backend's activation kernels (``activation_forward``/
    #: ``activation_backward`` by name, and the fused
    #: ``linear_activation_forward``) compute it: the series' four.
    fusable = True

    def __repr__(self) -> str:
        return f"scratchnet.{self.name}"

    def forward(self, backend, z, a, work=None) -> None:
        """a := f(z) on the device (``a`` may be ``z``)."""
        backend.activation_forward(self.name, z, a)

    def backward(self, backend, a, g, work=None) -> None:
        """g := g ⊙ f'(z), through a = f(z), in place."""
        backend.activation_backward(self.name, a, g)


class _Elu(Activation):
    """elu with α = 1 (its own backend kernels: the series' four activations
    share one kernel pair that older backends implement)."""

    fusable = False

    def forward(self, backend, z, a, work=None) -> None:
        backend.elu_forward(z, a)

    def backward(self, backend, a, g, work=None) -> None:
        backend.elu_backward(a, g)


class _Softmax(Activation):
    """Column-wise softmax, numerically stable (the column max is
    subtracted before exponentiating, so e^z never overflows)."""

    columnwise = True
    fusable = False

    def forward(self, backend, z, a, work=None) -> None:
        backend.softmax_forward(z, a, work)

    def backward(self, backend, a, g, work=None) -> None:
        backend.softmax_backward(a, g, work)


sigmoid = Activation("sigmoid", "1 / (1 + exp(-z))", "a * (1 - a)")
tanh = Activation("tanh", "tanh(z)", "1 - a**2")
linear = Activation("linear", "z", "1")
relu = Activation("relu", "max(z, 0)", "a > 0")
elu = _Elu("elu", "z if z > 0 else exp(z) - 1", "1 if a > 0 else a + 1")
softmax = _Softmax("softmax", "exp(z) / sum(exp(z)) per column", "diag(a) - a a^T")

BY_NAME = {act.name: act for act in (sigmoid, tanh, linear, relu, elu, softmax)}


def activation(spec: Activation | str) -> Activation:
    """Resolve ``spec`` (an :class:`Activation` or its name)."""
    if isinstance(spec, Activation):
        return spec
    if isinstance(spec, str) and spec in BY_NAME:
        return BY_NAME[spec]
    raise ValueError(f"activation: expected one of {', '.join(sorted(BY_NAME))} "
                     f"(scratchnet.sigmoid, ...), got {spec!r}")
