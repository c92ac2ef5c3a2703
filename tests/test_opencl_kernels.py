"""The OpenCL backend's kernels against torch, plus its resource handling.

Every kernel is checked in float32 and float64 on sample counts that are not
multiples of any work-group or SIMD width (1, 3, 17, 1000, 10007), on odd
feature counts, and on views at odd offsets inside one flat buffer (as the
network's parameters are).  The whole module skips, with the backend's own
reason, where pyopencl or an OpenCL platform is missing.
"""

from __future__ import annotations

import gc
import importlib
import math
import sys
import zlib

import numpy as np
import pytest
import torch

cl = pytest.importorskip(
    "pyopencl", reason="pyopencl is not installed: pip install 'scratchnet[opencl]'")

from opencl_ext import context, devices, memory, programs  # noqa: E402
from opencl_ext.backend import OpenCLBackend  # noqa: E402

_REASON = OpenCLBackend.unavailable_reason("opencl")
if _REASON is not None:
    pytest.skip(_REASON, allow_module_level=True)

SAMPLES = (1, 3, 17, 1000, 10007)
#: (out, in) layer shapes: odd, tiny, and the article's.
LAYERS = ((1, 1), (3, 5), (17, 4), (32, 4), (16, 32), (1, 16), (33, 7))
ACTS = ("sigmoid", "tanh", "linear", "relu")


def _has_fp64() -> bool:
    _, device = devices.resolve("opencl")
    return bool(device.double_fp_config)


@pytest.fixture(params=[torch.float32, torch.float64], ids=["f32", "f64"])
def backend(request):
    if request.param == torch.float64 and not _has_fp64():
        pytest.skip("the OpenCL device has no double precision (cl_khr_fp64)")
    be = OpenCLBackend.open("opencl", request.param)
    yield be
    be.close()


@pytest.fixture
def f32():
    be = OpenCLBackend.open("opencl", torch.float32)
    yield be
    be.close()


def _tol(be, scale=1.0):
    if be.dtype == torch.float64:
        return {"rtol": 1e-10, "atol": 1e-10 * scale}
    return {"rtol": 2e-5, "atol": 2e-5 * scale}


def _check(be, array, expected, scale=1.0):
    got = torch.from_numpy(be.to_numpy(array))
    torch.testing.assert_close(got, expected.to(got.dtype), **_tol(be, scale))


class Place:
    """Put host arrays on the device either as separate allocations or as
    views at odd offsets inside one flat buffer (writes must go through)."""

    def __init__(self, be, as_views: bool):
        self.be = be
        self.as_views = as_views

    def __call__(self, *hosts):
        be = self.be
        if not self.as_views:
            return [be.from_host(h) for h in hosts]
        sizes = [int(np.prod(h.shape)) for h in hosts]
        gap = 3  # odd gaps: no view is aligned to anything
        flat_host = np.full(sum(sizes) + gap * (len(hosts) + 1), 7.25)
        offsets, off = [], gap
        for h, size in zip(hosts, sizes, strict=True):
            flat_host[off:off + size] = np.asarray(h, dtype=np.float64).ravel()
            offsets.append(off)
            off += size + gap
        flat = be.from_host(flat_host)
        views = [be.view(flat, o, tuple(h.shape)) for h, o in zip(hosts, offsets, strict=True)]
        self.flat, self.flat_host, self.offsets, self.sizes = flat, flat_host, offsets, sizes
        return views

    def check_gaps(self):
        """The kernels wrote nothing outside their views."""
        if self.as_views:
            host = self.be.to_numpy(self.flat)
            mask = np.ones(host.size, dtype=bool)
            for o, s in zip(self.offsets, self.sizes, strict=True):
                mask[o:o + s] = False
            assert np.all(host[mask] == 7.25)


@pytest.fixture(params=[False, True], ids=["alloc", "views"])
def place(request, backend):
    return Place(backend, request.param)


def _rng(*key):
    """A generator seeded by the test's parameters (stable across runs)."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _layer(rng, out, inp, n):
    """Random weights (out, in), bias (out,) and input activations (in, n)."""
    return rng.standard_normal((out, inp)), rng.standard_normal(out), rng.standard_normal((inp, n))


def _t(x):
    return torch.from_numpy(np.asarray(x, dtype=np.float64))


# ---------------------------------------------------------------- products
@pytest.mark.parametrize("n", SAMPLES)
@pytest.mark.parametrize("shape", LAYERS, ids=str)
def test_linear_forward(backend, place, shape, n):
    out, inp = shape
    rng = _rng("lf", shape, n)
    w, b, a = _layer(rng, out, inp, n)
    for sign in (1.0, -1.0):
        dw, db, da, dz = place(w, b, a, np.zeros((out, n)))
        backend.linear_forward(dz, dw, db, da, sign)
        _check(backend, dz, _t(w) @ _t(a) + sign * _t(b)[:, None], scale=inp)
        place.check_gaps()


@pytest.mark.parametrize("n", SAMPLES)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("shape", ((17, 4), (16, 32), (1, 16)), ids=str)
def test_linear_activation_forward(backend, place, act, shape, n):
    out, inp = shape
    rng = _rng("laf", act, shape, n)
    w, b, a = _layer(rng, out, inp, n)
    a_ref = _torch_act(act, _t(w) @ _t(a) - _t(b)[:, None])
    dw, db, da, dout = place(w, b, a, np.zeros((out, n)))
    backend.linear_activation_forward(act, dout, dw, db, da, -1.0)
    _check(backend, dout, a_ref, scale=inp)
    place.check_gaps()


@pytest.mark.parametrize("n", SAMPLES)
@pytest.mark.parametrize("shape", LAYERS, ids=str)
def test_weight_gradient(backend, place, shape, n):
    out, inp = shape
    rng = _rng("wg", shape, n)
    delta, a = rng.standard_normal((out, n)), rng.standard_normal((inp, n))
    dw, db, dd, da = place(np.full((out, inp), 5.0), np.full(out, 5.0), delta, a)
    backend.weight_gradient(dw, db, dd, da)
    _check(backend, dw, _t(delta) @ _t(a).T, scale=math.sqrt(n))
    _check(backend, db, _t(delta).sum(1), scale=math.sqrt(n))
    place.check_gaps()


def test_weight_gradient_uses_many_chunks(backend):
    """A long reduction spread over many work-items (the two-stage path)."""
    rng = _rng("wg-long")
    n = 200_003
    delta, a = rng.standard_normal((2, n)), rng.standard_normal((3, n))
    dw, db = backend.zeros((2, 3)), backend.zeros((2,))
    backend.weight_gradient(dw, db, backend.from_host(delta), backend.from_host(a))
    _check(backend, dw, _t(delta) @ _t(a).T, scale=math.sqrt(n) * 10)
    _check(backend, db, _t(delta).sum(1), scale=math.sqrt(n) * 10)


@pytest.mark.parametrize("n", SAMPLES)
@pytest.mark.parametrize("shape", LAYERS, ids=str)
def test_input_gradient(backend, place, shape, n):
    out, inp = shape
    rng = _rng("ig", shape, n)
    w, delta = rng.standard_normal((out, inp)), rng.standard_normal((out, n))
    dw, dd, dg = place(w, delta, np.zeros((inp, n)))
    backend.input_gradient(dg, dw, dd)
    _check(backend, dg, _t(w).T @ _t(delta), scale=out)
    place.check_gaps()


def test_fused_forward_matches_the_base_class_default(backend):
    """The fused forward kernel computes what Backend's unfused default computes."""
    from scratchnet.backends.base import Backend

    rng = _rng("fused-defaults")
    w, b, x = _layer(rng, 16, 33, 1000)
    dw, db, dx = (backend.from_host(h) for h in (w, b, x))
    for act in ACTS:
        fused, plain = backend.zeros((16, 1000)), backend.zeros((16, 1000))
        backend.linear_activation_forward(act, fused, dw, db, dx, 1.0)
        Backend.linear_activation_forward(backend, act, plain, dw, db, dx, 1.0)
        np.testing.assert_allclose(backend.to_numpy(fused), backend.to_numpy(plain),
                                   **_tol(backend, 33))


# ------------------------------------------------------------- elementwise
def _torch_act(name, z):
    return {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
            "linear": lambda t: t.clone()}[name](z)


def _torch_prime(name, a, g):
    if name == "sigmoid":
        return g * a * (1 - a)
    if name == "tanh":
        return g * (1 - a * a)
    if name == "relu":
        return torch.where(a > 0, g, torch.zeros_like(g))
    return g.clone()


@pytest.mark.parametrize("n", SAMPLES)
@pytest.mark.parametrize("act", ACTS)
def test_activation_forward(backend, place, act, n):
    rng = _rng("af", act, n)
    z = rng.standard_normal((3, n)) * 4
    z[0, 0] = 100.0  # saturation: sigmoid(100) = 1, tanh(100) = 1
    if n > 1:
        z[0, 1] = -100.0
    dz, da = place(z, np.zeros_like(z))
    backend.activation_forward(act, dz, da)
    _check(backend, da, _torch_act(act, _t(z)))
    backend.activation_forward(act, dz, dz)  # in place
    _check(backend, dz, _torch_act(act, _t(z)))
    place.check_gaps()


@pytest.mark.parametrize("n", SAMPLES)
@pytest.mark.parametrize("act", ACTS)
def test_activation_backward(backend, place, act, n):
    rng = _rng("ab", act, n)
    a = _torch_act(act, _t(rng.standard_normal((5, n)))).numpy()
    g = rng.standard_normal((5, n))
    da, dg = place(a, g)
    backend.activation_backward(act, da, dg)
    _check(backend, dg, _torch_prime(act, _t(a), _t(g)))
    place.check_gaps()


def test_tanh_accuracy_across_its_range(backend):
    """tanh to a few ulp everywhere, tiny and huge inputs included.  double
    uses the driver's builtin, which the OpenCL spec holds to 5 ulp (the
    relative error table of the OpenCL C specification); float uses our
    inline tanh (two ranges joined at |z| = 0.625), held to 4."""
    z = np.concatenate([np.linspace(-12, 12, 20_001), [0.0, -0.0, 1e-30, -1e-8, 0.6249999,
                                                      0.625, 0.6250001, 40.0, -100.0]])
    a = backend.zeros(z.shape)
    backend.activation_forward("tanh", backend.from_host(z), a)
    got = backend.to_numpy(a).astype(np.float64)
    expected = np.tanh(z.astype(backend.np_dtype).astype(np.float64))
    ulp = np.spacing(np.abs(expected).astype(backend.np_dtype)).astype(np.float64)
    bound = 5 if backend.dtype == torch.float64 else 4
    assert np.max(np.abs(got - expected) / np.maximum(ulp, np.finfo(backend.np_dtype).tiny)) \
        <= bound


def test_relu_keeps_nan_like_torch(f32):
    z = np.array([[np.nan, -np.inf, np.inf, -0.5, 0.5]])
    a = f32.zeros(z.shape)
    f32.activation_forward("relu", f32.from_host(z), a)
    expected = torch.relu(torch.from_numpy(z).float())
    torch.testing.assert_close(torch.from_numpy(f32.to_numpy(a)), expected, equal_nan=True)


def test_unknown_activation_names_the_argument(f32):
    z = f32.zeros((1, 3))
    with pytest.raises(ValueError, match="name: unknown activation 'swish'"):
        f32.activation_forward("swish", z, z)


@pytest.mark.parametrize("n", SAMPLES)
def test_subtract(backend, place, n):
    rng = _rng("sub", n)
    a, y = rng.standard_normal((2, n)), rng.standard_normal((2, n))
    da, dy, dout = place(a, y, np.zeros((2, n)))
    backend.subtract(dout, da, dy)
    _check(backend, dout, _t(a) - _t(y))
    backend.subtract(da, da, dy)  # out is a
    _check(backend, da, _t(a) - _t(y))
    place.check_gaps()


@pytest.mark.parametrize("n", SAMPLES)
def test_axpy(backend, place, n):
    rng = _rng("axpy", n)
    y, x = rng.standard_normal(n), rng.standard_normal(n)
    dy, dx = place(y, x)
    backend.axpy_(dy, -0.37, dx)
    _check(backend, dy, _t(y) - 0.37 * _t(x))
    backend.axpy_(dy, -0.5, dy)  # x is y: weight decay y := (1 - 0.5) y
    _check(backend, dy, 0.5 * (_t(y) - 0.37 * _t(x)))
    place.check_gaps()


@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 17), (17, 3), (4, 10007), (33, 65)])
def test_transpose(backend, place, rows, cols):
    x = _rng("tr", rows, cols).standard_normal((rows, cols))
    (dx,) = place(x)
    out = backend.transpose(dx)
    assert out.shape == (cols, rows)
    _check(backend, out, _t(x).T)


# -------------------------------------------------------------- reductions
@pytest.mark.parametrize("n", SAMPLES + (0, 100_003))
def test_sum_squares_stays_on_device(backend, place, n):
    x = _rng("ss", n).standard_normal(n)
    dx, dout = place(x, np.full(1, 9.0))
    backend.sum_squares(dx, dout)
    assert backend.owns(dout) and dout.shape == (1,)
    expected = float((_t(x) ** 2).sum())
    assert backend.read_scalar(dout) == pytest.approx(expected, rel=_tol(backend)["rtol"],
                                                      abs=1e-12)
    place.check_gaps()


@pytest.mark.parametrize("n", SAMPLES + (100_003,))
def test_amax_and_all_finite(backend, place, n):
    x = _rng("amax", n).standard_normal(n)
    (dx,) = place(x)
    assert backend.amax(dx) == pytest.approx(float(np.abs(x).max()), rel=1e-7)
    assert backend.all_finite(dx)
    for bad in (np.nan, np.inf, -np.inf):
        y = x.copy()
        y[(7 * n) // 11] = bad
        dy = backend.from_host(y)
        assert not backend.all_finite(dy)
        got = backend.amax(dy)
        assert math.isnan(got) if np.isnan(bad) else got == math.inf


def test_amax_of_negative_and_empty(f32):
    assert f32.amax(f32.from_host(np.array([-3.0, 2.0, -1.0]))) == 3.0
    assert f32.amax(f32.zeros((0,))) == 0.0
    assert f32.all_finite(f32.zeros((0, 4)))


# ------------------------------------------------------------------ memory
def test_from_host_to_numpy_round_trip(backend):
    x = _rng("rt").standard_normal((5, 7))
    for data in (x, x.T, x.astype(np.float32), torch.from_numpy(x).t(),
                 torch.from_numpy(x).to(torch.bfloat16)):
        array = backend.from_host(data)
        assert backend.owns(array) and array.dtype == backend.np_dtype
        expected = data.double() if isinstance(data, torch.Tensor) else torch.from_numpy(
            np.asarray(data, dtype=np.float64))
        np.testing.assert_allclose(backend.to_numpy(array), expected.double().numpy(),
                                   rtol=1e-6 if backend.dtype == torch.float32 else 0)
    with pytest.raises(TypeError, match="data: expected a numpy array or a torch tensor"):
        backend.from_host([1.0, 2.0])


def test_zeros_view_copy(backend):
    flat = backend.zeros((20,))
    assert backend.to_numpy(flat).tolist() == [0.0] * 20
    v = backend.view(flat, 5, (3, 2))
    backend.copy_(v, backend.from_host(np.arange(6.0).reshape(3, 2)))
    host = backend.to_numpy(flat)
    assert host[5:11].tolist() == list(range(6)) and host[:5].sum() == host[11:].sum() == 0
    backend.axpy_(v, 1.0, v)  # kernels write through the view
    assert backend.to_numpy(flat)[5:11].tolist() == [2.0 * i for i in range(6)]
    with pytest.raises(ValueError, match="offset"):
        backend.view(flat, 18, (3,))
    assert backend.zeros((0, 3)).shape == (0, 3)


def test_for_array(backend):
    x = backend.from_host(np.arange(4.0))
    other = OpenCLBackend.for_array(x)
    assert other.device == backend.device and other.dtype == backend.dtype
    assert other.amax(x) == 3.0
    assert OpenCLBackend.owns(x) and not OpenCLBackend.owns(torch.zeros(1))
    with pytest.raises(TypeError, match="array: expected a pyopencl.array.Array"):
        OpenCLBackend.for_array(np.zeros(3))


def test_for_array_outlives_the_backend():
    be = OpenCLBackend.open("opencl", torch.float32)
    x = be.from_host(np.array([1.0, -5.0]))
    be.close()
    other = OpenCLBackend.for_array(x)  # its context is kept alive by x
    assert other.to_numpy(x).tolist() == [1.0, -5.0]
    assert other.amax(x) == 5.0
    other.close()


def test_for_array_borrows_then_survives_the_owner(fresh_registry):
    be = OpenCLBackend.open("opencl", torch.float32)
    x = be.from_host(np.array([2.0, -7.0]))
    borrowed = OpenCLBackend.for_array(x)
    assert borrowed._state is be._state  # no new context, no compile
    assert borrowed.amax(x) == 7.0
    be.close()  # tears the shared state down
    assert borrowed.amax(x) == 7.0  # goes on with a private state on x's context
    assert borrowed.to_numpy(x).tolist() == [2.0, -7.0]
    borrowed.close()


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def test_release_frees_now_and_detaches_views(f32):
    """release() frees the buffer immediately, not at garbage collection,
    and any later use of it (or of a view of it) is an error, not a crash."""
    gc.collect()
    f32.synchronize()
    before = _rss_mb()
    big = f32.zeros((16 * 2**20,))  # 64 MiB, touched by the fill
    view = f32.view(big, 10, (4, 5))
    f32.synchronize()
    assert _rss_mb() - before > 48
    f32.release(big)
    assert _rss_mb() - before < 16  # freed while `big` and `view` are still referenced
    for arr in (big, view):
        with pytest.raises(ValueError, match="released"):
            f32.amax(arr)
    f32.release(big)  # twice is harmless
    f32.release(view)  # a view is released with its base: no-op


def test_views_made_over_and_over_are_not_tracked_forever(f32):
    flat = f32.zeros((10,))
    for _ in range(10_000):
        f32.view(flat, 1, (2,))
    assert memory.users(flat) < 200
    keep = f32.view(flat, 2, (3,))
    f32.release(flat)
    with pytest.raises(ValueError, match="released"):
        f32.to_numpy(keep)


def test_release_of_a_view_keeps_the_base(f32):
    flat = f32.from_host(np.arange(10.0))
    f32.release(f32.view(flat, 2, (3,)))
    assert f32.to_numpy(flat).tolist() == list(range(10))


@pytest.fixture
def fresh_registry(monkeypatch):
    """An empty device-state registry, so the test sees its own backends
    only (networks of other tests in this process may still hold theirs)."""
    monkeypatch.setattr(context, "_states", {})


def test_close_releases_the_device_state(fresh_registry):
    a = OpenCLBackend.open("opencl", torch.float32)
    b = OpenCLBackend.open("opencl", torch.float32)
    assert a._state is b._state  # one context and queue per device
    x = a.from_host(np.ones(3))
    b.axpy_(x, 1.0, x)  # arrays of one device meet in any of its backends
    a.close()
    assert context._states  # b still uses it
    b.close()
    b.close()  # twice is harmless
    assert not context._states
    with pytest.raises(ValueError, match="closed"):
        b.zeros((1,))
    with OpenCLBackend.open("opencl", torch.float32) as c:
        assert c.to_numpy(c.zeros((2,))).tolist() == [0.0, 0.0]
    assert not context._states


@pytest.mark.parametrize("keep_one_open", [False, True], ids=["teardown", "shared"])
def test_open_close_loop_does_not_grow_memory(keep_one_open, fresh_registry):
    """Backends with arrays, opened and closed in a loop: contexts,
    queues, programs and buffers are all released (``teardown``: each close
    is the last, so the device state is rebuilt every time, from the cached
    program binary; ``shared``: another backend keeps the state alive)."""
    keeper = OpenCLBackend.open("opencl", torch.float32) if keep_one_open else None

    def cycle():
        with OpenCLBackend.open("opencl", torch.float32) as be:
            flat = be.zeros((5000,))
            w = be.view(flat, 1, (32, 4))
            x = be.from_host(np.ones((4, 300)))
            z = be.zeros((32, 300))
            be.linear_forward(z, w, be.view(flat, 200, (32,)), x, 1.0)
            dw, db = be.zeros((32, 4)), be.zeros((32,))
            be.weight_gradient(dw, db, z, x)
            assert be.amax(dw) == 0.0
            be.release(flat)
            be.release(x)  # z, dw, db left to the garbage collector

    # Rebuilding the state costs PoCL ~10 ms (it reloads each kernel's
    # compiled work-group function per context), so the teardown loop is
    # shorter; the shared loop runs the full 1000.
    cycles = 1000 if keep_one_open else 300
    try:
        for _ in range(50):
            cycle()
        gc.collect()
        before = _rss_mb()
        for _ in range(cycles):
            cycle()
        gc.collect()
        grown = _rss_mb() - before
    finally:
        if keeper is not None:
            keeper.close()
    assert grown < 10, f"RSS grew by {grown:.1f} MiB over {cycles} open/close cycles"


def test_every_kernel_in_the_program_has_a_signature(f32):
    program = f32._kernels()._program
    names = set(program.get_info(cl.program_info.KERNEL_NAMES).split(";"))
    assert names == set(programs.Kernels.SIGNATURES)


# ------------------------------------- GPU layout, smaller devices (limits)
def _cpu_backend(dtype):
    from scratchnet.backends import get_backend

    return get_backend("cpu", dtype)


def _every_op(be, seed):
    """Run every kernel of the contract on ``be`` from the same host data and
    return the host results by name: the same calls on the CPU backend are
    the oracle.  Shapes are odd, and the sample counts cross 64 and 4,096."""
    rng = _rng("every-op", seed)
    results = {}

    def put(h):
        return be.from_host(np.asarray(h, dtype=np.float64))

    for out, inp, n in ((17, 5, 1003), (1, 16, 3), (32, 4, 10007), (2, 3, 5003)):
        w, b, x = _layer(rng, out, inp, n)
        delta = rng.standard_normal((out, n))
        dw, db, dx, dd = (put(h) for h in (w, b, x, delta))
        key = f"{out}x{inp}x{n}"
        z, a, g = be.zeros((out, n)), be.zeros((out, n)), be.zeros((inp, n))
        be.linear_forward(z, dw, be.bias_operand(db), dx, -1.0)
        be.linear_activation_forward("tanh", a, dw, be.bias_operand(db), dx, 1.0)
        be.input_gradient(g, dw, dd)
        gw, gb = be.zeros((out, inp)), be.zeros((out,))
        be.weight_gradient(gw, gb, dd, dx)
        s = be.zeros((out, n))
        be.subtract(s, dd, a)
        be.activation_backward("sigmoid", a, s)
        be.axpy_(z, -0.25, a)
        cost = be.zeros((1,))
        be.sum_squares(s, cost)
        results.update({f"z {key}": z, f"a {key}": a, f"g {key}": g, f"dw {key}": gw,
                        f"db {key}": gb, f"s {key}": s, f"cost {key}": cost})
        results[f"amax {key}"] = be.amax(dd)
        results[f"transpose {key}"] = be.transpose(dx)
        e = be.zeros((out, n))
        be.elu_forward(z, e)
        be.elu_backward(e, s)
        results[f"elu {key}"], results[f"elu' {key}"] = e, s
        sm, work = be.zeros((out, n)), be.zeros((n,))
        be.softmax_forward(z, sm, work)
        gs = put(delta)
        be.softmax_backward(sm, gs, work)
        results[f"softmax {key}"], results[f"softmax' {key}"] = sm, gs
        yb = put((rng.random((out, n)) > 0.5).astype(float))
        yc = put(np.eye(out)[rng.integers(0, out, n)].T)
        for binary, y, act in ((True, yb, a), (False, yc, sm)):
            if binary:
                be.activation_forward("sigmoid", z, act)
            ce = be.zeros((1,))
            be.cross_entropy_sum(be.zeros((out, n)), act, y, ce, binary)
            results[f"ce binary={binary} {key}"] = ce
        index = be.index_buffer(n // 2 + 1)
        be.load_index(index, rng.integers(0, n, n // 2 + 1))
        picked = be.zeros((inp, n // 2 + 1))
        be.gather_columns(picked, dx, index)
        results[f"gather {key}"] = picked
        wflat, v, m, cnt = (put(rng.standard_normal(out * inp)), be.zeros((out * inp,)),
                            be.zeros((out * inp,)), be.zeros((1,)))
        ghost = rng.standard_normal(out * inp)  # both updates may overwrite their g
        be.momentum_update(wflat, v, put(ghost), lr=0.1, decay=0.01, mu=0.9, nesterov=True)
        be.adam_update(wflat, m, v, put(ghost), cnt, scale=0.5, beta1=0.9, beta2=0.999, eps=1e-8,
                       step=0.01, sqrt_c2=0.03, decay=0.001)
        results.update({f"w {key}": wflat, f"v {key}": v, f"m {key}": m, f"count {key}": cnt})
    return {k: v if isinstance(v, float) else be.to_numpy(v) for k, v in results.items()}


def _compare_with_cpu(be, seed):
    expected = _every_op(_cpu_backend(be.dtype), seed)
    got = _every_op(be, seed)
    rtol = 1e-9 if be.dtype == torch.float64 else 1e-4
    for key, value in expected.items():
        # Sums of 10⁴ terms cancel: the absolute error scales with the array's size.
        atol = rtol * max(1.0, float(np.max(np.abs(value), initial=0.0)))
        np.testing.assert_allclose(got[key], value, rtol=rtol, atol=atol, err_msg=key)


@pytest.fixture
def launches(monkeypatch):
    """Every kernel launch as (name, global size, local size)."""
    seen = []
    launch = OpenCLBackend._launch

    def record(self, name, gsize, lsize, *args):
        seen.append((name, tuple(gsize), None if lsize is None else tuple(lsize)))
        return launch(self, name, gsize, lsize, *args)

    monkeypatch.setattr(OpenCLBackend, "_launch", record)
    return seen


def _assert_fits(seen, limits, kernel_max=None):
    for name, gsize, lsize in seen:
        assert lsize is not None, name
        cap = limits.max_work_group_size if kernel_max is None else min(
            kernel_max, limits.max_work_group_size)
        assert math.prod(lsize) <= cap, (name, lsize, cap)
        assert all(l_ <= m for l_, m in zip(lsize, limits.max_work_item_sizes)), (name, lsize)
        assert all(g % l_ == 0 for g, l_ in zip(gsize, lsize)), (name, gsize, lsize)


@pytest.mark.parametrize("cpu_layout", [True, False], ids=["cpu-layout", "gpu-layout"])
@pytest.mark.parametrize("limits", [{}, {"max_work_group_size": 16},
                                    {"max_work_group_size": 32,
                                     "max_work_item_sizes": (32, 4, 1)}],
                         ids=["native", "wg16", "wg32"])
def test_every_kernel_fits_the_device_limits(backend, launches, limits, cpu_layout):
    """Every local size fits the device's (here simulated) maximum
    work-group and item sizes, and the results equal the CPU backend's."""
    with OpenCLBackend.open("opencl", backend.dtype,
                            limits={**limits, "cpu": cpu_layout}) as be:
        launches.clear()
        _compare_with_cpu(be, seed=str(limits))
        _assert_fits(launches, be.limits)
        used = {name for name, _, _ in launches}
        tree = {"reduce_partial", "reduce_finish"} if cpu_layout else {"reduce_tree"}
        assert used == set(programs.Kernels.SIGNATURES) - (
            {"reduce_partial", "reduce_finish", "reduce_tree"} - tree)


def test_the_kernels_own_work_group_maximum_is_respected(f32, launches, monkeypatch):
    """A kernel whose CL_KERNEL_WORK_GROUP_SIZE (register pressure, say) is
    below the device's gets smaller groups."""
    monkeypatch.setattr(programs.Kernels, "group_max", lambda self, name: 8)
    with OpenCLBackend.open("opencl", torch.float32, limits={"cpu": False}) as be:
        launches.clear()
        _compare_with_cpu(be, seed="kernel-max")
        _assert_fits(launches, be.limits, kernel_max=8)


def test_local_sizes_shrink_to_powers_of_two():
    lim = devices.Limits(max_work_group_size=48, max_work_item_sizes=(48, 48, 48),
                         local_mem_size=1 << 15, compute_units=4, fp64=True, cpu=False)
    assert devices.group_1d(64, 48, lim) == 32
    assert devices.group_1d(64, 1000, lim) == 32      # the item size caps it too
    assert devices.group_2d(8, 48, lim) == (8, 4)
    assert devices.group_2d(8, 3, lim) == (2, 1)
    assert [devices.pow2_at_most(x) for x in (0, 1, 2, 3, 64, 65)] == [1, 1, 2, 2, 64, 64]


@pytest.fixture(params=[torch.float32, torch.float64], ids=["f32", "f64"])
def gpu(request):
    """A backend with the GPU kernel layout (scalar work-items, strided
    sample loops, tree reductions) and 32-wide work-groups, on this device."""
    if request.param == torch.float64 and not _has_fp64():
        pytest.skip("the OpenCL device has no double precision (cl_khr_fp64)")
    be = OpenCLBackend.open("opencl", request.param,
                            limits={"cpu": False, "max_work_group_size": 32})
    yield be
    be.close()


@pytest.mark.parametrize("as_views", [False, True], ids=["alloc", "views"])
@pytest.mark.parametrize("n", SAMPLES + (0, 100_003))
def test_gpu_layout_reductions_match_the_cpu_backend(gpu, n, as_views):
    place = Place(gpu, as_views)
    cpu = _cpu_backend(gpu.dtype)
    rng = _rng("tree", n)
    x = rng.standard_normal(n)
    a = rng.random((1, n))
    y = (rng.random((1, n)) > 0.5).astype(float)
    dx, da, dy, dout = place(x, a, y, np.full(1, 9.0))
    gpu.sum_squares(dx, dout)
    expected = cpu.zeros((1,))
    cpu.sum_squares(cpu.from_host(x), expected)
    assert gpu.read_scalar(dout) == pytest.approx(cpu.read_scalar(expected),
                                                  rel=_tol(gpu)["rtol"], abs=1e-12)
    for binary in (True, False):
        gpu.cross_entropy_sum(gpu.zeros((1, n)), da, dy, dout, binary)
        cpu.cross_entropy_sum(cpu.zeros((1, n)), cpu.from_host(a), cpu.from_host(y), expected,
                              binary)
        assert gpu.read_scalar(dout) == pytest.approx(cpu.read_scalar(expected),
                                                      rel=_tol(gpu)["rtol"], abs=1e-12)
    if n:
        assert gpu.amax(dx) == cpu.amax(cpu.from_host(x))
        for bad in (np.nan, np.inf, -np.inf):
            z = x.copy()
            z[(7 * n) // 11] = bad
            got = gpu.amax(gpu.from_host(z))
            assert math.isnan(got) if np.isnan(bad) else got == math.inf
    place.check_gaps()


@pytest.mark.parametrize("n", SAMPLES + (200_003,))
@pytest.mark.parametrize("shape", ((1, 1), (17, 4), (32, 4), (33, 7)), ids=str)
def test_gpu_layout_weight_gradient(gpu, shape, n):
    out, inp = shape
    rng = _rng("wg-gpu", shape, n)
    delta, a = rng.standard_normal((out, n)), rng.standard_normal((inp, n))
    place = Place(gpu, as_views=True)
    dw, db, dd, da = place(np.full((out, inp), 5.0), np.full(out, 5.0), delta, a)
    gpu.weight_gradient(dw, db, dd, da)
    _check(gpu, dw, _t(delta) @ _t(a).T, scale=math.sqrt(n) * 10)
    _check(gpu, db, _t(delta).sum(1), scale=math.sqrt(n) * 10)
    place.check_gaps()


def test_for_array_checks_double_precision(backend):
    """for_array makes open's fp64 check: a float64 array on a device
    without cl_khr_fp64 (simulated) is refused, naming the argument."""
    x = backend.from_host(np.arange(3.0))
    if backend.dtype == torch.float64:
        with pytest.raises(ValueError, match=r"array: torch.float64 needs double precision"):
            OpenCLBackend.for_array(x, limits={"fp64": False})
        with pytest.raises(ValueError, match=r"dtype: torch.float64 needs double precision"):
            OpenCLBackend.open("opencl", torch.float64, limits={"fp64": False})
    else:
        assert OpenCLBackend.for_array(x, limits={"fp64": False}).amax(x) == 2.0


def test_limits_are_checked():
    with pytest.raises(ValueError, match=r"limits: unknown fields \['warp'\]"):
        OpenCLBackend.open("opencl", torch.float32, limits={"warp": 32})
    with pytest.raises(TypeError, match="limits: expected a dict"):
        OpenCLBackend.open("opencl", torch.float32, limits=[16])
    with pytest.raises(ValueError, match="limits: max_work_group_size must be a positive int"):
        OpenCLBackend.open("opencl", torch.float32, limits={"max_work_group_size": 0})
    with pytest.raises(ValueError, match="limits: max_work_item_sizes must be positive ints"):
        OpenCLBackend.open("opencl", torch.float32, limits={"max_work_item_sizes": (16, 0)})


# --------------------------------------------------------- devices, errors
def test_device_strings():
    devices = OpenCLBackend.available_devices("opencl")
    assert devices and all(d.count(":") == 2 for d in devices)
    assert OpenCLBackend.available_devices("cpu") == []
    for spec in ("opencl", devices[0], "opencl:0"):
        with OpenCLBackend.open(spec, torch.float32) as be:
            assert be.device.startswith("opencl:") and be.name == "opencl"
    with pytest.raises(ValueError, match=r"device: 'opencl:99:0' does not exist.*opencl:0:0"):
        OpenCLBackend.open("opencl:99:0", torch.float32)
    with pytest.raises(ValueError, match="not an OpenCL device string"):
        OpenCLBackend.open("opencl:gpu", torch.float32)
    with pytest.raises(ValueError, match="dtype: .*float16"):
        OpenCLBackend.open("opencl", torch.float16)
    with pytest.raises(TypeError, match="device: expected a device string"):
        OpenCLBackend.open(0, torch.float32)


def test_registry_finds_the_plugin():
    from scratchnet.backends import available_devices, backend_of, get_backend

    assert "opencl:0:0" in available_devices()
    be = get_backend("opencl", torch.float32)
    try:
        assert isinstance(be, OpenCLBackend)
        assert backend_of(be.zeros((1,))) is OpenCLBackend
    finally:
        be.close()


def test_no_platform_says_how_to_get_one(monkeypatch):
    def no_platform():
        raise cl.LogicError("clGetPlatformIDs failed: PLATFORM_NOT_FOUND_KHR")

    monkeypatch.setattr(cl, "get_platforms", no_platform)
    reason = OpenCLBackend.unavailable_reason("opencl")
    assert "no OpenCL platform" in reason and "pip install 'scratchnet[opencl]'" in reason
    assert OpenCLBackend.available_devices("opencl") == []
    with pytest.raises(ValueError, match=r"pip install 'scratchnet\[opencl\]'"):
        OpenCLBackend.open("opencl", torch.float32)


def test_missing_pyopencl_import_error_says_how_to_install(monkeypatch):
    monkeypatch.delitem(sys.modules, "opencl_ext.backend")
    monkeypatch.setitem(sys.modules, "pyopencl", None)
    monkeypatch.setitem(sys.modules, "pyopencl.array", None)
    with pytest.raises(ImportError, match=r"pip install 'scratchnet\[opencl\]'"):
        importlib.import_module("opencl_ext.backend")
