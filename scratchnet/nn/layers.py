"""The fully connected layer: its inference form and its training form.

Notation (the series', parts 7–15): for layer l with weights W (out × in),
bias b (out) and activation σ, on a batch whose samples are the columns of
a_{l−1} (in × n):

    forward     z_l = W_l a_{l−1} + b_l 1ᵀ          a_l = σ(z_l)
    backward    δ_l = ∇_{a_l}C ⊙ σ'(z_l)            (σ' read through a_l)
                ∇_{W_l}C = δ_l a_{l−1}ᵀ / n         ∇_{b_l}C = δ_l 1 / n
                ∇_{a_{l−1}}C = W_lᵀ δ_l             (handed to layer l − 1)

The series (``convention="series"``) writes z = W a − b but keeps the update
b ← b − (η/n) Σδ, so its bias moves *up* its gradient; ``bias_sign = −1``
reproduces that exactly (SERIES-API.md §2).

Memory, as in the series' part 10 "river crossing": a training layer owns z
and a (both out × n).  Once a = σ(z) is computed, z is dead until the
backward pass, so the gradient with respect to a arrives *in the z buffer*
and becomes δ there in place.  A linear layer's a is its z (no copy at all).
The gradient buffers dW, db are views into one flat array owned by the
training network, in the same layout as the parameters, so an optimizer (or
an all-reduce, or a checkpoint) deals with two flat arrays, not 2L small ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..validation import check_int
from .activations import Activation, activation


@dataclass(frozen=True)
class LayerSpec:
    """What :func:`fully_connected` returns: a layer before it knows its
    input width (the series' closure ``(fully-connected 32 sigmoid)``)."""

    out_dim: int
    activation: Activation


#: Keywords users bring from Keras or PyTorch, and where the setting goes.
_HINTS = {
    "activation": "the activation is the second argument, activation_fn: "
                  "fully_connected(32, scratchnet.relu)",
    "units": "the width is the first argument, out_dim: fully_connected(32, scratchnet.relu)",
    "out_features": "the width is the first argument, out_dim: "
                    "fully_connected(32, scratchnet.relu)",
    "in_features": "the input width is not given per layer: inference_network(in_dim, layers) "
                   "passes each layer's input width on",
    "bias": "every layer has a bias; its sign convention is inference_network(..., "
            "convention='standard' | 'series')",
}


_MISSING = object()


def fully_connected(out_dim: int, activation_fn: Activation | str = _MISSING,
                    **unknown) -> LayerSpec:
    """A fully connected layer of ``out_dim`` neurons with ``activation_fn``
    (``scratchnet.sigmoid``, ``tanh``, ``linear``, ``relu``, ``elu``,
    ``softmax`` or its name)."""
    if unknown:
        name = next(iter(unknown))
        hint = _HINTS.get(name)
        raise TypeError(f"fully_connected() got an unexpected keyword argument {name!r}"
                        + (f": {hint}" if hint else ""))
    if activation_fn is _MISSING:
        raise TypeError("activation_fn: missing; call fully_connected(out_dim, activation_fn), "
                        "e.g. fully_connected(32, scratchnet.sigmoid)")
    out_dim = check_int("out_dim", out_dim, 1)
    return LayerSpec(out_dim, activation(activation_fn))


class FullyConnected:
    """An inference layer: ``weights`` (out, in) and ``bias`` (out,) are
    views into the network's flat parameter array, so training (which uses
    the same views) updates them in place."""

    def __init__(self, backend, weights, bias, act: Activation, bias_sign: float):
        self.backend = backend
        self.weights = weights
        self.bias = bias
        self.activation = act
        self.bias_sign = bias_sign
        self.out_dim, self.in_dim = weights.shape
        self.bias_operand = backend.bias_operand(bias)   # b as linear_forward takes it

    def __repr__(self) -> str:
        return f"fully_connected({self.in_dim} -> {self.out_dim}, {self.activation!r})"

    def forward(self, a_prev, z, work=None) -> None:
        """z := σ(W a_prev + b 1ᵀ), in place in z (inference keeps no z).
        ``work``: an (n,) scratch array, needed by column-wise activations
        (softmax)."""
        be = self.backend
        if self.activation.fusable:   # the series' four
            be.linear_activation_forward(self.activation.name, z, self.weights,
                                         self.bias_operand, a_prev, self.bias_sign)
            return
        be.linear_forward(z, self.weights, self.bias_operand, a_prev, self.bias_sign)
        self.activation.forward(be, z, z, work)


class FullyConnectedTraining:
    """A training layer bound to one batch: owns z and a (out × n), reads
    a_prev (the previous layer's a, or the training input), writes the
    previous layer's gradient into ``g_prev`` (that layer's z buffer; None
    for the first layer, whose input must not be overwritten: part 12's bug).
    """

    def __init__(self, layer: FullyConnected, a_prev, g_prev, dw, db, n: int):
        be = layer.backend
        self.layer = layer
        self.a_prev = a_prev
        self.g_prev = g_prev
        self.dw = dw
        self.db = db
        self.z = be.zeros((layer.out_dim, n))
        # linear: a = z, so the forward pass needs no copy.
        self.a = self.z if layer.activation.name == "linear" else be.zeros((layer.out_dim, n))
        # softmax normalises columns: an (n,) work vector for both passes.
        self.work = be.zeros((n,)) if layer.activation.columnwise else None
        # What forward/backward read every epoch, fetched once: at n = 100 an
        # epoch is ~20 kernels of a few µs, so each attribute hop shows.
        self.backend = be
        self.weights = layer.weights
        self.bias_operand = layer.bias_operand
        self.bias_sign = layer.bias_sign
        self.act = layer.activation.name
        # The series' four activations share the backend's activation kernels
        # (called directly: the hot path); elu and softmax have their own.
        self.activation = layer.activation
        self.plain = layer.activation.fusable

    def forward(self) -> None:
        """z = W a_{l−1} + b 1ᵀ;  a = σ(z)."""
        be = self.backend
        if self.plain and self.a is not self.z:
            # z is dead until the backward pass writes ∇_a C into it, so the
            # backend may fuse: a = σ(W a_{l−1} + b 1ᵀ) without storing z
            # (one kernel instead of two on OpenCL).
            be.linear_activation_forward(self.act, self.a, self.weights, self.bias_operand,
                                         self.a_prev, self.bias_sign)
            return
        be.linear_forward(self.z, self.weights, self.bias_operand, self.a_prev, self.bias_sign)
        if self.a is not self.z:
            self.activation.forward(be, self.z, self.a, self.work)

    def backward(self, delta: bool = False) -> None:
        """z holds ∇_a C on entry.  δ = ∇_a C ⊙ σ'(z) (in z);
        dW = δ a_{l−1}ᵀ;  db = δ 1;  g_prev = Wᵀ δ.  (With the series'
        bias sign db is not −∂C/∂b's negative but the series' own step.)

        The order matters: dW reads a_{l−1} before g_prev is written (a
        linear previous layer's a *is* its z), and g_prev reads W before any
        update (updates happen after the whole backward pass).

        ``delta``: z already holds δ, not ∇_a C (a cost fused with this
        output activation, e.g. cross-entropy after softmax: δ = a − y), so
        σ' is skipped."""
        be = self.backend
        if not delta and self.a is not self.z:   # linear: σ' = 1, z already is δ
            if self.plain:
                be.activation_backward(self.act, self.a, self.z)
            else:
                self.activation.backward(be, self.a, self.z, self.work)
        be.weight_gradient(self.dw, self.db, self.z, self.a_prev)
        if self.g_prev is not None:
            be.input_gradient(self.g_prev, self.weights, self.z)

    def release(self) -> None:
        be = self.backend
        if self.a is not self.z:
            be.release(self.a)
        be.release(self.z)
        if self.work is not None:
            be.release(self.work)
        self.z = self.a = self.work = None
        self.weights = self.bias_operand = None
