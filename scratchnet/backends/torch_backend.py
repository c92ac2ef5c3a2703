"""The torch backend: torch tensors as plain device arrays (CPU, CUDA, meta).

Every kernel is one or two ATen calls with ``out=`` so nothing is allocated in
the epoch loop; autograd is never involved (the library runs under
``torch.no_grad()`` and no tensor here has ``requires_grad``).  The same code
serves every torch device: nothing below assumes the CPU.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from .base import Backend

_aten = torch.ops.aten


def _host_available() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else the free physical pages;
    None where neither is known."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


class TorchBackend(Backend):
    """Backend over ``torch.Tensor`` on one torch device."""

    name = "torch"

    def __init__(self, device: torch.device, dtype: torch.dtype):
        self.torch_device = device
        self.device = str(device)
        self.dtype = dtype
        # −1 as a 0-dim device tensor: torch.add(tensor, tensor, alpha=) is
        # the one-pass form of 2s − 1 (see activation_forward's tanh).
        # (None for the non-float arrays for_array may be handed, e.g. by amax.)
        self._minus_one = torch.full((), -1.0, dtype=dtype, device=device) if (
            dtype.is_floating_point) else None

    # ------------------------------------------------------------ discovery
    @classmethod
    def open(cls, device: str, dtype: torch.dtype) -> TorchBackend:
        try:
            dev = torch.device(device)
        except RuntimeError as exc:
            raise ValueError(f"device: {device!r} is not a torch device ({exc})") from None
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise ValueError(
                    f"device: {device!r} asked for CUDA, but torch.cuda.is_available() is "
                    f"False (torch {torch.__version__}, built for CUDA {torch.version.cuda})"
                )
            index = torch.cuda.current_device() if dev.index is None else dev.index
            count = torch.cuda.device_count()
            if not 0 <= index < count:
                raise ValueError(
                    f"device: {device!r} names CUDA device {index}, but only {count} "
                    f"exist (cuda:0 .. cuda:{count - 1})"
                )
            dev = torch.device("cuda", index)
        elif dev.type not in ("cpu", "meta"):
            raise ValueError(f"device: {device!r} is not served by the torch backend")
        return cls(dev, dtype)

    @classmethod
    def available_devices(cls, prefix: str) -> list[str]:
        if prefix == "cuda":
            return [f"cuda:{i}" for i in range(torch.cuda.device_count())] if (
                torch.cuda.is_available()) else []
        return [prefix] if prefix in ("cpu", "meta") else []

    @classmethod
    def unavailable_reason(cls, prefix: str) -> str | None:
        if prefix == "cuda" and not torch.cuda.is_available():
            return "CUDA is not available (torch.cuda.is_available() is False)"
        return super().unavailable_reason(prefix)

    @classmethod
    def owns(cls, array: Any) -> bool:
        return isinstance(array, torch.Tensor)

    @classmethod
    def for_array(cls, array):
        return cls(array.device, array.dtype)

    # ---------------------------------------------------------------- memory
    def zeros(self, shape):
        return torch.zeros(shape, dtype=self.dtype, device=self.torch_device)

    def from_host(self, data):
        if isinstance(data, np.ndarray):
            data = torch.from_numpy(np.ascontiguousarray(data))
        out = torch.empty(tuple(data.shape), dtype=self.dtype, device=self.torch_device)
        out.copy_(data)  # converts dtype, device and layout in one copy
        return out

    def to_numpy(self, array):
        return array.detach().to("cpu").numpy().copy()

    def view(self, flat, offset, shape):
        size = 1
        for s in shape:
            size *= s
        return flat[offset:offset + size].view(shape)

    def copy_(self, dst, src):
        dst.copy_(src)

    def load_columns(self, dst, data):
        # copy_ reads strided, converts dtype and crosses devices in one call
        if isinstance(data, np.ndarray):
            data = torch.from_numpy(data)
        dst.copy_(data.t())

    def available_memory(self):
        if self.torch_device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.torch_device)
            return int(free)
        if self.torch_device.type == "cpu":
            return _host_available()
        return None   # meta: nothing is allocated

    def transpose(self, array):
        return array.t().contiguous()

    def synchronize(self):
        if self.torch_device.type == "cuda":
            torch.cuda.synchronize(self.torch_device)

    # --------------------------------------------------------------- kernels
    def bias_operand(self, b):
        # The (out, 1) column view addmm broadcasts over the n samples, made
        # once per layer rather than once per call (an unsqueeze is a whole
        # dispatcher round trip, ~1 µs, on the n = 100 critical path).
        return b.unsqueeze(1)

    def linear_forward(self, z, w, b, a_prev, bias_sign):
        torch.addmm(b, w, a_prev, beta=bias_sign, out=z)

    def activation_forward(self, name, z, a):
        if name == "sigmoid":
            torch.sigmoid(z, out=a)
        elif name == "tanh":
            # tanh z = 2σ(2z) − 1, exact in real arithmetic; in float32 the
            # absolute error is below 2.4e-7 (one ulp of 1).  ATen's CPU
            # tanh costs several sigmoids per element, so three light passes
            # beat one heavy one (docs/performance.md; benchmark.py --mode aten).
            # (z + z, not 2.0 * z: a Python scalar operand is wrapped in a
            # freshly allocated tensor on every call.)
            torch.add(z, z, out=a)
            torch.sigmoid(a, out=a)
            torch.add(self._minus_one, a, alpha=2.0, out=a)
        elif name == "relu":
            torch.clamp_min(z, 0.0, out=a)
        elif a is not z:  # linear
            a.copy_(z)

    def activation_backward(self, name, a, g):
        # The fused ATen derivative kernels read f(z) = a, as the series'
        # `prime` does, and write g ⊙ f'(z) back into g in one pass.
        if name == "sigmoid":
            _aten.sigmoid_backward.grad_input(g, a, grad_input=g)
        elif name == "tanh":
            _aten.tanh_backward.grad_input(g, a, grad_input=g)
        elif name == "relu":
            _aten.threshold_backward.grad_input(g, a, 0.0, grad_input=g)
        # linear: f' = 1, g is already δ

    def weight_gradient(self, dw, db, delta, a_prev):
        torch.mm(delta, a_prev.t(), out=dw)
        # db = δ 1, the series' mv! with a ones vector: torch.sum over ~10^5
        # columns and more allocates a scratch buffer on every call.
        torch.mv(delta, self._ones(delta.shape[1]), out=db)

    def input_gradient(self, g_prev, w, delta):
        torch.mm(w.t(), delta, out=g_prev)

    def subtract(self, out, a, y):
        torch.sub(a, y, out=out)

    def sum_squares(self, x, out):
        # mv of the (1, N) row by itself: torch.dot(out=) allocates a temporary.
        flat = x.view(-1)
        torch.mv(flat.view(1, -1), flat, out=out)

    def read_scalar(self, array):
        return float(array.view(()).item())

    def axpy_(self, y, alpha, x):
        y.add_(x, alpha=alpha)

    def amax(self, array):
        if array.numel() == 0:
            return 0.0
        return float(torch.max(torch.abs(array)).item())

    def all_finite(self, array):
        return bool(torch.isfinite(array).all().item())

    # ------------------------------------------ beyond the series
    def elu_forward(self, z, a):
        _aten.elu.out(z, 1.0, 1.0, 1.0, out=a)

    def elu_backward(self, a, g):
        # is_result=True: the derivative is read through the output, a + 1.
        _aten.elu_backward.grad_input(g, 1.0, 1.0, 1.0, True, a, grad_input=g)

    def softmax_forward(self, z, a, work):
        # Column-wise: subtract each column's max so no e^z overflows.
        torch.amax(z, dim=0, out=work)
        torch.sub(z, work, out=a)
        a.exp_()
        torch.sum(a, dim=0, out=work)
        a.div_(work)

    def softmax_backward(self, a, g, work):
        g.mul_(a)                            # a ⊙ g
        torch.sum(g, dim=0, out=work)        # aᵀg per column
        g.addcmul_(a, work, value=-1.0)      # a ⊙ g − a (aᵀg)

    def cross_entropy_sum(self, scratch, a, y, out, binary):
        # Our own floored logs, not aten's BCE kernel: that kernel refuses
        # inputs outside [0, 1] (a RuntimeError on the CPU, a device-side
        # assert that poisons the context on CUDA), while an output that blew
        # up must give a NaN cost for the divergence guard to see.
        # clamp_min keeps NaN, so NaN reaches the sum.
        flat, yrow = scratch.view(-1), y.view(1, -1)
        if binary:
            torch.neg(a, out=scratch)
            scratch.log1p_().clamp_min_(-100.0)              # ln(1 − a), floored
            scratch.addcmul_(scratch, y, value=-1.0)         # (1 − y) ln(1 − a)
            torch.sum(flat, dim=0, keepdim=True, out=out)
            torch.log(a, out=scratch)
            scratch.clamp_min_(-100.0)                       # ln a, floored
            out.addmv_(yrow, flat)                           # + Σ y ln a
        else:
            torch.log(a, out=scratch)
            scratch.clamp_min_(-100.0)
            torch.mv(yrow, flat, out=out)
        out.neg_()

    def _ones(self, n: int):
        """A ones vector of length ``n``, made on first use and kept."""
        cache = self.__dict__.setdefault("_ones_cache", {})
        ones = cache.get(n)
        if ones is None:
            ones = cache[n] = torch.ones(n, dtype=self.dtype, device=self.torch_device)
        return ones

    def _k(self, value: float):
        """``value`` in a reused 1-element tensor: a Python scalar in
        ``mul_``/``div_``/``add_`` is wrapped into a fresh tensor on every
        call (an allocation per op per step); this register is filled
        instead.  In-order execution makes reusing it safe."""
        k = self.__dict__.get("_register")
        if k is None:
            k = self._register = torch.empty(1, dtype=self.dtype, device=self.torch_device)
        return k.fill_(value)

    def momentum_update(self, w, v, g, *, lr, decay, mu, nesterov):
        v.mul_(self._k(mu)).add_(g, alpha=-lr)     # v := μv − lr g
        # g is free now: build the whole step there and add it to w once.
        if nesterov:
            g.mul_(self._k(-lr)).add_(v, alpha=mu)  # μv − lr g
        else:
            g.copy_(v)
        if decay:
            g.add_(w, alpha=-decay)
        w.add_(g)

    def adam_update(self, w, m, v, g, count, *, scale, beta1, beta2, eps, step, sqrt_c2,
                    decay):
        count.add_(self._k(1.0))                             # t
        g.mul_(self._k(scale))                               # ĝ
        m.mul_(self._k(beta1)).add_(g, alpha=1.0 - beta1)
        v.mul_(self._k(beta2)).addcmul_(g, g, value=1.0 - beta2)
        torch.sqrt(v, out=g)                                 # g is free now
        g.div_(self._k(sqrt_c2)).add_(self._k(eps))          # √v / √c₂ + ε
        torch.div(m, g, out=g)
        g.mul_(self._k(-step))
        if decay:
            g.add_(w, alpha=-decay)
        w.add_(g)                                            # w rounded once

    def index_buffer(self, size):
        return torch.zeros(size, dtype=torch.int64, device=self.torch_device)

    def load_index(self, dst, host):
        dst.copy_(torch.from_numpy(host))

    def gather_columns(self, out, src, index):
        torch.index_select(src, 1, index, out=out)
