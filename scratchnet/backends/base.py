"""The backend contract: the few things a device must do to run scratchnet.

A backend owns arrays on one device and the kernels a fully connected layer
needs.  The network code (``scratchnet/nn/layers.py``, ``scratchnet/nn/network.py``,
``scratchnet/engine/reference.py``) is written once against this class; the torch backend
(CPU, CUDA, any torch device) and the OpenCL plugin (``opencl_ext``) implement
it.  This mirrors Neanderthal's factories: swap the factory, keep the code.

Layout
------
Inside the engine **samples are columns**, as in the series: an activation
matrix has shape ``(features, n)``, a weight matrix ``(out, in)`` and a bias
``(out,)``.  Every array the network hands a kernel is contiguous (row-major)
in the backend's dtype; the public API (rows are samples) transposes once, at
the edge.

Parameters live in one flat buffer per network (``[W_0 | W_1 | ... | b_0 |
b_1 | ...]``) and each layer's ``weights``/``bias`` is a view into it, so an
optimizer, a checkpoint or an all-reduce touches one array.  Gradients use the
same layout in a second flat buffer.

Ownership and release
---------------------
``release(array)`` frees what ``zeros``/``from_host`` allocated; views are
released with their base.  ``close()`` frees everything the backend itself
holds (compiled programs, queues).  Releasing twice is harmless.

Every kernel writes only into the arguments named ``out``/``z``/``a``/``g``/
``dw``/``db`` (documented per method) and may assume its inputs are valid:
the core validates user input before any kernel runs.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np
import torch

#: Activation names every backend must implement (forward and derivative).
ACTIVATIONS = ("sigmoid", "tanh", "linear", "relu")


class Backend(abc.ABC):
    """One device, one dtype: allocation, copies, and the layer kernels.

    Subclasses set :attr:`name` (the backend family, e.g. ``"torch"``),
    :attr:`device` (the canonical device string, e.g. ``"cuda:0"``) and
    :attr:`dtype` (a floating ``torch.dtype``, the dtype vocabulary shared by
    all backends).
    """

    name: str
    device: str
    dtype: torch.dtype

    # ------------------------------------------------------------ discovery
    @classmethod
    @abc.abstractmethod
    def open(cls, device: str, dtype: torch.dtype) -> Backend:
        """Return a backend for ``device`` (a full device string such as
        ``"cuda:1"`` or ``"opencl:0:0"``).  Raise ``ValueError`` naming the
        device and what is wrong when it is not usable."""

    @classmethod
    @abc.abstractmethod
    def available_devices(cls, prefix: str) -> list[str]:
        """Device strings of this family usable right now (may be empty)."""

    @classmethod
    def unavailable_reason(cls, prefix: str) -> str | None:
        """``None`` when at least one ``prefix`` device works, else why not
        (shown in errors and in pytest skip reasons)."""
        return None if cls.available_devices(prefix) else f"no {prefix} device"

    @classmethod
    @abc.abstractmethod
    def owns(cls, array: Any) -> bool:
        """True when ``array`` is this backend's array type."""

    @classmethod
    @abc.abstractmethod
    def for_array(cls, array: Any) -> Backend:
        """A backend instance for the device and dtype ``array`` lives on
        (used by :func:`scratchnet.to_numpy` and :func:`scratchnet.amax`)."""

    # ---------------------------------------------------------------- memory
    @abc.abstractmethod
    def zeros(self, shape: tuple[int, ...]) -> Any:
        """A new zero-filled contiguous array."""

    @abc.abstractmethod
    def from_host(self, data: np.ndarray | torch.Tensor) -> Any:
        """A new contiguous device array holding a copy of ``data`` (any
        layout, any floating dtype; converted to :attr:`dtype`)."""

    @abc.abstractmethod
    def to_numpy(self, array: Any) -> np.ndarray:
        """A host copy of ``array`` (waits for pending work)."""

    @abc.abstractmethod
    def view(self, flat: Any, offset: int, shape: tuple[int, ...]) -> Any:
        """A contiguous view of ``prod(shape)`` elements of the 1-D array
        ``flat`` starting at element ``offset``; writes through."""

    @abc.abstractmethod
    def copy_(self, dst: Any, src: Any) -> None:
        """dst := src (same shape, same backend)."""

    def load_columns(self, dst: Any, data: Any) -> None:
        """dst := dataᵀ for rows-are-samples ``data`` (validated: numpy,
        torch tensor or this backend's array) and ``dst`` (features, n):
        the copy of new targets into a training network.  The default
        stages a transposed copy; a backend that can copy strided host data
        directly should, so that the copy allocates nothing on the device."""
        if isinstance(data, np.ndarray):
            staged = self.from_host(data.T)
        elif isinstance(data, torch.Tensor):
            staged = self.from_host(data.t())
        else:
            staged = self.transpose(data)
        self.copy_(dst, staged)
        self.release(staged)

    @abc.abstractmethod
    def transpose(self, array: Any) -> Any:
        """A new contiguous array holding ``array``ᵀ (2-D)."""

    def available_memory(self) -> int | None:
        """Bytes the device can still allocate now, or None when unknown:
        networks refuse, before allocating, what would not fit."""
        return None

    def release(self, array: Any) -> None:  # noqa: B027 - optional hook
        """Free ``array`` now (no-op where the runtime frees on last use)."""

    def synchronize(self) -> None:  # noqa: B027 - optional hook
        """Wait until all queued work on the device has finished."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free what the backend itself holds (programs, queues)."""

    # --------------------------------------------------------------- kernels
    def bias_operand(self, b) -> Any:
        """The form of the bias ``b`` (out,) that :meth:`linear_forward`
        takes, made once per layer (e.g. a column view); it must see later
        in-place updates of ``b``.  Default: ``b`` itself."""
        return b

    @abc.abstractmethod
    def linear_forward(self, z, w, b, a_prev, bias_sign: float) -> None:
        """z := w · a_prev + bias_sign · b 1ᵀ.

        ``w`` (out, in), ``a_prev`` (in, n), ``b`` what :meth:`bias_operand`
        returned for the (out,) bias, ``z`` (out, n).
        ``bias_sign`` is +1 (standard) or -1 (the series' z = W a − b)."""

    @abc.abstractmethod
    def activation_forward(self, name: str, z, a) -> None:
        """a := f(z), elementwise; ``a`` may be the same array as ``z``."""

    @abc.abstractmethod
    def activation_backward(self, name: str, a, g) -> None:
        """g := g ⊙ f'(z), in place, with f' written through a = f(z):
        sigmoid a(1 − a), tanh 1 − a², linear 1, relu [a > 0]."""

    def linear_activation_forward(self, name: str, a, w, b, a_prev, bias_sign: float) -> None:
        """a := f(w · a_prev + bias_sign · b 1ᵀ), z not kept.

        Optional fusion of :meth:`linear_forward` and
        :meth:`activation_forward` for callers whose z is dead once a is
        computed (a training layer's z only receives ∇_a C later).  A backend
        that launches kernels (OpenCL) applies f to the accumulators before
        storing them, saving a pass over z and a launch per layer; this
        default just calls the two methods."""
        self.linear_forward(a, w, b, a_prev, bias_sign)
        if name != "linear":
            self.activation_forward(name, a, a)

    @abc.abstractmethod
    def weight_gradient(self, dw, db, delta, a_prev) -> None:
        """dw := δ · a_prevᵀ (out, in);  db := Σ_columns δ (out,)."""

    @abc.abstractmethod
    def input_gradient(self, g_prev, w, delta) -> None:
        """g_prev := wᵀ · δ  (in, n)."""

    @abc.abstractmethod
    def subtract(self, out, a, y) -> None:
        """out := a − y, elementwise; ``out`` may be ``a``."""

    @abc.abstractmethod
    def sum_squares(self, x, out) -> None:
        """out := Σ x², written on the device into the 1-element array
        ``out`` (no host synchronisation)."""

    @abc.abstractmethod
    def read_scalar(self, array) -> float:
        """The host value of a 1-element array (synchronises)."""

    @abc.abstractmethod
    def axpy_(self, y, alpha: float, x) -> None:
        """y := y + alpha · x, elementwise (``x`` may be ``y``)."""

    @abc.abstractmethod
    def amax(self, array) -> float:
        """max |array| as a Python float (NaN if any entry is NaN)."""

    @abc.abstractmethod
    def all_finite(self, array) -> bool:
        """True when no entry is NaN or ±inf."""

    # ------------------------------------------ beyond the series (optional)
    # Kernels for classification, mini-batches and the optimizers after part
    # 16.  They are not abstract, so a backend written before them still
    # imports and runs everything the series needs; calling one it lacks
    # raises NotImplementedError naming the op and the backend.
    def _missing(self, op: str):
        return NotImplementedError(
            f"{op}: not implemented by the {getattr(self, 'name', type(self).__name__)} backend "
            f"({type(self).__module__}.{type(self).__name__}) on "
            f"{getattr(self, 'device', '?')}; it is needed for elu/softmax/cross_entropy, "
            f"mini-batches (scratchnet.train) and momentum/Adam")

    def elu_forward(self, z, a) -> None:
        """a := elu(z) = z if z > 0 else eᶻ − 1, elementwise (α = 1); ``a``
        may be ``z``."""
        raise self._missing("elu_forward")

    def elu_backward(self, a, g) -> None:
        """g := g ⊙ elu'(z), in place, through a = elu(z): 1 if a > 0 else
        a + 1 (since eᶻ = a + 1 there)."""
        raise self._missing("elu_backward")

    def softmax_forward(self, z, a, work) -> None:
        """a := softmax of every column of z (features are rows), computed
        stably as e^(z − max) / Σ e^(z − max).  ``work`` is an (n,) scratch
        array; ``a`` may be ``z``."""
        raise self._missing("softmax_forward")

    def softmax_backward(self, a, g, work) -> None:
        """g := a ⊙ (g − 1 (aᵀg)) per column, in place: the softmax Jacobian
        diag(a) − a aᵀ applied to g without forming it.  ``work`` is an (n,)
        scratch array."""
        raise self._missing("softmax_backward")

    def cross_entropy_sum(self, scratch, a, y, out, binary: bool) -> None:
        """out := −Σ y ln a (``binary`` False: softmax outputs) or
        −Σ [y ln a + (1 − y) ln(1 − a)] (``binary``: sigmoid outputs), summed
        over every entry into the 1-element ``out``, with each logarithm
        floored at −100 (torch's BCE convention) so a confidently wrong
        sample costs 100, not inf.  ``scratch`` (shape of a) may be
        overwritten."""
        raise self._missing("cross_entropy_sum")

    def momentum_update(self, w, v, g, *, lr: float, decay: float, mu: float,
                        nesterov: bool) -> None:
        """Elementwise over the flat weights (see ``scratchnet/nn/optim.py``):
        v := μ v − lr g;  w := w − decay·w + v (plain) or
        w := w − decay·w + μ v − lr g (Nesterov), with v the updated one.
        The decay is added to the step, not applied as (1 − decay)·w."""
        raise self._missing("momentum_update")

    def adam_update(self, w, m, v, g, count, *, scale: float, beta1: float, beta2: float,
                    eps: float, step: float, sqrt_c2: float, decay: float) -> None:
        """Elementwise over the flat weights (see ``scratchnet/nn/optim.py``),
        with ĝ = scale·g:  m := β₁m + (1 − β₁)ĝ;  v := β₂v + (1 − β₂)ĝ²;
        w := w − decay·w − step · m / (√v / sqrt_c2 + ε); and the 1-element
        ``count`` := count + 1 (Adam's t, kept on the device with m and v so
        that checkpoints and the guard's snapshots carry it).  ``g`` may be
        overwritten."""
        raise self._missing("adam_update")

    def index_buffer(self, size: int) -> Any:
        """A new zero-filled 1-D device array of ``size`` integer indices
        (the backend picks the integer type)."""
        raise self._missing("index_buffer")

    def load_index(self, dst, host: np.ndarray) -> None:
        """dst := host, an integer numpy array of dst's length (host → device,
        no allocation on the device)."""
        raise self._missing("load_index")

    def gather_columns(self, out, src, index) -> None:
        """out[:, j] := src[:, index[j]] for every column j of ``out``;
        ``index`` is an index array (or a :meth:`view` of one) of length
        out.shape[1]."""
        raise self._missing("gather_columns")
