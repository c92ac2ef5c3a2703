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
=========  ======================  ==========================
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Activation:
    """A named elementwise activation; its kernels come from the backend."""

    name: str
    formula: str
    derivative: str

    def __repr__(self) -> str:
        return f"scratchnet.{self.name}"


sigmoid = Activation("sigmoid", "1 / (1 + exp(-z))", "a * (1 - a)")
tanh = Activation("tanh", "tanh(z)", "1 - a**2")
linear = Activation("linear", "z", "1")
relu = Activation("relu", "max(z, 0)", "a > 0")

BY_NAME = {act.name: act for act in (sigmoid, tanh, linear, relu)}


def activation(spec: Activation | str) -> Activation:
    """Resolve ``spec`` (an :class:`Activation` or its name)."""
    if isinstance(spec, Activation):
        return spec
    if isinstance(spec, str) and spec in BY_NAME:
        return BY_NAME[spec]
    raise ValueError(f"activation: expected one of {', '.join(sorted(BY_NAME))} "
                     f"(scratchnet.sigmoid, ...), got {spec!r}")
