"""Optimizers: a class validates the hyperparameters, a plain function does
the maths (the shape of ``torch/optim/sgd.py``).

An optimizer steps the *flat* parameter array ``net.params`` with the flat
gradient array ``train.grads`` (same layout: all weights first, then all
biases), so a step is a couple of kernel launches whatever the depth.
``train.grads`` holds the *sums* over the batch, δ a_{l−1}ᵀ and δ 1; the
1/n of the mean is applied here, once, with n = ``train.n_global`` (the
whole batch over every rank when training is data parallel; ``train.n`` in
one process).
"""

from __future__ import annotations

import numbers

from . import validation as check


def sgd_update(backend, params, weights, grads, weights_grad, *, eta: float, lam: float,
               n: int) -> None:
    """Gradient descent with L2 weight decay (part 15), n = batch size:

        W ← W − (ηλ/n) W − (η/n) δ a_{l−1}ᵀ  =  W − (η/n) (δ a_{l−1}ᵀ + λ W)
        b ← b − (η/n) δ 1                         (biases are not decayed)

    ``weights``/``weights_grad`` are the weights-only prefixes of
    ``params``/``grads``.  Why not (1 − ηλ/n)·W as the series writes it: in
    float32 1 − 1e-7 rounds to 1 − 1.19e-7, a λ 19% larger than asked, and a
    separate W − (ηλ/n)·W rounds each weight by up to half an ulp the same
    way every epoch.  Adding λW to the gradient sum first keeps the decay in
    a number of the gradient's magnitude and rounds W once.  (So after a
    step with λ > 0, ``weights_grad`` holds δ aᵀ + λW.)
    """
    if lam:
        backend.axpy_(weights_grad, lam, weights)
    backend.axpy_(params, -eta / n, grads)


class SGD:
    """Full-batch gradient descent with learning rate ``eta`` (η > 0) and L2
    weight decay ``lam`` (λ ≥ 0): see :func:`sgd_update`.

    With λ = 0 this is ``torch.optim.SGD(lr=η)`` on the quadratic cost C0;
    with λ > 0 it is ``weight_decay=λ/n`` applied to the weights only.
    """

    def __init__(self, eta: float, lam: float = 0.0):
        self.eta = check.check_real("eta", eta, positive=True)
        self.lam = check.check_real("lam", lam)

    def __repr__(self) -> str:
        return f"SGD(eta={self.eta}, lam={self.lam})"

    def with_eta(self, eta: float) -> SGD:
        """The same optimizer with learning rate ``eta``: how the divergence
        guard's backoff (``on_divergence="backoff"``) rebuilds any optimizer
        with a smaller η.  Every optimizer that wants backoff defines it; its
        state lives in ``train.state`` and survives the swap."""
        return type(self)(eta, self.lam)

    def prepare(self, train) -> None:
        """Allocate optimizer state in ``train.state`` (none for plain SGD).
        Allocate only what is missing: a resumed checkpoint or a guard
        backoff hands over state that must be kept."""

    def step(self, train) -> None:
        sgd_update(train.backend, train.net.params, train.weights_flat, train.grads,
                   train.weights_grad, eta=self.eta, lam=self.lam, n=train.n_global)


def as_optimizer(hyper, where: str | None = None):
    """``eta``, ``(eta,)``, ``(eta, lam)`` or an optimizer object -> an
    optimizer.  Errors name the offending field; ``where`` (e.g.
    ``"schedule[3]"``) is prefixed so a bad schedule entry says which one."""
    try:
        if hasattr(hyper, "step") and hasattr(hyper, "prepare"):
            return hyper
        if isinstance(hyper, numbers.Real) and not isinstance(hyper, bool):
            return SGD(hyper)
        if isinstance(hyper, (tuple, list)):
            if not 1 <= len(hyper) <= 2:
                raise ValueError(f"hyper: expected eta or (eta, lam), got a sequence of "
                                 f"{len(hyper)} values {tuple(hyper)!r}")
            return SGD(*hyper)
        raise TypeError(f"hyper: expected eta, (eta, lam) or an optimizer, got {hyper!r}")
    except (TypeError, ValueError) as exc:
        if where is None:
            raise
        raise type(exc)(f"{where}: {exc}") from None
