"""The OpenCL backend: ``pyopencl.array.Array`` buffers and our own kernels.

Devices are ``"opencl"`` (the first device of the first platform that has
one) and ``"opencl:P:D"`` (device D of platform P, as numbered by
``pyopencl.get_platforms()``).

Contexts and programs
---------------------
All backends open on one device share a :class:`_DeviceState`: one context,
one in-order command queue and one compiled program per dtype.  Sharing
matters beyond speed: arrays from two networks on the same device can then
meet in one kernel, and the in-order queue orders all work without events.
The state is reference counted by the backends that :meth:`OpenCLBackend.open`
returned and is torn down (queue finished, programs and context dropped) when
the last of them is closed; the next ``open`` builds a new one from the
process's cache of compiled binaries (:mod:`opencl_ext.programs`), which takes
about a millisecond instead of the compiler's hundreds.

Arrays and release
------------------
Arrays are C-contiguous ``pyopencl.array.Array`` objects; a kernel receives
``array.base_data`` plus ``array.offset`` in elements, so the views into a
network's flat parameter buffer are real views.  :meth:`OpenCLBackend.release`
frees an allocation's buffer immediately and detaches it from the array and
every view the backend made of it, so a later use raises ``ValueError``
instead of touching freed device memory (pyopencl itself would crash).
"""

from __future__ import annotations

import math
import threading
import weakref
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

from . import programs

PREFIX = "opencl"

_INSTALL_HINT = ("install PoCL, a CPU OpenCL platform, with pip install 'scratchnet[opencl]' "
                 "(pyopencl + pocl-binary-distribution), or your GPU vendor's OpenCL driver")

#: Activation codes shared with kernels/common.cl.
_ACT = {"linear": 0, "sigmoid": 1, "tanh": 2, "relu": 3}
if set(_ACT) != set(ACTIVATIONS):
    raise ImportError(f"opencl_ext: kernel activation codes {sorted(_ACT)} do not match the "
                      f"contract's {sorted(ACTIVATIONS)}")

_DTYPES = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64)}
_TORCH_DTYPES = {v: k for k, v in _DTYPES.items()}

_i32, _i64 = np.int32, np.int64


# ----------------------------------------------------------------- discovery
def _platforms() -> list[Any]:
    """``pyopencl.get_platforms()``, or ``[]`` when no ICD/platform exists."""
    try:
        return list(cl.get_platforms())
    except cl.Error:
        return []


def _devices() -> dict[str, Any]:
    """Canonical device string -> ``pyopencl.Device`` for every device now."""
    found = {}
    for p, platform in enumerate(_platforms()):
        try:
            devices = platform.get_devices()
        except cl.Error:  # a platform with no devices raises DEVICE_NOT_FOUND
            continue
        for d, device in enumerate(devices):
            found[f"{PREFIX}:{p}:{d}"] = device
    return found


def _resolve(device: str) -> tuple[str, Any]:
    """(canonical string, pyopencl.Device) for a device string; ``ValueError``
    naming the string and the devices that exist otherwise."""
    devices = _devices()
    if not devices:
        raise ValueError(f"device: {device!r}: no OpenCL platform with a device was found; "
                         f"{_INSTALL_HINT}")
    parts = device.split(":")
    if parts[0] != PREFIX or len(parts) > 3 or not all(s.isdigit() for s in parts[1:]):
        raise ValueError(f"device: {device!r} is not an OpenCL device string; expected "
                         f"'opencl' or 'opencl:P:D' (platform P, device D), e.g. "
                         f"{', '.join(devices)}")
    if len(parts) == 1:
        name = next(iter(devices))  # the first device of the first platform with one
    else:
        p, d = int(parts[1]), int(parts[2]) if len(parts) == 3 else 0
        name = f"{PREFIX}:{p}:{d}"
        if name not in devices:
            raise ValueError(f"device: {device!r} does not exist; OpenCL devices here: "
                             f"{', '.join(f'{k} ({v.name.strip()})' for k, v in devices.items())}")
    return name, devices[name]


def _tuning(device: Any, np_dtype: np.dtype, cpu: bool | None = None) -> dict[str, int]:
    """Kernel shape parameters for a device: explicit SIMD vectors on CPUs,
    plain scalar work-items on GPUs, whose hardware vectorises across
    work-items.

    CPU vectors are capped at 256 bits: PoCL 3.0 (LLVM 14) reports a
    preferred width of 16 floats on AVX-512 machines it does not know (Zen 4)
    but generates code for an AVX2 target there, where 512-bit vectors are
    split in two at best and, built with its AVX-512 kernel library, abort
    LLVM's code generator (``fma`` on ``float16``) or yield an empty program
    at worst."""
    is_cpu = bool(device.type & cl.device_type.CPU) if cpu is None else cpu
    if is_cpu:
        width = (device.preferred_vector_width_double if np_dtype == np.float64
                 else device.preferred_vector_width_float)
        width = min(max(int(width), 1), 32 // np_dtype.itemsize)
        vw = max(w for w in (1, 2, 4, 8, 16) if w <= width)
        # One work-item per work-group for the reductions: a CPU core runs
        # a work-group as a loop anyway, and many groups spread over cores.
        return {"VW": vw, "TM": 8, "TI": 4, "TK": 4, "wg": 64, "reduce_local": 1,
                "min_items": 4 * device.max_compute_units}
    return {"VW": 1, "TM": 4, "TI": 2, "TK": 2, "wg": 64, "reduce_local": 0,
            "min_items": 64 * device.max_compute_units}


class _Kernels:
    """The kernels of one program, each created on first use.

    Creating a kernel and declaring its scalar argument types costs about a
    millisecond (PoCL plus pyopencl's generated invoker), so a backend that
    is opened, used for a few operations and closed pays only for those."""

    #: Scalar argument types per kernel (None: a buffer); "r" is the dtype.
    SIGNATURES = {
        "small_gemm": "i i i B l i i B l B l r i B l i B l",
        "wgrad_partial": "i i i i B l B l i B l B l B",
        "wgrad_finish": "i i i B B l B l",
        "activation_forward": "i i B l B l",
        "activation_backward": "i i B l B l",
        "axpby": "i r B l B l B l",
        "transpose": "i i B l B l",
        "reduce_partial": "i i i B l i B l B",
        "reduce_finish": "i i B B l",
        # beyond.cl
        "elu_forward": "i B l B l",
        "elu_backward": "i B l B l",
        "softmax_forward": "i i B l B l",
        "softmax_backward": "i i B l B l",
        "cross_entropy_terms": "i i B l B l B l",
        "momentum_update": "i r r r i B l B l B l",
        "adam_update": "i r r r r r r r B l B l B l B l B l",
        "gather_columns": "i i i B l B l B l",
    }

    def __init__(self, program: Any, np_dtype: np.dtype, tune: dict[str, int]):
        self._program = program
        self._types = {"i": np.int32, "l": np.int64, "r": np_dtype.type, "B": None}
        self.tune = tune

    def __getattr__(self, name: str) -> Any:
        signature = self.SIGNATURES.get(name)
        if signature is None:
            raise AttributeError(name)
        kernel = cl.Kernel(self._program, name)
        kernel.set_scalar_arg_dtypes([self._types[c] for c in signature.split()])
        setattr(self, name, kernel)
        return kernel


class _DeviceState:
    """One context + in-order queue + compiled kernels per dtype.

    ``owned`` states were created by :meth:`OpenCLBackend.open` (reference
    counted through ``users`` and registered by device string); the others
    wrap a context somebody else made (see :meth:`OpenCLBackend.for_array`).
    """

    def __init__(self, name: str, device: Any, context: Any, queue: Any, owned: bool):
        self.name = name
        self.device = device
        self.context = context
        self.queue = queue
        self.owned = owned
        self.users = 0
        self.closed = False
        self._kernels: dict[np.dtype, _Kernels] = {}

    def kernels(self, np_dtype: np.dtype) -> _Kernels:
        """The kernels for ``np_dtype``; the program is built on first use
        (once per context and dtype, from the cached binary after the first
        context in the process)."""
        k = self._kernels.get(np_dtype)
        if k is None:
            tune = _tuning(self.device, np_dtype)
            real = "double" if np_dtype == np.float64 else "float"
            options = [f"-DREAL={real}"] + [f"-D{key}={tune[key]}"
                                            for key in ("VW", "TM", "TI", "TK")]
            if real == "float":
                options.append("-DREAL_IS_FLOAT")
            program = programs.build(self.context, self.device, options)
            k = self._kernels[np_dtype] = _Kernels(program, np_dtype, tune)
        return k

    def teardown(self) -> None:
        """Finish queued work and drop the kernels, programs, queue and
        context, so their OpenCL objects are released now (buffers still
        alive keep the context alive, as OpenCL's reference counts require)."""
        if self.closed:
            return
        self.closed = True
        try:
            self.queue.finish()
        except cl.Error:
            pass
        self._kernels.clear()
        self.queue = self.context = None


_registry_lock = threading.Lock()
_states: dict[str, _DeviceState] = {}  # owned states by canonical device string


class _Allocation:
    """Bookkeeping for one buffer this backend allocated: the arrays that
    use it (the array itself and the views :meth:`OpenCLBackend.view` made),
    so :meth:`OpenCLBackend.release` can detach them all."""

    __slots__ = ("buffer", "users", "_prune_at")

    def __init__(self, buffer: Any):
        self.buffer = buffer
        self.users: list[weakref.ref] = []
        self._prune_at = 64

    def add(self, array: Any) -> None:
        """Track ``array``; dead entries are dropped now and then, so a
        buffer whose views are made over and over keeps a short list."""
        users = self.users
        users.append(weakref.ref(array))
        if len(users) >= self._prune_at:
            users[:] = [ref for ref in users if ref() is not None]
            self._prune_at = 2 * len(users) + 64

    def free(self) -> None:
        if self.buffer is None:
            return
        buffer, self.buffer = self.buffer, None
        for ref in self.users:
            array = ref()
            if array is not None:
                array.base_data = None
        self.users.clear()
        buffer.release()


class OpenCLBackend(Backend):
    """Backend over ``pyopencl.array.Array`` on one OpenCL device."""

    name = "opencl"

    def __init__(self, state: _DeviceState, dtype: torch.dtype, counted: bool):
        self._state = state
        self.device = state.name
        self.dtype = dtype
        self.np_dtype = _DTYPES[dtype]
        self._real = self.np_dtype.type
        self._itemsize = self.np_dtype.itemsize
        self._counted = counted
        self._origin = None  # for_array: (context, queue) of the array it was made for
        self._closed = False
        self._k = None
        self._scratch = None
        self._scalar = None
        self._dummy = None

    # ------------------------------------------------------------ discovery
    @classmethod
    def open(cls, device: str, dtype: torch.dtype) -> OpenCLBackend:
        if not isinstance(device, str):
            raise TypeError(f"device: expected a device string such as 'opencl' or "
                            f"'opencl:0:0', got {device!r}")
        if dtype not in _DTYPES:
            raise ValueError(f"dtype: the OpenCL backend supports torch.float32 and "
                             f"torch.float64, got {dtype}")
        name, dev = _resolve(device)
        if dtype == torch.float64 and not dev.double_fp_config:
            raise ValueError(f"dtype: torch.float64 needs double precision, which OpenCL "
                             f"device {name} ({dev.name.strip()}) lacks (no cl_khr_fp64); "
                             f"use torch.float32")
        with _registry_lock:
            state = _states.get(name)
            if state is None:
                context = cl.Context([dev])
                state = _DeviceState(name, dev, context, cl.CommandQueue(context), owned=True)
                _states[name] = state
            state.users += 1
        backend = cls(state, dtype, counted=True)
        try:
            backend._kernels()  # compile now (once per process), not inside the first epoch
        except BaseException:
            backend.close()
            raise
        return backend

    @classmethod
    def available_devices(cls, prefix: str) -> list[str]:
        return list(_devices()) if prefix == PREFIX else []

    @classmethod
    def unavailable_reason(cls, prefix: str) -> str | None:
        if prefix != PREFIX:
            return f"the OpenCL backend serves 'opencl' devices, not {prefix!r}"
        if not _platforms():
            return f"no OpenCL platform found (pyopencl sees no installable client driver); " \
                   f"{_INSTALL_HINT}"
        if not _devices():
            return f"OpenCL platforms exist but none has a device; {_INSTALL_HINT}"
        return None

    @classmethod
    def owns(cls, array: Any) -> bool:
        return isinstance(array, cla.Array)

    @classmethod
    def for_array(cls, array: Any) -> OpenCLBackend:
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
        context = array.context
        with _registry_lock:
            state = next((s for s in _states.values() if s.context == context), None)
        if state is None:
            device = context.devices[0]
            state = _DeviceState(_name_of(device), device, context, array.queue, owned=False)
        backend = cls(state, _TORCH_DTYPES[array.dtype], counted=False)
        backend._origin = (context, array.queue)
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
            with _registry_lock:
                state.users -= 1
                last = state.users == 0
                if last and _states.get(state.name) is state:
                    del _states[state.name]
            if last:
                state.teardown()
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

    def _live_state(self) -> _DeviceState:
        state = self._state
        if state is None:
            raise ValueError(f"backend: {self!r} is closed")
        if state.closed:
            if self._origin is None:
                raise ValueError(f"backend: the device state of {self!r} was torn down")
            # Borrowed from open() backends that have all closed since: go on
            # with a private state on the array's own context and queue.
            context, queue = self._origin
            state = self._state = _DeviceState(state.name, state.device, context, queue,
                                               owned=False)
            self._k = None
        return state

    def _kernels(self) -> _Kernels:
        k = self._k
        if k is None:
            state = self._live_state()
            k = self._k = state.kernels(self.np_dtype)
            self._wg = k.tune["wg"]
            self._vw = k.tune["VW"]
            self._tm = k.tune["TM"]
            self._ti, self._tk = k.tune["TI"], k.tune["TK"]
            self._min_items = k.tune["min_items"]
            # (1, 1) work-groups on CPUs; None lets a GPU driver group them.
            self._rlocal = (1, 1) if k.tune["reduce_local"] else None
        return k

    # ---------------------------------------------------------------- memory
    def _new(self, shape: tuple[int, ...]) -> Any:
        array = cla.Array(self.queue, shape, self.np_dtype)
        if array.base_data is not None:
            alloc = _Allocation(array.base_data)
            alloc.add(array)
            array._sn_alloc = alloc
        return array

    def zeros(self, shape):
        shape = _shape(shape)
        array = self._new(shape)
        if array.size:
            cl.enqueue_fill_buffer(self.queue, array.base_data, self.np_dtype.type(0), 0,
                                   array.nbytes)
        return array

    def from_host(self, data):
        if isinstance(data, torch.Tensor):
            host = data.detach().to("cpu", self.dtype).contiguous().numpy()
        elif isinstance(data, np.ndarray):
            host = np.ascontiguousarray(data, dtype=self.np_dtype)
        else:
            raise TypeError(f"data: expected a numpy array or a torch tensor, got "
                            f"{type(data).__name__}")
        array = self._new(tuple(host.shape))
        if array.size:
            cl.enqueue_copy(self.queue, array.base_data, host, is_blocking=True)
        return array

    def to_numpy(self, array):
        host = np.empty(array.shape, dtype=array.dtype)
        if array.size:
            buf, off = _ref(array)
            cl.enqueue_copy(array.queue, host, buf, src_offset=off * array.dtype.itemsize,
                            is_blocking=True)
        return host

    def view(self, flat, offset, shape):
        shape = _shape(shape)
        size = math.prod(shape)
        if flat.ndim != 1:
            raise ValueError(f"flat: expected a 1-D array, got shape {flat.shape}")
        if not 0 <= offset <= flat.size - size:
            raise ValueError(f"offset: a view of {size} elements at {offset} does not fit in "
                             f"a flat array of {flat.size}")
        view = cla.Array(flat.queue, shape, flat.dtype, data=flat.base_data,
                         offset=flat.offset + offset * flat.dtype.itemsize)
        alloc = getattr(flat, "_sn_alloc", None) or getattr(flat, "_sn_view_of", None)
        if alloc is not None:
            alloc.add(view)
            view._sn_view_of = alloc
        return view

    def copy_(self, dst, src):
        if dst.size:
            dbuf, doff = _ref(dst)
            sbuf, soff = _ref(src)
            size = self._itemsize
            cl.enqueue_copy(self.queue, dbuf, sbuf, byte_count=dst.size * size,
                            src_offset=soff * size, dst_offset=doff * size)

    def transpose(self, array):
        rows, cols = array.shape
        out = self._new((cols, rows))
        if out.size:
            k = self._kernels()
            wg = 16 if self._wg >= 256 else 8
            k.transpose(self.queue, (_up(cols, wg), _up(rows, wg)), (wg, wg),
                        rows, cols, *_ref(array), *_ref(out))
        return out

    def available_memory(self):
        # the device's global memory, which all of a network's buffers share
        return int(self._live_state().device.global_mem_size)

    def release(self, array):
        alloc = getattr(array, "_sn_alloc", None)
        if alloc is not None:
            alloc.free()

    def synchronize(self):
        self.queue.finish()

    # ------------------------------------------------------------- internals
    def _grid1(self, items: int) -> tuple[tuple[int], tuple[int]]:
        """Global and local size for ``items`` work-items in one dimension."""
        return (_up(items, self._wg),), (self._wg,)

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

    def _gemm(self, M, K, n, A, a_off, a_rs, a_cs, B, bias, bias_sign, act, D, dact, C):
        """C := f(A·B + bias_sign·bias 1ᵀ) ⊙ f'(D), see kernels/matmul.cl."""
        if M == 0 or n == 0:
            return
        k = self._kernels()
        dummy = self._dummy_buffer()
        bbuf, boff = _ref(B) if K else (dummy, 0)
        biasbuf, biasoff = _ref(bias) if bias is not None else (dummy, 0)
        dbuf, doff = _ref(D) if D is not None else (dummy, 0)
        wg = self._wg
        k.small_gemm(self.queue, (_up(-(-n // self._vw), wg), -(-M // self._tm)), (wg, 1),
                     M, K, n, A if K else dummy, a_off, a_rs, a_cs, bbuf, boff, biasbuf,
                     biasoff, bias_sign, act, dbuf, doff, dact, *_ref(C))

    def _reduce(self, op: int, x, out_buf, out_off: int) -> None:
        """out_buf[out_off] := Σ x² (op 0), max |x| (op 1) or Σ x (op 2), on the device."""
        k = self._kernels()
        n = x.size
        vw = self._vw
        chunk = _up(max(4096, -(-n // self._min_items)), vw)
        parts = max(1, -(-n // chunk))
        xbuf, xoff = _ref(x) if n else (self._dummy_buffer(), 0)
        if parts == 1:
            k.reduce_partial(self.queue, (1,), (1,), op, n, chunk, xbuf, xoff, 1,
                             out_buf, out_off, self._dummy_buffer())
            return
        scratch = self._scratch_buffer(parts)
        k.reduce_partial(self.queue, *self._grid1(parts), op, n, chunk, xbuf, xoff, 0,
                         out_buf, out_off, scratch)
        k.reduce_finish(self.queue, (1,), (1,), op, parts, scratch, out_buf, out_off)

    # --------------------------------------------------------------- kernels
    def linear_forward(self, z, w, b, a_prev, bias_sign):
        out, inp = w.shape
        wbuf, woff = _ref(w) if w.size else (None, 0)
        self._gemm(out, inp, z.shape[1], wbuf, woff, inp, 1, a_prev, b, bias_sign, 0,
                   None, 0, z)

    def linear_activation_forward(self, name, a, w, b, a_prev, bias_sign):
        """a := f(w·a_prev + bias_sign·b 1ᵀ) in one kernel: the activation is
        applied to the accumulators before they are stored, so z is never
        written and the pass over it disappears (see the base class)."""
        out, inp = w.shape
        wbuf, woff = _ref(w) if w.size else (None, 0)
        self._gemm(out, inp, a.shape[1], wbuf, woff, inp, 1, a_prev, b, bias_sign,
                   _act(name), None, 0, a)

    def activation_forward(self, name, z, a):
        act = _act(name)
        if act == 0 and a is z:
            return
        n = z.size
        if n:
            self._kernels().activation_forward(self.queue, *self._grid1(-(-n // self._vw)),
                                               n, act, *_ref(z), *_ref(a))

    def activation_backward(self, name, a, g):
        act = _act(name)
        n = g.size
        if act and n:
            self._kernels().activation_backward(self.queue, *self._grid1(-(-n // self._vw)),
                                                n, act, *_ref(a), *_ref(g))

    def weight_gradient(self, dw, db, delta, a_prev):
        out, n = delta.shape
        inp = a_prev.shape[0]
        if n == 0:
            for arr in (dw, db):
                if arr.size:
                    buf, off = _ref(arr)
                    cl.enqueue_fill_buffer(self.queue, buf, self._real(0),
                                           off * self._itemsize, arr.nbytes)
            return
        k = self._kernels()
        vw, ti, tk = self._vw, self._ti, self._tk
        tiles = -(-out // ti) * -(-max(inp, 1) // tk)
        chunks = max(1, -(-self._min_items // tiles))
        chunk = _up(max(-(-n // chunks), 16 * vw), vw)
        chunks = -(-n // chunk)
        dbuf, doff = _ref(delta)
        abuf, aoff = _ref(a_prev) if inp else (dbuf, doff)
        dwbuf, dwoff = _ref(dw) if dw.size else (self._dummy_buffer(), 0)
        dbbuf, dboff = _ref(db)
        if chunks == 1:
            k.wgrad_partial(self.queue, (1, tiles), self._rlocal, out, inp, n, chunk, dbuf, doff,
                            abuf, aoff, 1, dwbuf, dwoff, dbbuf, dboff, self._dummy_buffer())
            return
        scratch = self._scratch_buffer(chunks * out * (inp + 1))
        k.wgrad_partial(self.queue, (chunks, tiles), self._rlocal, out, inp, n, chunk, dbuf, doff,
                        abuf, aoff, 0, dwbuf, dwoff, dbbuf, dboff, scratch)
        k.wgrad_finish(self.queue, *self._grid1(out * (inp + 1)), out, inp, chunks, scratch,
                       dwbuf, dwoff, dbbuf, dboff)

    def input_gradient(self, g_prev, w, delta):
        out, inp = w.shape
        wbuf, woff = _ref(w) if w.size else (None, 0)
        self._gemm(inp, out, delta.shape[1], wbuf, woff, 1, inp, delta, None, 0, 0,
                   None, 0, g_prev)

    def input_gradient_backward(self, name, g_prev, w, delta, a_prev):
        """g_prev := (wᵀ·δ) ⊙ f'(z_prev), with f' written through
        ``a_prev`` = f(z_prev): the next layer down's activation_backward
        fused into this product, one kernel instead of two."""
        out, inp = w.shape
        wbuf, woff = _ref(w) if w.size else (None, 0)
        self._gemm(inp, out, delta.shape[1], wbuf, woff, 1, inp, delta, None, 0, 0,
                   a_prev, _act(name), g_prev)

    def subtract(self, out, a, y):
        n = out.size
        if n:
            self._kernels().axpby(self.queue, *self._grid1(-(-n // self._vw)), n, -1.0,
                                  *_ref(a), *_ref(y), *_ref(out))

    def sum_squares(self, x, out):
        self._reduce(0, x, *_ref(out))

    def read_scalar(self, array):
        host = np.empty(1, dtype=array.dtype)
        buf, off = _ref(array)
        cl.enqueue_copy(array.queue, host, buf, src_offset=off * array.dtype.itemsize,
                        is_blocking=True)
        return float(host[0])

    def axpy_(self, y, alpha, x):
        n = y.size
        if n:
            ybuf, yoff = _ref(y)
            self._kernels().axpby(self.queue, *self._grid1(-(-n // self._vw)), n, alpha,
                                  ybuf, yoff, *_ref(x), ybuf, yoff)

    # ------------------------------------------ beyond the series (beyond.cl)
    def _elementwise(self, kernel: str, n: int, *args) -> None:
        """One scalar work-item per element."""
        if n:
            getattr(self._kernels(), kernel)(self.queue, *self._grid1(n), n, *args)

    def elu_forward(self, z, a):
        self._elementwise("elu_forward", z.size, *_ref(z), *_ref(a))

    def elu_backward(self, a, g):
        self._elementwise("elu_backward", g.size, *_ref(a), *_ref(g))

    def softmax_forward(self, z, a, work):
        rows, cols = z.shape
        if rows and cols:   # one work-item per column: no work vector needed
            self._kernels().softmax_forward(self.queue, *self._grid1(cols), rows, cols,
                                            *_ref(z), *_ref(a))

    def softmax_backward(self, a, g, work):
        rows, cols = g.shape
        if rows and cols:
            self._kernels().softmax_backward(self.queue, *self._grid1(cols), rows, cols,
                                             *_ref(a), *_ref(g))

    def cross_entropy_sum(self, scratch, a, y, out, binary):
        self._elementwise("cross_entropy_terms", a.size, int(binary), *_ref(a), *_ref(y),
                          *_ref(scratch))
        self._reduce(2, scratch, *_ref(out))

    def momentum_update(self, w, v, g, *, lr, decay, mu, nesterov):
        self._elementwise("momentum_update", w.size, lr, decay, mu, int(nesterov), *_ref(w),
                          *_ref(v), *_ref(g))

    def adam_update(self, w, m, v, g, count, *, scale, beta1, beta2, eps, step, sqrt_c2,
                    decay):
        # max(n, 1) work-items: work-item 0 also counts the step when w is empty.
        self._kernels().adam_update(self.queue, *self._grid1(max(w.size, 1)), w.size, scale,
                                    beta1, beta2, eps, step, sqrt_c2, decay, *_ref(w),
                                    *_ref(m), *_ref(v), *_ref(g), *_ref(count))

    def index_buffer(self, size):
        """int64 indices ("long" in the kernels), released like any array."""
        array = cla.Array(self.queue, (int(size),), np.int64)
        if array.base_data is not None:
            alloc = _Allocation(array.base_data)
            alloc.users.append(weakref.ref(array))
            array._sn_alloc = alloc
            cl.enqueue_fill_buffer(self.queue, array.base_data, np.int64(0), 0, array.nbytes)
        return array

    def load_index(self, dst, host):
        """Blocking: the caller reshuffles ``host`` in place next epoch, so the
        copy must be done before it returns (one sync per epoch)."""
        if dst.size:
            buf, off = _ref(dst)
            cl.enqueue_copy(self.queue, buf, np.ascontiguousarray(host, np.int64),
                            dst_offset=off * 8, is_blocking=True)

    def gather_columns(self, out, src, index):
        rows, cols = out.shape
        if rows and cols:
            wg = 16 if self._wg >= 256 else 8
            self._kernels().gather_columns(self.queue, (_up(cols, wg), _up(rows, wg)),
                                           (wg, wg), rows, cols, src.shape[1], *_ref(out),
                                           *_ref(src), *_ref(index))

    def amax(self, array):
        if array.size == 0:
            return 0.0
        self._reduce(1, array, self._scalar_buffer(), 0)
        host = np.empty(1, dtype=self.np_dtype)
        cl.enqueue_copy(self.queue, host, self._scalar_buffer(), is_blocking=True)
        return float(host[0])

    def all_finite(self, array):
        return array.size == 0 or math.isfinite(self.amax(array))


# ------------------------------------------------------------------ helpers
def _ref(array) -> tuple[Any, int]:
    """(buffer, offset in elements) to hand a kernel for ``array``."""
    buf = array.base_data
    if buf is None:
        raise ValueError(f"array: this {array.shape} OpenCL array has been released "
                         f"(backend.release) and cannot be used")
    return buf, array.offset // array.dtype.itemsize


def _up(x: int, multiple: int) -> int:
    return -(-x // multiple) * multiple


def _act(name: str) -> int:
    try:
        return _ACT[name]
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


def _name_of(device: Any) -> str:
    """The canonical device string of a ``pyopencl.Device``."""
    for name, dev in _devices().items():
        if dev == device:
            return name
    return PREFIX
