"""Optimizers: a class validates the hyperparameters, a plain function does
the maths (the shape of ``torch/optim/sgd.py``).

An optimizer steps the *flat* parameter array ``net.params`` with the flat
gradient array ``train.grads`` (same layout: all weights first, then all
biases), so a step is a couple of kernel launches whatever the depth.
``train.grads`` holds the *sums* over the batch, δ a_{l−1}ᵀ and δ 1; the
1/n of the mean is applied here, once, with n = ``train.n_global``: the
batch the step was computed on (the whole training set in ``sgd``, a
mini-batch in ``train``, the batch over every rank when training is data
parallel).

Every optimizer after part 15 keeps the series' two rules: the biases take
plain gradient steps b ← b − (η/n) δ 1 (no decay, no momentum, no Adam
moments: part 16 and Deep Diamond), and weight decay is *decoupled*, the
factor (1 − ηλ/n) applied to W outside the velocity or the Adam moments.
Optimizer state (velocity, moments) lives on the device in ``train.state``,
allocated once by ``prepare`` (zero at the start) and kept across ``sgd``
calls and schedule entries, as the series' velocity lives in its training
layer.  Every optimizer has ``with_eta(eta)``: a copy with another learning
rate, which the divergence guard uses to back off.
"""

from __future__ import annotations

import math
import numbers

from .. import validation as check


def _batch(train) -> int:
    """n of the step: the batch the gradient sums were taken over (over
    every rank when data parallel)."""
    return train.n_global


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


def momentum_update(backend, weights, velocity, weights_grad, *, eta: float, lam: float,
                    mu: float, nesterov: bool, n: int) -> None:
    """Momentum (part 16) and Nesterov momentum on the weights:

        v ← μ v − (η/n) δ a_{l−1}ᵀ
        W ← (1 − ηλ/n) W + v                          (momentum, part 16)
        W ← (1 − ηλ/n) W + μ v − (η/n) δ a_{l−1}ᵀ     (Nesterov; v the new v)

    Nesterov in this form (Sutskever et al. 2013, rewritten so the stored W
    is the look-ahead point W + μv) needs no extra forward pass; it is what
    Deep Diamond's look-ahead computes and what ``torch.optim.SGD(
    nesterov=True)`` does.  The decay is computed as in :func:`sgd_update`:
    not as (1 − ηλ/n)·W, but as the term −(ηλ/n) W added to the step (in the
    gradient buffer, free after v is updated) so W is rounded once.  With
    μ = 0 both equal :func:`sgd_update`.  The biases are stepped by
    :func:`bias_update`."""
    backend.momentum_update(weights, velocity, weights_grad, lr=eta / n, decay=eta * lam / n,
                            mu=mu, nesterov=nesterov)


def adam_update(backend, weights, m, v, weights_grad, count, *, eta: float, lam: float,
                beta1: float, beta2: float, eps: float, t: int, n: int) -> None:
    """Adam (Kingma & Ba 2015) on the weights, with decoupled decay as in
    Deep Diamond; ĝ = (1/n) δ a_{l−1}ᵀ is the mean gradient and t = 1, 2, …
    the number of Adam steps taken on this state:

        m ← β₁ m + (1 − β₁) ĝ
        v ← β₂ v + (1 − β₂) ĝ²
        W ← (1 − ηλ/n) W − η m̂ / (√v̂ + ε),   m̂ = m / (1 − β₁ᵗ),  v̂ = v / (1 − β₂ᵗ)

    computed as W ← W − (ηλ/n) W − (η / (1 − β₁ᵗ)) m / (√v / √(1 − β₂ᵗ) + ε)
    (torch's arrangement, W rounded once).  t is the step count, not Deep
    Diamond's epoch index: with mini-batches an epoch is many steps, and the
    bias correction 1 − βᵗ is about the number of averages m and v have
    seen.  With λ = 0 this is ``torch.optim.Adam``; with λ > 0
    ``torch.optim.AdamW(weight_decay=λ/n)``.  The biases are stepped by
    :func:`bias_update` (plain SGD, as in Deep Diamond).  ``count`` is the
    device copy of t (a 1-element array the kernel increments to t)."""
    backend.adam_update(weights, m, v, weights_grad, count, scale=1.0 / n, beta1=beta1,
                        beta2=beta2,
                        eps=eps, step=eta / (1.0 - beta1 ** t),
                        sqrt_c2=math.sqrt(1.0 - beta2 ** t), decay=eta * lam / n)


def bias_update(backend, biases, biases_grad, *, eta: float, n: int) -> None:
    """b ← b − (η/n) δ 1: plain gradient descent, the series' bias rule."""
    backend.axpy_(biases, -eta / n, biases_grad)


def _state(train, key: str, size: int | None = None):
    """A zero-filled device buffer ``train.state[key]`` (weights-sized unless
    ``size``), allocated only when missing (a guard backoff or a resumed run
    hands over state that must be kept)."""
    size = train.net.n_weights if size is None else size
    buf = train.state.get(key)
    if buf is None or tuple(buf.shape) != (size,):
        buf = train.state[key] = train.backend.zeros((size,))
    return buf


def _check_fraction(name: str, value) -> float:
    """A real number in [0, 1)."""
    value = check.check_real(name, value)
    if value >= 1:
        raise ValueError(f"{name}: expected a number in [0, 1), got {value}")
    return value


class SGD:
    """Gradient descent with learning rate ``eta`` (η > 0), L2 weight decay
    ``lam`` (λ ≥ 0) and momentum ``mu`` (0 ≤ μ < 1), optionally Nesterov's:
    see :func:`sgd_update` (μ = 0) and :func:`momentum_update`.  The tuple
    ``(eta, lam, mu)`` given to ``sgd`` means ``SGD(eta, lam, mu)``.

    With λ = 0 this is ``torch.optim.SGD(lr=η, momentum=μ, nesterov=…)`` on
    the mean cost for the weights and plain SGD for the biases; with λ > 0
    and μ = 0 it is ``weight_decay=λ/n`` on the weights only.
    """

    def __init__(self, eta: float, lam: float = 0.0, mu: float = 0.0, nesterov: bool = False):
        self.eta = check.check_real("eta", eta, positive=True)
        self.lam = check.check_real("lam", lam)
        self.mu = _check_fraction("mu", mu)
        if not isinstance(nesterov, bool):
            raise TypeError(f"nesterov: expected True or False, got {nesterov!r}")
        if nesterov and self.mu == 0:
            raise ValueError("nesterov: Nesterov momentum needs mu > 0, got mu = 0")
        self.nesterov = nesterov

    def __repr__(self) -> str:
        extra = f", mu={self.mu}" if self.mu else ""
        extra += ", nesterov=True" if self.nesterov else ""
        return f"SGD(eta={self.eta}, lam={self.lam}{extra})"

    def with_eta(self, eta: float) -> SGD:
        """The same optimizer with learning rate ``eta`` (its state, in
        ``train.state``, survives the swap)."""
        return type(self)(eta, self.lam, self.mu, self.nesterov)

    def prepare(self, train) -> None:
        """Allocate the velocity (zero) in ``train.state`` if momentum is on
        and it is missing; plain SGD has no state.  Only what is missing: a
        resumed checkpoint or a guard backoff hands over state to keep."""
        if self.mu:
            _state(train, "velocity")

    def step(self, train) -> None:
        be, n = train.backend, _batch(train)
        if not self.mu:
            sgd_update(be, train.net.params, train.weights_flat, train.grads,
                       train.weights_grad, eta=self.eta, lam=self.lam, n=n)
            return
        momentum_update(be, train.weights_flat, train.state["velocity"], train.weights_grad,
                        eta=self.eta, lam=self.lam, mu=self.mu, nesterov=self.nesterov, n=n)
        bias_update(be, train.biases_flat, train.biases_grad, eta=self.eta, n=n)


class Adam:
    """Adam with learning rate ``eta``, decoupled weight decay ``lam``,
    moment decay rates ``beta1``, ``beta2`` in [0, 1) and ``eps`` > 0: see
    :func:`adam_update` (weights) and :func:`bias_update` (biases).  The
    moments m, v and the step count t live on the device in ``train.state``
    (``"adam.m"``, ``"adam.v"``, ``"adam.t"``)."""

    def __init__(self, eta: float = 1e-3, lam: float = 0.0, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8):
        self.eta = check.check_real("eta", eta, positive=True)
        self.lam = check.check_real("lam", lam)
        self.beta1 = _check_fraction("beta1", beta1)
        self.beta2 = _check_fraction("beta2", beta2)
        self.eps = check.check_real("eps", eps, positive=True)
        self._t = None   # (the device count it mirrors, t): see prepare()

    def __repr__(self) -> str:
        return (f"Adam(eta={self.eta}, lam={self.lam}, beta1={self.beta1}, "
                f"beta2={self.beta2}, eps={self.eps})")

    def with_eta(self, eta: float) -> Adam:
        """The same optimizer with learning rate ``eta`` (moments and t, in
        ``train.state``, survive the swap)."""
        return type(self)(eta, self.lam, self.beta1, self.beta2, self.eps)

    def prepare(self, train) -> None:
        """Allocate m, v and t (zero) in ``train.state`` if missing, and read
        t to the host: the bias corrections 1 − βᵗ are host numbers, so the
        host keeps a copy of t and the kernel keeps the device's in step.
        One read per ``prepare`` (per schedule entry), none per step."""
        _state(train, "adam.m")
        _state(train, "adam.v")
        count = _state(train, "adam.t", 1)
        self._t = (count, int(round(train.backend.read_scalar(count))))

    def step(self, train) -> None:
        be, n = train.backend, _batch(train)
        count = train.state["adam.t"]
        if self._t is None or self._t[0] is not count:
            self._t = (count, int(round(be.read_scalar(count))))   # another state
        t = self._t[1] + 1
        self._t = (count, t)
        adam_update(be, train.weights_flat, train.state["adam.m"], train.state["adam.v"],
                    train.weights_grad, count, eta=self.eta, lam=self.lam, beta1=self.beta1,
                    beta2=self.beta2, eps=self.eps, t=t, n=n)
        bias_update(be, train.biases_flat, train.biases_grad, eta=self.eta, n=n)


def as_optimizer(hyper, where: str | None = None):
    """``eta``, ``(eta,)``, ``(eta, lam)``, ``(eta, lam, mu)`` or an
    optimizer object (:class:`SGD`, :class:`Adam`, anything with
    ``prepare``/``step``) -> an optimizer.  Errors name the offending field;
    ``where`` (e.g. ``"schedule[3]"``) is prefixed so a bad schedule entry
    says which one."""
    try:
        if hasattr(hyper, "step") and hasattr(hyper, "prepare"):
            return hyper
        if isinstance(hyper, numbers.Real) and not isinstance(hyper, bool):
            return SGD(hyper)
        if isinstance(hyper, (tuple, list)):
            if not 1 <= len(hyper) <= 3:
                raise ValueError(f"hyper: expected eta, (eta, lam) or (eta, lam, mu), got a "
                                 f"sequence of {len(hyper)} values {tuple(hyper)!r}")
            return SGD(*hyper)
        raise TypeError(f"hyper: expected eta, (eta, lam), (eta, lam, mu) or an optimizer "
                        f"such as scratchnet.SGD(...) or scratchnet.Adam(...), got {hyper!r}")
    except (TypeError, ValueError) as exc:
        if where is None:
            raise
        raise type(exc)(f"{where}: {exc}") from None
