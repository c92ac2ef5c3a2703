"""The OpenCL backend: the contract's kernels launched on ``pyopencl`` arrays.

Discovery and tuning are in :mod:`opencl_ext.devices`, the shared context and
programs in :mod:`opencl_ext.context`, allocation and release in
:mod:`opencl_ext.memory`, the kernel sources in ``opencl_ext/kernels``.
Every local size is fitted to the device's and the kernel's work-group
maxima (:attr:`OpenCLBackend.limits`), which a caller may lower to simulate
a smaller device.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

try:
    import pyopencl as cl
    import pyopencl.array as cla
except ImportError as exc:  # the registry turns this into a ValueError for device="opencl"
    raise ImportError(
        f"opencl_ext needs pyopencl ({exc}); install the OpenCL extra, which also brings "
        f"PoCL, a CPU OpenCL platform: pip install 'scratchnet[opencl]' "
        f"(pyopencl + pocl-binary-distribution)") from exc

from scratchnet.backends.base import ACTIVATIONS, Backend

from . import context, devices, memory
from .devices import PREFIX, Limits
from .memory import ref

#: Activation codes shared with kernels/common.cl.
ACT = {"linear": 0, "sigmoid": 1, "tanh": 2, "relu": 3}
if set(ACT) != set(ACTIVATIONS):
    raise ImportError(f"opencl_ext: kernel activation codes {sorted(ACT)} do not match the "
                      f"contract's {sorted(ACTIVATIONS)}")

_DTYPES = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64)}
_TORCH_DTYPES = {v: k for k, v in _DTYPES.items()}

#: Preferred local sizes, shrunk per device and kernel by devices.group_1d/2d.
_WG = 64        # 1-D launches (elementwise, products)
_TILE = 8       # 2-D launches (transpose, gather): up to 8 x 8
_TREE = 256     # reduce_tree's work-groups


class OpenCLBackend(Backend):
    """Backend over ``pyopencl.array.Array`` on one OpenCL device."""

    name = "opencl"

    #: Limits fields applied to every backend opened without ``limits=``
    #: (tests use it to run whole networks as on a smaller device).
    limit_overrides: dict[str, Any] = {}

    def __init__(self, state: context.DeviceState, dtype: torch.dtype, counted: bool,
                 limits: Limits):
        self._state = state
        self.device = state.name
        self.dtype = dtype
        self.np_dtype = _DTYPES[dtype]
        self.limits = limits
        self._real = self.np_dtype.type
        self._itemsize = self.np_dtype.itemsize
        self._counted = counted
        self._origin = None  # for_array: (context, queue) of the array it was made for
        self._closed = False
        self._k = None
        self._scratch = None
        self._scalar = None
        self._dummy = None
        self._local: dict = {}  # kernel name (and rank) -> local size, see _group

    # ------------------------------------------------------------ discovery
    @classmethod
    def open(cls, device: str, dtype: torch.dtype, *, limits=None) -> OpenCLBackend:
        """``limits``: :class:`~opencl_ext.devices.Limits` fields to override
        (a dict) or a whole ``Limits``, e.g. ``{"max_work_group_size": 16}``."""
        if not isinstance(device, str):
            raise TypeError(f"device: expected a device string such as 'opencl' or "
                            f"'opencl:0:0', got {device!r}")
        if dtype not in _DTYPES:
            raise ValueError(f"dtype: the OpenCL backend supports torch.float32 and "
                             f"torch.float64, got {dtype}")
        name, dev = devices.resolve(device)
        lim = Limits.of(dev, cls.limit_overrides if limits is None else limits)
        devices.check_dtype(name, dev, lim, _DTYPES[dtype], "dtype")
        backend = cls(context.acquire(name, dev), dtype, counted=True, limits=lim)
        try:
            backend._kernels()  # compile now (once per process), not inside the first epoch
        except BaseException:
            backend.close()
            raise
        return backend

    @classmethod
    def available_devices(cls, prefix: str) -> list[str]:
        return list(devices.usable()) if prefix == PREFIX else []

    @classmethod
    def unavailable_reason(cls, prefix: str) -> str | None:
        if prefix != PREFIX:
            return f"the OpenCL backend serves 'opencl' devices, not {prefix!r}"
        return devices.unavailable_reason()

    @classmethod
    def owns(cls, array: Any) -> bool:
        return isinstance(array, cla.Array)

    @classmethod
    def for_array(cls, array: Any, *, limits=None) -> OpenCLBackend:
        """A backend on ``array``'s context and queue.  It borrows the state
        of a live :meth:`open` backend when one uses that context (no
        compile); otherwise it wraps the foreign context privately and builds
        kernels only if one is called.  It holds no reference count, so it
        needs no ``close()``."""
        if not isinstance(array, cla.Array):
            raise TypeError(f"array: expected a pyopencl.array.Array, got "
                            f"{type(array).__name__}")
        if array.dtype not in _TORCH_DTYPES:
            raise TypeError(f"array: expected float32 or float64, got {array.dtype}")
        ctx = array.context
        state = context.find(ctx)
        if state is None:
            dev = ctx.devices[0]
            state = context.borrow(devices.name_of(dev), dev, ctx, array.queue)
        lim = Limits.of(state.device, cls.limit_overrides if limits is None else limits)
        devices.check_dtype(state.name, state.device, lim, array.dtype, "array")
        backend = cls(state, _TORCH_DTYPES[array.dtype], counted=False, limits=lim)
        backend._origin = (ctx, array.queue)
        return backend

    # ------------------------------------------------------------- lifetime
    def close(self) -> None:
        """Free this backend's scratch buffers and, when it is the last open
        backend on its device, the device's queue, programs and context.
        Arrays stay valid until released or garbage collected."""
        if self._closed:
            return
        self._closed = True
        for buf in (self._scratch, self._scalar, self._dummy):
            if buf is not None:
                buf.release()
        self._scratch = self._scalar = self._dummy = None
        self._k = None
        state, self._state = self._state, None
        if self._counted:
            context.release(state)
        elif not state.owned:
            state.teardown()

    def __enter__(self) -> OpenCLBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        closed = ", closed" if self._closed else ""
        return f"OpenCLBackend({self.device!r}, {self.dtype}{closed})"

    @property
    def queue(self):
        """The in-order command queue every operation of this backend uses."""
        return self._live_state().queue

    @property
    def context(self):
        return self._live_state().context

    def _live_state(self) -> context.DeviceState:
        state = self._state
        if state is None:
            raise ValueError(f"backend: {self!r} is closed")
        if state.closed:
            if self._origin is None:
                raise ValueError(f"backend: the device state of {self!r} was torn down")
            # Borrowed from open() backends that have all closed since: go on
            # with a private state on the array's own context and queue.
            state = self._state = context.borrow(state.name, state.device, *self._origin)
            self._k = None
        return state

    def _kernels(self):
        k = self._k
        if k is None:
            state = self._live_state()
            tune = devices.tuning(state.device, self.limits, self.np_dtype)
            k = self._k = state.kernels(self.np_dtype, tune)
            self._vw, self._tm = tune["VW"], tune["TM"]
            self._ti, self._tk = tune["TI"], tune["TK"]
            self._min_items = tune["min_items"]
            self._cpu = self.limits.cpu
            self._local = {}
        return k

    # ----------------------------------------------------------- launching
    def _launch(self, name: str, gsize: tuple, lsize: tuple | None, *args) -> None:
        """Enqueue kernel ``name`` (the one place every kernel is launched)."""
        getattr(self._kernels(), name)(self.queue, gsize, lsize, *args)

    def _cap(self, name: str) -> int:
        """The largest work-group kernel ``name`` may have here."""
        return min(self.limits.max_work_group_size, self._kernels().group_max(name))

    def _group(self, name: str, want: int = _WG) -> int:
        """1-D local size for kernel ``name`` (cached per backend)."""
        size = self._local.get(name)
        if size is None:
            size = self._local[name] = devices.group_1d(want, self._cap(name), self.limits)
        return size

    def _grid1(self, name: str, items: int) -> tuple[tuple[int], tuple[int]]:
        """Global and local size for ``items`` work-items of kernel ``name``."""
        wg = self._group(name)
        return (_up(items, wg),), (wg,)

    def _grid2(self, name: str, cols: int, rows: int) -> tuple[tuple, tuple]:
        """A 2-D grid of at least cols x rows work-items for kernel ``name``."""
        key = (name, 2)
        local = self._local.get(key)
        if local is None:
            local = self._local[key] = devices.group_2d(_TILE, self._cap(name), self.limits)
        return (_up(cols, local[0]), _up(rows, local[1])), local

    # ---------------------------------------------------------------- memory
    def zeros(self, shape):
        return memory.zeros(self.queue, _shape(shape), self.np_dtype)

    def from_host(self, data):
        if isinstance(data, torch.Tensor):
            host = data.detach().to("cpu", self.dtype).contiguous().numpy()
        elif isinstance(data, np.ndarray):
            host = np.ascontiguousarray(data, dtype=self.np_dtype)
        else:
            raise TypeError(f"data: expected a numpy array or a torch tensor, got "
                            f"{type(data).__name__}")
        array = memory.allocate(self.queue, tuple(host.shape), self.np_dtype)
        if array.size:
            cl.enqueue_copy(self.queue, array.base_data, host, is_blocking=True)
        return array

    def to_numpy(self, array):
        host = np.empty(array.shape, dtype=array.dtype)
        if array.size:
            buf, off = ref(array)
            cl.enqueue_copy(array.queue, host, buf, src_offset=off * array.dtype.itemsize,
                            is_blocking=True)
        return host

    def view(self, flat, offset, shape):
        return memory.view(flat, offset, _shape(shape))

    def copy_(self, dst, src):
        if dst.size:
            dbuf, doff = ref(dst)
            sbuf, soff = ref(src)
            size = self._itemsize
            cl.enqueue_copy(self.queue, dbuf, sbuf, byte_count=dst.size * size,
                            src_offset=soff * size, dst_offset=doff * size)

    def transpose(self, array):
        rows, cols = array.shape
        out = memory.allocate(self.queue, (cols, rows), self.np_dtype)
        if out.size:
            self._launch("transpose", *self._grid2("transpose", cols, rows), rows, cols,
                         *ref(array), *ref(out))
        return out

    def available_memory(self):
        # the device's global memory, which all of a network's buffers share
        return int(self._live_state().device.global_mem_size)

    def release(self, array):
        memory.release(array)

    def synchronize(self):
        self.queue.finish()

    # -------------------------------------------------------- device buffers
    def _scratch_buffer(self, elements: int):
        """A device buffer of at least ``elements`` elements for partial sums,
        kept between calls (grown as needed, freed by close())."""
        nbytes = max(elements, 1) * self._itemsize
        if self._scratch is None or self._scratch.size < nbytes:
            if self._scratch is not None:
                self._scratch.release()
            self._scratch = cl.Buffer(self.context, cl.mem_flags.READ_WRITE,
                                      max(nbytes, 4096))
        return self._scratch

    def _scalar_buffer(self):
        if self._scalar is None:
            self._scalar = cl.Buffer(self.context, cl.mem_flags.READ_WRITE, self._itemsize)
        return self._scalar

    def _dummy_buffer(self):
        """A small buffer passed for kernel arguments that are not read."""
        if self._dummy is None:
            self._dummy = cl.Buffer(self.context, cl.mem_flags.READ_ONLY, 64)
        return self._dummy

    # ---------------------------------------------------------- composites
    def _gemm(self, M, K, n, A, a_off, a_rs, a_cs, B, bias, bias_sign, act, C):
        """C := f(A·B + bias_sign·bias 1ᵀ), see kernels/matmul.cl."""
        if M == 0 or n == 0:
            return
        self._kernels()
        dummy = self._dummy_buffer()
        bbuf, boff = ref(B) if K else (dummy, 0)
        biasbuf, biasoff = ref(bias) if bias is not None else (dummy, 0)
        wg = self._group("small_gemm")
        self._launch("small_gemm", (_up(-(-n // self._vw), wg), -(-M // self._tm)), (wg, 1),
                     M, K, n, A if K else dummy, a_off, a_rs, a_cs, bbuf, boff, biasbuf,
                     biasoff, bias_sign, act, *ref(C))

    def _reduce(self, op: int, x, out_buf, out_off: int) -> None:
        """out_buf[out_off] := Σ x² (op 0), max |x| (op 1) or Σ x (op 2), on the device."""
        self._kernels()
        n = x.size
        xbuf, xoff = ref(x) if n else (self._dummy_buffer(), 0)
        if not self._cpu:
            return self._reduce_tree(op, n, xbuf, xoff, out_buf, out_off)
        # CPU layout: few long contiguous chunks (a core streams one each).
        chunk = _up(max(4096, -(-n // self._min_items)), self._vw)
        parts = max(1, -(-n // chunk))
        if parts == 1:
            self._launch("reduce_partial", (1,), (1,), op, n, chunk, xbuf, xoff, 1,
                         out_buf, out_off, self._dummy_buffer())
            return
        scratch = self._scratch_buffer(parts)
        self._launch("reduce_partial", (parts,), (1,), op, n, chunk, xbuf, xoff, 0,
                     out_buf, out_off, scratch)
        self._launch("reduce_finish", (1,), (1,), op, parts, scratch, out_buf, out_off)

    def _reduce_tree(self, op, n, xbuf, xoff, out_buf, out_off) -> None:
        """The GPU layout: many work-groups, strided loads, a tree per group."""
        cap = min(self._cap("reduce_tree"), self.limits.local_mem_size // self._itemsize)
        wg = devices.group_1d(_TREE, cap, self.limits)
        local = cl.LocalMemory(wg * self._itemsize)
        # Enough groups to fill the device, each work-item still summing a few.
        groups = max(1, min(-(-n // (4 * wg)), 8 * self.limits.compute_units, wg))
        if groups == 1:
            self._launch("reduce_tree", (wg,), (wg,), op, n, xbuf, xoff, out_buf, out_off,
                         local)
            return
        scratch = self._scratch_buffer(groups)
        self._launch("reduce_tree", (groups * wg,), (wg,), op, n, xbuf, xoff, scratch, 0,
                     local)
        # The groups' results are combined as they are: squares are summed, not squared.
        self._launch("reduce_tree", (wg,), (wg,), 2 if op == 0 else op, groups, scratch, 0,
                     out_buf, out_off, local)

    # --------------------------------------------------------------- kernels
    def linear_forward(self, z, w, b, a_prev, bias_sign):
        out, inp = w.shape
        wbuf, woff = ref(w) if w.size else (None, 0)
        self._gemm(out, inp, z.shape[1], wbuf, woff, inp, 1, a_prev, b, bias_sign, 0, z)

    def linear_activation_forward(self, name, a, w, b, a_prev, bias_sign):
        """a := f(w·a_prev + bias_sign·b 1ᵀ) in one kernel: the activation is
        applied to the accumulators before they are stored, so z is never
        written and the pass over it disappears (see the base class)."""
        out, inp = w.shape
        wbuf, woff = ref(w) if w.size else (None, 0)
        self._gemm(out, inp, a.shape[1], wbuf, woff, inp, 1, a_prev, b, bias_sign,
                   _act(name), a)

    def activation_forward(self, name, z, a):
        act = _act(name)
        if act == 0 and a is z:
            return
        n = z.size
        if n:
            self._launch("activation_forward",
                         *self._grid1("activation_forward", -(-n // self._vw)),
                         n, act, *ref(z), *ref(a))

    def activation_backward(self, name, a, g):
        act = _act(name)
        n = g.size
        if act and n:
            self._launch("activation_backward",
                         *self._grid1("activation_backward", -(-n // self._vw)),
                         n, act, *ref(a), *ref(g))

    def weight_gradient(self, dw, db, delta, a_prev):
        out, n = delta.shape
        inp = a_prev.shape[0]
        if n == 0:
            for arr in (dw, db):
                if arr.size:
                    buf, off = ref(arr)
                    cl.enqueue_fill_buffer(self.queue, buf, self._real(0),
                                           off * self._itemsize, arr.nbytes)
            return
        self._kernels()
        vw, ti, tk = self._vw, self._ti, self._tk
        tiles = -(-out // ti) * -(-max(inp, 1) // tk)
        if self._cpu:
            # Contiguous chunks, one work-item per work-group (a core loops).
            parts = max(1, -(-self._min_items // tiles))
            span = _up(max(-(-n // parts), 16 * vw), vw)
            parts = -(-n // span)
            gsize, lsize = (parts, tiles), (1, 1)
        else:
            # Strided parts (span = their count), at least 16 columns each.
            parts = span = max(1, min(-(-self._min_items // tiles), -(-n // (16 * vw))))
            wg = devices.pow2_at_most(min(self._group("wgrad_partial"), parts))
            gsize, lsize = (_up(parts, wg), tiles), (wg, 1)
        dbuf, doff = ref(delta)
        abuf, aoff = ref(a_prev) if inp else (dbuf, doff)
        dwbuf, dwoff = ref(dw) if dw.size else (self._dummy_buffer(), 0)
        dbbuf, dboff = ref(db)
        if parts == 1:
            self._launch("wgrad_partial", gsize, lsize, out, inp, n, span, dbuf, doff,
                         abuf, aoff, 1, dwbuf, dwoff, dbbuf, dboff, self._dummy_buffer())
            return
        scratch = self._scratch_buffer(parts * out * (inp + 1))
        self._launch("wgrad_partial", gsize, lsize, out, inp, n, span, dbuf, doff,
                     abuf, aoff, 0, dwbuf, dwoff, dbbuf, dboff, scratch)
        self._launch("wgrad_finish", *self._grid1("wgrad_finish", out * (inp + 1)), out, inp,
                     parts, scratch, dwbuf, dwoff, dbbuf, dboff)

    def input_gradient(self, g_prev, w, delta):
        out, inp = w.shape
        wbuf, woff = ref(w) if w.size else (None, 0)
        self._gemm(inp, out, delta.shape[1], wbuf, woff, 1, inp, delta, None, 0, 0, g_prev)

    def subtract(self, out, a, y):
        n = out.size
        if n:
            self._launch("axpby", *self._grid1("axpby", -(-n // self._vw)), n, -1.0,
                         *ref(a), *ref(y), *ref(out))

    def sum_squares(self, x, out):
        self._reduce(0, x, *ref(out))

    def read_scalar(self, array):
        host = np.empty(1, dtype=array.dtype)
        buf, off = ref(array)
        cl.enqueue_copy(array.queue, host, buf, src_offset=off * array.dtype.itemsize,
                        is_blocking=True)
        return float(host[0])

    def axpy_(self, y, alpha, x):
        n = y.size
        if n:
            ybuf, yoff = ref(y)
            self._launch("axpby", *self._grid1("axpby", -(-n // self._vw)), n, alpha,
                         ybuf, yoff, *ref(x), ybuf, yoff)

    def amax(self, array):
        if array.size == 0:
            return 0.0
        self._reduce(1, array, self._scalar_buffer(), 0)
        host = np.empty(1, dtype=self.np_dtype)
        cl.enqueue_copy(self.queue, host, self._scalar_buffer(), is_blocking=True)
        return float(host[0])

    def all_finite(self, array):
        return array.size == 0 or math.isfinite(self.amax(array))

    # ------------------------------------------ beyond the series (beyond.cl)
    def _elementwise(self, kernel: str, n: int, *args) -> None:
        """One scalar work-item per element."""
        if n:
            self._launch(kernel, *self._grid1(kernel, n), n, *args)

    def elu_forward(self, z, a):
        self._elementwise("elu_forward", z.size, *ref(z), *ref(a))

    def elu_backward(self, a, g):
        self._elementwise("elu_backward", g.size, *ref(a), *ref(g))

    def softmax_forward(self, z, a, work):
        rows, cols = z.shape
        if rows and cols:   # one work-item per column: no work vector needed
            self._launch("softmax_forward", *self._grid1("softmax_forward", cols), rows, cols,
                         *ref(z), *ref(a))

    def softmax_backward(self, a, g, work):
        rows, cols = g.shape
        if rows and cols:
            self._launch("softmax_backward", *self._grid1("softmax_backward", cols), rows,
                         cols, *ref(a), *ref(g))

    def cross_entropy_sum(self, scratch, a, y, out, binary):
        self._elementwise("cross_entropy_terms", a.size, int(binary), *ref(a), *ref(y),
                          *ref(scratch))
        self._reduce(2, scratch, *ref(out))

    def momentum_update(self, w, v, g, *, lr, decay, mu, nesterov):
        self._elementwise("momentum_update", w.size, lr, decay, mu, int(nesterov), *ref(w),
                          *ref(v), *ref(g))

    def adam_update(self, w, m, v, g, count, *, scale, beta1, beta2, eps, step, sqrt_c2,
                    decay):
        # max(n, 1) work-items: work-item 0 also counts the step when w is empty.
        self._launch("adam_update", *self._grid1("adam_update", max(w.size, 1)), w.size,
                     scale, beta1, beta2, eps, step, sqrt_c2, decay, *ref(w), *ref(m),
                     *ref(v), *ref(g), *ref(count))

    def index_buffer(self, size):
        """int64 indices ("long" in the kernels), released like any array."""
        return memory.zeros(self.queue, (int(size),), np.int64)

    def load_index(self, dst, host):
        """Blocking: the caller reshuffles ``host`` in place next epoch, so the
        copy must be done before it returns (one sync per epoch)."""
        if dst.size:
            buf, off = ref(dst)
            cl.enqueue_copy(self.queue, buf, np.ascontiguousarray(host, np.int64),
                            dst_offset=off * 8, is_blocking=True)

    def gather_columns(self, out, src, index):
        rows, cols = out.shape
        if rows and cols:
            self._launch("gather_columns", *self._grid2("gather_columns", cols, rows), rows,
                         cols, src.shape[1], *ref(out), *ref(src), *ref(index))


# ------------------------------------------------------------------ helpers
def _up(x: int, multiple: int) -> int:
    return -(-x // multiple) * multiple


def _act(name: str) -> int:
    try:
        return ACT[name]
    except KeyError:
        raise ValueError(f"name: unknown activation {name!r}; expected one of "
                         f"{', '.join(ACTIVATIONS)}") from None


def _shape(shape) -> tuple[int, ...]:
    if isinstance(shape, int):
        shape = (shape,)
    shape = tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"shape: dimensions must be non-negative, got {shape}")
    return shape
