"""The series' printed results, reproduced on every available device.

Each test names the part and the printed value it checks.  Parts 1-10 build
the network from matrix products: on torch devices (cpu, cuda) the tests use
plain torch operations, as ``docs/series/`` does; on other devices (OpenCL)
they use the scratchnet backend contract's kernels (``from_host``,
``linear_forward``, ``activation_forward``, ``activation_backward``,
``weight_gradient``, ``input_gradient``, ``to_numpy``) and, for the general
maths of part 7 that no layer kernel covers, pyopencl's element-wise array
operations on the same device arrays.  Parts 11-16 use scratchnet's public
API.

A value the series prints with two decimals is reproduced when ours is
within 0.005 of it; every such value is also compared with a float64 numpy
oracle written here, to float32 (or float64) rounding.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import forward64, params64, quadratic64, regression_data, series_net

import scratchnet as sn
from scratchnet.backends import get_backend

# The series' example network (parts 1-13): 2 inputs, 4 tanh, 1 sigmoid.
X = np.array([0.3, 0.9])
W1 = np.array([[0.3, 0.6], [0.1, 2.0], [0.9, 3.7], [0.0, 1.0]])
B1 = np.array([0.7, 0.2, 1.1, 2.0])
W2 = np.array([[0.75, 0.15, 0.22, 0.33]])
B2 = np.array([0.3])
X2 = np.array([[0.3, 0.3], [0.9, 0.9]])   # the batch of two equal inputs (columns)

RTOL = {torch.float32: 2e-6, torch.float64: 1e-12}


def sigmoid64(z):
    return 1.0 / (1.0 + np.exp(-z))


def assert_printed(ours, printed, decimals=2):
    """``printed`` is what the series shows with ``decimals`` decimals: ours
    must round to it (|ours - printed| <= half a unit of the last digit)."""
    ours = np.asarray(ours, dtype=np.float64)
    printed = np.asarray(printed, dtype=np.float64)
    assert ours.shape == printed.shape, (ours.shape, printed.shape)
    half = 0.5 * 10.0 ** -decimals * (1 + 1e-9)
    bad = np.abs(ours - printed) > half
    assert not bad.any(), f"ours {ours[bad]} vs printed {printed[bad]}"


def assert_oracle(ours, oracle, dtype):
    np.testing.assert_allclose(np.asarray(ours, np.float64), oracle, rtol=RTOL[dtype],
                               atol=RTOL[dtype])


def is_torch_device(device: str) -> bool:
    return device.split(":")[0] in ("cpu", "cuda")


# --------------------------------------------------------------------- kits
class TorchOps:
    """Parts 1-10 with plain torch operations (what docs/series shows).
    Vectors are 1-D, batches are (features, n), samples are columns."""

    def __init__(self, device, dtype):
        self.device, self.dtype = torch.device(device), dtype

    def array(self, data):
        return torch.tensor(np.asarray(data, dtype=np.float64), dtype=self.dtype,
                            device=self.device)

    def zeros(self, shape):
        return torch.zeros(shape, dtype=self.dtype, device=self.device)

    def host(self, a):
        return a.detach().cpu().double().numpy()

    def copy(self, a):
        return a.clone()

    def matmul(self, w, x):
        return w @ x

    def linear(self, w, b, x, sign=-1.0):
        """w x + sign b (1^T): the series' mv!/mm! then axpy!/rk!."""
        if x.dim() == 1:
            return torch.mv(w, x).add_(b, alpha=sign)
        ones = torch.ones(x.shape[1], dtype=self.dtype, device=self.device)
        return torch.mm(w, x).addr_(b, ones, alpha=sign)

    def act(self, name, z):
        if name == "sigmoid":   # the series' 0.5 + 0.5 tanh(z / 2)
            return torch.tanh(z * 0.5).mul_(0.5).add_(0.5)
        if name == "tanh":
            return torch.tanh(z)
        if name == "relu":
            return torch.clamp_min(z, 0.0)
        return z.clone()

    def prime(self, name, z):
        """f'(z): sigmoid s(1 - s), tanh 1 / cosh(z)^2 (the series' prime)."""
        if name == "sigmoid":
            s = self.act("sigmoid", z)
            return s * (1 - s)
        if name == "tanh":
            return torch.cosh(z).reciprocal_().square_()
        return torch.ones_like(z)

    def addr(self, a, x, y, alpha=1.0):
        """a + alpha x y^T (the series' rk!)."""
        return a.clone().addr_(x, y, alpha=alpha)

    def step(self, threshold, x):
        return torch.maximum(threshold, x).sub_(threshold).sign_()

    def relu_at(self, threshold, x):
        return torch.maximum(threshold, x).sub_(threshold)

    def mul(self, a, b):
        return a * b

    def exp(self, a):
        return torch.exp(a)

    def sin(self, a):
        return torch.sin(a)

    def cos(self, a):
        return torch.cos(a)

    def gradient_target(self, previous):
        """Where a layer sends W^T delta: the previous layer's a (the series;
        its derivative is read from z)."""
        return previous["a"]

    def backward(self, layer, g, eta, g_prev):
        """Part 10's backward pass of one training layer, g the gradient
        that arrived: delta = f'(z) * g; v = -(eta/n) delta a_prev^T;
        g_prev := W^T delta (unless None); b += -(eta/n) delta 1; W += v."""
        n = layer["a_prev"].shape[1]
        delta = self.prime(layer["name"], layer["z"]) * g
        v = (-eta / n) * (delta @ layer["a_prev"].T)
        if g_prev is not None:
            g_prev.copy_(layer["w"].T @ delta)
        layer["b"].add_(delta.sum(dim=1), alpha=-eta / n)
        layer["w"].add_(v)


class KernelOps:
    """The same steps with a scratchnet backend's kernels, for devices torch
    operations cannot reach.  A vector stays 1-D; where a kernel needs a
    matrix it is viewed as a column."""

    def __init__(self, device, dtype):
        self.be = get_backend(device, dtype)
        self.dtype = dtype

    def array(self, data):
        return self.be.from_host(np.asarray(data, dtype=np.float64))

    def zeros(self, shape):
        return self.be.zeros(tuple(shape))

    def host(self, a):
        out = self.be.to_numpy(a).astype(np.float64)
        return out[:, 0] if out.ndim == 2 and out.shape[1] == 1 else out

    def copy(self, a):
        out = self.be.zeros(tuple(a.shape))
        self.be.copy_(out, a)
        return out

    def _column(self, x):
        return self.be.view(x, 0, (x.shape[0], 1)) if len(x.shape) == 1 else x

    def linear(self, w, b, x, sign=-1.0):
        x = self._column(x)
        z = self.be.zeros((w.shape[0], x.shape[1]))
        self.be.linear_forward(z, w, self.be.bias_operand(b), x, sign)
        return z

    def matmul(self, w, x):
        return self.linear(w, self.be.zeros((w.shape[0],)), x, 1.0)

    def act(self, name, z):
        a = self.be.zeros(tuple(z.shape))
        self.be.activation_forward(name, z, a)
        return a

    def prime(self, name, z):
        """f'(z) through a = f(z), by the backend's own derivative kernel."""
        g = self.be.from_host(np.ones(tuple(z.shape)))
        self.be.activation_backward(name, self.act(name, z), g)
        return g

    def addr(self, a, x, y, alpha=1.0):
        outer = self.matmul(self._column(x), self.be.view(y, 0, (1, y.shape[0])))
        out = self.copy(a)
        self.be.axpy_(out, alpha, outer)
        return out

    def relu_at(self, threshold, x):
        d = self.copy(x)
        self.be.axpy_(d, -1.0, threshold)
        self.be.activation_forward("relu", d, d)
        return d

    def step(self, threshold, x):
        import pyopencl.array as cla
        d = self.relu_at(threshold, x)
        return cla.if_positive(d, cla.zeros_like(d) + 1, cla.zeros_like(d))

    def mul(self, a, b):
        return a * b

    def exp(self, a):
        import pyopencl.clmath as clmath
        return clmath.exp(a)

    def sin(self, a):
        import pyopencl.clmath as clmath
        return clmath.sin(a)

    def cos(self, a):
        import pyopencl.clmath as clmath
        return clmath.cos(a)

    def gradient_target(self, previous):
        """Where a layer sends W^T delta: the previous layer's z, dead after
        its forward pass (scratchnet's layout: f' is read through a)."""
        return previous["z"]

    def backward(self, layer, g, eta, g_prev):
        """Part 10's backward pass with the contract's kernels."""
        be = self.be
        n = layer["a_prev"].shape[1]
        be.activation_backward(layer["name"], layer["a"], g)            # g := delta
        dw = be.zeros(tuple(layer["w"].shape))
        db = be.zeros((layer["w"].shape[0],))
        be.weight_gradient(dw, db, g, layer["a_prev"])                  # before a_prev changes
        if g_prev is not None:
            be.input_gradient(g_prev, layer["w"], g)                    # with the old W
        be.axpy_(layer["b"], -eta / n, db)
        be.axpy_(layer["w"], -eta / n, dw)


def ops_for(device, dtype):
    if is_torch_device(device):
        return TorchOps(device, dtype)
    pytest.importorskip("pyopencl")
    return KernelOps(device, dtype)


# ------------------------------------------------------------------- part 1
def test_part01_layers(device):
    """Part 1: h1 = W1 x printed [0.00 1.83 3.60 0.90] (its first entry a
    display slip: the part's own equation gives 0.63) and y = W2 h1 printed
    [1.84], float64."""
    ops = ops_for(device, torch.float64)
    h1 = ops.matmul(ops.array(W1), ops.array(X))
    y = ops.matmul(ops.array(W2), h1)
    assert_printed(ops.host(h1)[1:], [1.83, 3.60, 0.90])
    assert_printed(ops.host(h1)[0], 0.63)                 # the equation's value
    assert not abs(ops.host(h1)[0] - 0.00) <= 0.005       # the print slip is not a result
    assert_printed(ops.host(y), [1.84])
    assert_oracle(ops.host(y), W2 @ (W1 @ X), torch.float64)


# ------------------------------------------------------------------- part 2
def test_part02_step_relu_tanh(device):
    """Part 2: step!([1 2 3], [0 2 7]) printed [0 0 1]; the step of W1 x at
    the thresholds (0.7 0.2 1.1 2), of W1 x - bias at 0 and of W1 x at the
    bias, each printed [0 1 1 0]; relu! printed [0.00 1.63 2.50 0.00]; tanh
    of W1 x - bias printed [-0.07 0.93 0.99 -0.80]."""
    ops = ops_for(device, torch.float64)
    assert_printed(ops.host(ops.step(ops.array([1, 2, 3]), ops.array([0, 2, 7]))), [0, 0, 1])
    wx = ops.matmul(ops.array(W1), ops.array(X))
    bias = ops.array(B1)
    zero = ops.array(np.zeros(4))
    assert_printed(ops.host(ops.step(bias, wx)), [0, 1, 1, 0])
    assert_printed(ops.host(ops.step(zero, ops.linear(ops.array(W1), bias, ops.array(X)))),
                   [0, 1, 1, 0])
    assert_printed(ops.host(ops.relu_at(bias, wx)), [0.00, 1.63, 2.50, 0.00])
    t = ops.act("tanh", ops.linear(ops.array(W1), bias, ops.array(X)))
    assert_printed(ops.host(t), [-0.07, 0.93, 0.99, -0.80])
    assert_oracle(ops.host(t), np.tanh(W1 @ X - B1), torch.float64)


def test_part02_exp_overflow(device):
    """Part 2: [(exp 709) (exp 710) (float (exp 88)) (float (exp 89))]
    printed [8.218407461554972E307 ##Inf 1.6516363E38 ##Inf]."""
    big = ops_for(device, torch.float64)
    small = ops_for(device, torch.float32)
    e64 = big.host(big.exp(big.array([709.0, 710.0])))
    e32 = small.host(small.exp(small.array([88.0, 89.0])))
    assert e64[0] == pytest.approx(8.218407461554972e307, rel=1e-15)
    assert e64[1] == math.inf
    assert np.float32(e32[0]) == pytest.approx(np.float32(1.6516363e38), rel=2e-7)
    assert e32[1] == math.inf


def test_part02_sigmoid_and_two_layers(device):
    """Part 2: sigmoid!(W1 x - bias) printed [0.48 0.84 0.92 0.25]; the
    tanh-then-sigmoid network printed [0.44]."""
    ops = ops_for(device, torch.float64)
    s = ops.act("sigmoid", ops.linear(ops.array(W1), ops.array(B1), ops.array(X)))
    assert_printed(ops.host(s), [0.48, 0.84, 0.92, 0.25])
    assert_oracle(ops.host(s), sigmoid64(W1 @ X - B1), torch.float64)
    h1 = ops.act("tanh", ops.linear(ops.array(W1), ops.array(B1), ops.array(X)))
    y = ops.act("sigmoid", ops.linear(ops.array(W2), ops.array(B2), h1))
    assert_printed(ops.host(y), [0.44])
    assert_oracle(ops.host(y), sigmoid64(W2 @ np.tanh(W1 @ X - B1) - B2), torch.float64)


# ------------------------------------------------------------------- part 3
def test_part03_layers(device):
    """Part 3: layer-1 (sigmoid) with the series' flat list
    [0.3 0.1 0.0 0.0 0.6 2.0 3.7 1.0] filled column by column printed
    [0.48 0.84 0.90 0.25]; the two-layer network printed [0.44]."""
    ops = ops_for(device, torch.float64)
    w_typo = np.array([0.3, 0.1, 0.0, 0.0, 0.6, 2.0, 3.7, 1.0]).reshape(2, 4).T
    s = ops.act("sigmoid", ops.linear(ops.array(w_typo), ops.array(B1), ops.array(X)))
    assert_printed(ops.host(s), [0.48, 0.84, 0.90, 0.25])
    assert_oracle(ops.host(s), sigmoid64(w_typo @ X - B1), torch.float64)
    w1 = np.array([0.3, 0.1, 0.9, 0.0, 0.6, 2.0, 3.7, 1.0]).reshape(2, 4).T
    np.testing.assert_array_equal(w1, W1)
    h1 = ops.act("tanh", ops.linear(ops.array(w1), ops.array(B1), ops.array(X)))
    y = ops.act("sigmoid", ops.linear(ops.array(W2), ops.array(B2), h1))
    assert_printed(ops.host(y), [0.44])


# ------------------------------------------------------------------- part 4
def test_part04_batch_and_broadcast(device):
    """Part 4: (mm w1 x) printed 0.63 1.83 3.60 0.90; sigmoid with the bias
    matrix printed 0.48 0.84 0.92 0.25; (rk! 2 x y a) printed 1040 1060 /
    1080 1120 / 1120 1180; (rk! x ones a) printed 1001 1001 / 1002 1002 /
    1003 1003; the batched layer printed 0.48 0.84 0.92 0.25."""
    ops = ops_for(device, torch.float64)
    x = ops.array(X.reshape(2, 1))
    assert_printed(ops.host(ops.matmul(ops.array(W1), x)).ravel(), [0.63, 1.83, 3.60, 0.90])
    thousand = ops.array(np.full((3, 2), 1000.0))
    rk = ops.addr(thousand, ops.array([1.0, 2, 3]), ops.array([20.0, 30]), alpha=2.0)
    assert_printed(ops.host(rk), [[1040, 1060], [1080, 1120], [1120, 1180]])
    rk = ops.addr(thousand, ops.array([1.0, 2, 3]), ops.array([1.0, 1.0]))
    assert_printed(ops.host(rk), [[1001, 1001], [1002, 1002], [1003, 1003]])
    s = ops.act("sigmoid", ops.linear(ops.array(W1), ops.array(B1), x))
    assert_printed(ops.host(s).ravel(), [0.48, 0.84, 0.92, 0.25])
    assert_oracle(ops.host(s).ravel(), sigmoid64(W1 @ X - B1), torch.float64)


# ------------------------------------------------------------------- part 5
def test_part05_shared_memory(device):
    """Part 5: with a-1 and a-2 views of one buffer the network printed
    0.41 0.44 (a BLAS product with beta = 0 zeroes its output, the first
    two entries of a-1's first column, before reading them); with two
    buffers it printed 0.44 0.44."""
    ops = ops_for(device, torch.float64)
    x = ops.array(X2)
    a1 = ops.act("tanh", ops.linear(ops.array(W1), ops.array(B1), x))
    good = ops.act("sigmoid", ops.linear(ops.array(W2), ops.array(B2), a1))
    assert_printed(ops.host(good).ravel(), [0.44, 0.44])
    if isinstance(ops, TorchOps):
        temp = torch.zeros(8, dtype=torch.float64, device=ops.device)
        a_1 = temp.view(2, 4).T                  # column-major 4 x 2 view
        a_1.copy_(a1)
        a_2 = temp[:2].view(2, 1).T              # 1 x 2 view of the same memory
        a_2.zero_()
        bad = ops.act("sigmoid", ops.linear(ops.array(W2), ops.array(B2), a_1))
    else:
        # the same two entries in the backend's row-major (4, 2) layout:
        # a1 is a view of an 8-entry buffer, and a 1-entry view of the
        # buffer is zeroed at a1[0, 0] and a1[1, 0]
        be = ops.be
        temp = be.zeros((8,))
        a_1 = be.view(temp, 0, (4, 2))
        be.linear_forward(a_1, ops.array(W1), be.bias_operand(ops.array(B1)), x, -1.0)
        be.activation_forward("tanh", a_1, a_1)
        zero = be.zeros((1,))
        for offset in (0, 2):
            be.copy_(be.view(temp, offset, (1,)), zero)
        bad = ops.act("sigmoid", ops.linear(ops.array(W2), ops.array(B2), a_1))
    assert_printed(ops.host(bad).ravel(), [0.41, 0.44])
    corrupted = np.tanh(W1 @ X - B1)
    corrupted[:2] = 0
    assert_oracle(ops.host(bad).ravel()[0], sigmoid64(W2 @ corrupted - B2)[0], torch.float64)


# ------------------------------------------------------------------- part 6
def series_network_on(backend):
    x = backend.from_host(X2)
    w1, b1 = backend.from_host(W1), backend.from_host(B1)
    w2, b2 = backend.from_host(W2), backend.from_host(B2)
    a1, a2 = backend.zeros((4, 2)), backend.zeros((1, 2))
    backend.linear_forward(a1, w1, backend.bias_operand(b1), x, -1.0)
    backend.activation_forward("tanh", a1, a1)
    backend.linear_forward(a2, w2, backend.bias_operand(b2), a1, -1.0)
    backend.activation_forward("sigmoid", a2, a2)
    out = backend.to_numpy(a2)
    for array in (x, w1, b1, w2, b2, a1, a2):
        backend.release(array)
    return out


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_part06_every_backend(device, dtype):
    """Part 6: this-particular-network printed 0.44 0.44 with native-double,
    native-float, CUDA and OpenCL factories: the same code through the
    backend contract on every device and both precisions."""
    try:
        backend = get_backend(device, dtype)
    except ValueError as exc:   # e.g. an OpenCL device without fp64
        pytest.skip(str(exc))
    out = series_network_on(backend)
    backend.close()
    assert_printed(out.ravel(), [0.44, 0.44])
    assert_oracle(out.ravel(), np.repeat(sigmoid64(W2 @ np.tanh(W1 @ X - B1) - B2), 2), dtype)


def test_part06_two_devices(device):
    """Part 6: layer 1 on one device, layer 2 on another (the series mixes
    OpenCL and CUDA) printed 0.44 0.44: here layer 1 on ``device``, layer 2
    on the CPU."""
    first, second = get_backend(device, torch.float32), get_backend("cpu", torch.float32)
    x, w1, b1 = first.from_host(X2), first.from_host(W1), first.from_host(B1)
    a1 = first.zeros((4, 2))
    first.linear_forward(a1, w1, first.bias_operand(b1), x, -1.0)
    first.activation_forward("tanh", a1, a1)
    a1_cpu = second.from_host(first.to_numpy(a1))
    w2, b2, a2 = second.from_host(W2), second.from_host(B2), second.zeros((1, 2))
    second.linear_forward(a2, w2, second.bias_operand(b2), a1_cpu, -1.0)
    second.activation_forward("sigmoid", a2, a2)
    out = second.to_numpy(a2).ravel()
    first.close()
    second.close()
    assert_printed(out, [0.44, 0.44])


# ------------------------------------------------------------------- part 7
def test_part07_hadamard(device):
    """Part 7: (mul x y) and (mul! x y) of [1 2 3], [4 5 6] printed
    [4.00 10.00 18.00]; the 2 x 3 matrices (column-major 1..6, 7..12)
    printed 7 27 55 / 16 40 72."""
    ops = ops_for(device, torch.float64)
    assert_printed(ops.host(ops.mul(ops.array([1.0, 2, 3]), ops.array([4.0, 5, 6]))),
                   [4, 10, 18])
    a = ops.array(np.arange(1.0, 7.0).reshape(3, 2).T)
    b = ops.array(np.arange(7.0, 13.0).reshape(3, 2).T)
    assert_printed(ops.host(ops.mul(a, b)), [[7, 27, 55], [16, 40, 72]])


def test_part07_exp_sin_cos(device):
    """Part 7: for x = [0 0.5 0.7 1], exp printed [1.00 1.65 2.01 2.72],
    sin [0.00 0.48 0.64 0.84] and cos [1.00 0.88 0.76 0.54]."""
    ops = ops_for(device, torch.float64)
    x = np.array([0, 0.5, 0.7, 1])
    for f, oracle, printed in [(ops.exp, np.exp, [1.00, 1.65, 2.01, 2.72]),
                               (ops.sin, np.sin, [0.00, 0.48, 0.64, 0.84]),
                               (ops.cos, np.cos, [1.00, 0.88, 0.76, 0.54])]:
        ours = ops.host(f(ops.array(x)))
        assert_printed(ours, printed)
        assert_oracle(ours, oracle(x), torch.float64)


def test_part07_sigmoid_prime(device):
    """Part 7: sigmoid-prim! of [0.1 0.5 0.9 pi/2] printed
    [0.00 0.24 0.21 0.14]; its first entry is a display slip (0.2494
    rounds to 0.25), the other three are reproduced."""
    ops = ops_for(device, torch.float64)
    x = np.array([0.1, 0.5, 0.9, math.pi / 2])
    prime = ops.host(ops.prime("sigmoid", ops.array(x)))
    assert_printed(prime[1:], [0.24, 0.21, 0.14])
    assert_printed(prime[0], 0.25)
    assert_oracle(prime, sigmoid64(x) * (1 - sigmoid64(x)), torch.float64)


# ------------------------------------------------------------- parts 8-10
def training_layers(ops, dtype=torch.float32):
    """The series' two training layers on the batch of two (forward done)."""
    x = ops.array(X2)
    layers = []
    a_prev = x
    for w, b, name in [(W1, B1, "tanh"), (W2, B2, "sigmoid")]:
        layer = {"w": ops.array(w), "b": ops.array(b), "name": name, "a_prev": a_prev}
        layer["z"] = ops.linear(layer["w"], layer["b"], a_prev)
        layer["a"] = ops.act(name, layer["z"])
        layers.append(layer)
        a_prev = layer["a"]
    return x, layers


def test_part08_forward_pass(device):
    """Part 8: the forward pass of two training layers (float32) printed
    0.44 0.44, and keeps z: z of the output layer is W2 a1 - b2."""
    ops = ops_for(device, torch.float32)
    _, layers = training_layers(ops, torch.float32)
    assert_printed(ops.host(layers[1]["a"]).ravel(), [0.44, 0.44])
    z2 = W2 @ np.tanh(W1 @ X - B1) - B2
    assert_oracle(ops.host(layers[1]["z"]).ravel(), np.repeat(z2, 2), torch.float32)


def test_part09_sigmoid_and_prime(device):
    """Part 9: on the 2 x 3 matrix (column-major -0.6 0 0.2 0.5 0.7 1) the
    sigmoid printed 0.35 0.55 0.67 / 0.50 0.62 0.73 and its derivative
    0.23 0.25 0.22 / 0.25 0.24 0.20 (float32)."""
    ops = ops_for(device, torch.float32)
    z = np.array([-0.6, 0, 0.2, 0.5, 0.7, 1]).reshape(3, 2).T
    a = ops.host(ops.act("sigmoid", ops.array(z)))
    d = ops.host(ops.prime("sigmoid", ops.array(z)))
    assert_printed(a, [[0.35, 0.55, 0.67], [0.50, 0.62, 0.73]])
    assert_printed(d, [[0.23, 0.25, 0.22], [0.25, 0.24, 0.20]])
    assert_oracle(a, sigmoid64(z), torch.float32)
    assert_oracle(d, sigmoid64(z) * (1 - sigmoid64(z)), torch.float32)


def test_part09_backward_keeps_output(device):
    """Part 9: after forward and the first backward line, delta =
    f'(z) * a, the output printed 0.44 0.44 (the step writes into z only)."""
    ops = ops_for(device, torch.float32)
    _, layers = training_layers(ops, torch.float32)
    out = layers[1]
    delta = ops.copy(out["a"])   # what arrived: here the output itself
    if isinstance(ops, TorchOps):
        delta = ops.prime(out["name"], out["z"]).mul_(delta)
    else:                         # the kernel form: g := g * f'(z), read through a
        ops.be.activation_backward(out["name"], out["a"], delta)
    assert_printed(ops.host(out["a"]).ravel(), [0.44, 0.44])
    a2 = sigmoid64(W2 @ np.tanh(W1 @ X - B1) - B2)
    assert_oracle(ops.host(delta).ravel(), np.repeat(a2 * a2 * (1 - a2), 2), torch.float32)


def test_part10_backward_step(device):
    """Part 10: forward, then backward with eta = 0.05 (the complete pass,
    with v), printed 0.44 0.44 for the output; the first layer writes
    W1^T delta1 into its input x (the bug part 12 fixes)."""
    ops = ops_for(device, torch.float32)
    x, (layer_1, layer_2) = training_layers(ops, torch.float32)
    ops.backward(layer_2, ops.copy(layer_2["a"]), 0.05, g_prev=ops.gradient_target(layer_1))
    ops.backward(layer_1, ops.gradient_target(layer_1), 0.05, g_prev=x)   # into the input
    assert_printed(ops.host(layer_2["a"]).ravel(), [0.44, 0.44])
    # the oracle of that step, float64
    z1 = W1 @ X - B1
    a1 = np.tanh(z1)
    a2 = sigmoid64(W2 @ a1 - B2)
    delta2 = a2 * (1 - a2) * a2
    delta1 = (W2.T @ delta2) * (1 - a1 ** 2)
    x_after = W1.T @ delta1
    assert_oracle(ops.host(x)[:, 0], x_after, torch.float32)
    assert_printed(ops.host(x)[:, 0], [0.02, 0.07])


# ------------------------------------------------------------------ part 11
def test_part11_network_api(device):
    """Part 11: the inference network built from (fully-connected 4 tanh)
    (fully-connected 1 sigmoid) with the series' weights printed 0.44 0.44,
    and so did the forward pass of its training layers."""
    x = np.array([[0.3, 0.9], [0.3, 0.9]], np.float32)
    with series_net(device) as net:
        out = sn.to_numpy(net(x)).ravel()
        with sn.training_network(net, x) as train:
            train.forward()
            forward = sn.to_numpy(train.output).ravel()
    assert_printed(out, [0.44, 0.44])
    assert_printed(forward, [0.44, 0.44])
    oracle = np.repeat(sigmoid64(W2 @ np.tanh(W1 @ X - B1) - B2), 2)
    assert_oracle(out, oracle, torch.float32)
    assert_oracle(forward, oracle, torch.float32)


# ------------------------------------------------------------------ part 12
PART12_COSTS = [0.002098702784638695, 0.0017663558073730684, 3.046310691223221e-4,
                6.079136854164445e-12]
PART12_BUGGY = [0.002098702784638695, 0.03938786120157389, 0.017940293857535927,
                6.11451947087874e-8]


def test_part12_costs(device):
    """Part 12 (fixed layers): :untrained 0.44 0.44; :cost after calls of
    1, 20, 200, 2000 epochs at eta 0.05 [0.002098702784638695
    0.0017663558073730684 3.046310691223221E-4 6.079136854164445E-12];
    :trained 0.50 0.50; :inputs-are-unchanged 0.30 0.30 / 0.90 0.90.  The
    last cost (after 2221 epochs, |a - y| ~ 3.5e-6) is float32 rounding
    noise: only its size is checked."""
    x = np.array([[0.3, 0.9], [0.3, 0.9]], np.float32)
    y = np.array([[0.5], [0.5]], np.float32)
    with series_net(device) as net:
        assert_printed(sn.to_numpy(net(x)).ravel(), [0.44, 0.44])
        with sn.training_network(net, x) as train:
            costs = [sn.sgd(train, y, sn.quadratic_cost, epochs, 0.05)
                     for epochs in (1, 20, 200, 2000)]
            inputs = sn.to_numpy(train.x)          # the training input, samples as columns
        trained = sn.to_numpy(net(x)).ravel()
    np.testing.assert_allclose(costs[:3], PART12_COSTS[:3], rtol=2e-5)
    assert 4e-12 < costs[3] < 9e-12
    assert_printed(trained, [0.50, 0.50])
    assert_printed(inputs, [[0.30, 0.30], [0.90, 0.90]])
    np.testing.assert_array_equal(inputs, x.T)


def test_part12_first_layer_bug(device):
    """Part 12 (part 10's layers, the first writing W1^T delta1 into the
    training input): :cost [0.002098702784638695 0.03938786120157389
    0.017940293857535927 6.11451947087874E-8], :trained 0.50 0.50 and
    :messed-up-inputs 0.00, replayed with the backend contract's kernels, the series' bias sign."""
    be = get_backend(device, torch.float32)
    x = be.from_host(X2)
    y = be.from_host(np.full((1, 2), 0.5))
    w = [be.from_host(W1), be.from_host(W2)]
    b = [be.from_host(B1), be.from_host(B2)]
    names = ["tanh", "sigmoid"]
    z = [be.zeros((4, 2)), be.zeros((1, 2))]
    a = [be.zeros((4, 2)), be.zeros((1, 2))]
    dw = [be.zeros((4, 2)), be.zeros((1, 4))]
    db = [be.zeros((4,)), be.zeros((1,))]
    total = be.zeros((1,))
    eta, n = 0.05, 2
    costs = []
    for epochs in (1, 20, 200, 2000):
        for _ in range(epochs):
            inputs = [x, a[0]]
            for i in range(2):
                be.linear_forward(z[i], w[i], be.bias_operand(b[i]), inputs[i], -1.0)
                be.activation_forward(names[i], z[i], a[i])
            be.subtract(z[1], a[1], y)                     # a - y, the cost's gradient
            be.sum_squares(z[1], total)
            cost = be.read_scalar(total) / (2 * 2)         # the series: / (2 dim)
            for i, g_prev in [(1, z[0]), (0, x)]:          # layer 1 sends into x: the bug
                be.activation_backward(names[i], a[i], z[i])
                be.weight_gradient(dw[i], db[i], z[i], inputs[i])
                be.input_gradient(g_prev, w[i], z[i])
                be.axpy_(b[i], -eta / n, db[i])
                be.axpy_(w[i], -eta / n, dw[i])
        costs.append(cost)
    messed_up = be.to_numpy(x)
    for i, inp in enumerate([x, a[0]]):                  # :trained, run on that input
        be.linear_forward(z[i], w[i], be.bias_operand(b[i]), inp, -1.0)
        be.activation_forward(names[i], z[i], a[i])
    trained = be.to_numpy(a[1]).ravel()
    be.close()
    np.testing.assert_allclose(costs[:3], PART12_BUGGY[:3], rtol=1e-5)
    assert costs[3] == pytest.approx(PART12_BUGGY[3], rel=1e-2)
    assert_printed(messed_up, np.zeros((2, 2)))
    assert_printed(trained, [0.50, 0.50])


def zero_network(device, in_dim=20, batch=8):
    """The series' 5000 tanh, 1000 sigmoid, 10 sigmoid network with every
    weight, bias and input zero (its matrices are never filled).  With x = 0
    the input size and the batch size change nothing: W1 x = 0, the first
    weight gradient is 0 and every column is the same."""
    net = sn.inference_network(in_dim, [sn.fully_connected(5000, sn.tanh),
                                        sn.fully_connected(1000, sn.sigmoid),
                                        sn.fully_connected(10, sn.sigmoid)],
                               device=device, convention="series")
    zeros = net.backend.zeros(tuple(net.params.shape))
    net.backend.copy_(net.params, zeros)
    net.backend.release(zeros)
    x = np.zeros((batch, in_dim), np.float32)
    y = np.full((batch, 10), 0.33, np.float32)
    return net, sn.training_network(net, x), y


def test_part12_zero_network_histories(device):
    """Part 12: from zero weights toward 0.33, (repeat 10 [1 0.05]) printed
    (0.014449996757507506 8.290537741757475E-4 ... 1.191597931438082E-10)
    on OpenCL; on CUDA 10 epochs printed 1.5301938232359652E-10 and the
    schedule [[5 0.05] [3 0.01] [7 0.03]] (1.8620442036106511E-6
    1.667241243660955E-7 5.590568293065319E-10).  The series' cost divides by
    the 10 outputs too, ours by the samples only: ours / 10 is compared.
    The first cost is exact (every output 0.5); the later ones carry float32
    rounding of long sums, ordered differently on every device: 1% on the
    OpenCL history; the CUDA tails, where the series' own two devices differ
    by 22%, to 30% and 15%."""
    printed = [0.014449996757507506, 8.290537741757475e-4, 9.218424783519197e-5,
               1.2667876092553598e-5, 1.8619289903165748e-6, 2.809187553687309e-7,
               4.213832882626889e-8, 6.678606112586749e-9, 9.714189452836308e-10,
               1.191597931438082e-10]
    net, train, y = zero_network(device)
    history = np.array(sn.sgd(train, y, sn.quadratic_cost, [(1, 0.05)] * 10)) / 10
    train.close()
    net.close()
    assert history[0] == pytest.approx(printed[0], rel=1e-6)
    np.testing.assert_allclose(history[1:], printed[1:], rtol=1e-2)

    net, train, y = zero_network(device)
    ten = sn.sgd(train, y, sn.quadratic_cost, 10, 0.05) / 10
    train.close()
    net.close()
    assert ten == pytest.approx(1.5301938232359652e-10, rel=0.3)
    assert ten == pytest.approx(printed[-1], rel=1e-2)

    net, train, y = zero_network(device)
    sched = np.array(sn.sgd(train, y, sn.quadratic_cost, [(5, 0.05), (3, 0.01), (7, 0.03)])) / 10
    train.close()
    net.close()
    assert sched[0] == pytest.approx(1.8620442036106511e-6, rel=1e-5)
    assert sched[1] == pytest.approx(1.667241243660955e-7, rel=1e-2)
    assert sched[2] == pytest.approx(5.590568293065319e-10, rel=0.15)


# ------------------------------------------------------------------ part 13
def test_part13_hand_picked_weights_learn(device):
    """Part 13: the hand-picked network trained 2000 epochs at eta 0.05 from
    a fresh start printed 0.50 0.50."""
    x = np.array([[0.3, 0.9], [0.3, 0.9]], np.float32)
    y = np.array([[0.5], [0.5]], np.float32)
    with series_net(device) as net:
        with sn.training_network(net, x) as train:
            cost = sn.sgd(train, y, sn.quadratic_cost, 2000, 0.05)
        out = sn.to_numpy(net(x)).ravel()
    assert_printed(out, [0.50, 0.50])
    assert cost < 1e-9


def test_part13_large_weights_saturate(device):
    """Part 13: the weights times 10 ([3 1 9 0 6 20 37 10], [7 2 11 2],
    [75 15 22 33], [3]) trained 2000 epochs printed 0.00 0.00.  Filled
    column by column, as every other fill in the series, the network
    saturates at 1.00 instead (not reproduced); filled row by row it gives
    the printed 0.00."""
    x = np.array([[0.3, 0.9], [0.3, 0.9]], np.float32)
    y = np.array([[0.5], [0.5]], np.float32)
    flat = np.array([3, 1, 9, 0, 6, 20, 37, 10], dtype=np.float64)
    outs = {}
    for fill, w1 in [("columns", flat.reshape(2, 4).T), ("rows", flat.reshape(4, 2))]:
        with series_net(device, values=[w1, [7, 2, 11, 2], [[75, 15, 22, 33]], [3]]) as net:
            with sn.training_network(net, x) as train:
                sn.sgd(train, y, sn.quadratic_cost, 2000, 0.05)
            outs[fill] = sn.to_numpy(net(x)).ravel()
    assert_printed(outs["columns"], [1.00, 1.00])
    assert_printed(outs["rows"], [0.00, 0.00])


# ------------------------------------------------------------------ part 14
def test_part14_my_fn(device):
    """Part 14: (my-fn (vctr native-float [0.3 0.1 0.9 0.33])) printed
    2.1157222504237048: the float32 vector on the device, f in float64."""
    if is_torch_device(device):
        v = torch.tensor([0.3, 0.1, 0.9, 0.33], dtype=torch.float32, device=device).double()
        value = (torch.sin(v[0]) + torch.cos(v[1]) + torch.tanh(v[2]) + v[3] ** 2).item()
    else:
        be = get_backend(device, torch.float32)
        v = be.to_numpy(be.from_host(np.array([0.3, 0.1, 0.9, 0.33]))).astype(np.float64)
        be.close()
        value = float(np.sin(v[0]) + np.cos(v[1]) + np.tanh(v[2]) + v[3] ** 2)
    assert value == pytest.approx(2.1157222504237048, rel=1e-15)
    # in float64 throughout it is another number: the float32 rounding matters
    assert math.sin(0.3) + math.cos(0.1) + math.tanh(0.9) + 0.33 ** 2 != pytest.approx(
        2.1157222504237048, rel=1e-9)


# ------------------------------------------------------------------ part 15
def test_part15_decay_is_eta_lambda_over_n(device):
    """Part 15's formula: w <- (1 - eta lambda / n) w - eta grad C0, biases
    not decayed.  One epoch with (eta, lambda) and one with (eta, 0) from the
    same float64 start differ by exactly -(eta lambda / n) w0."""
    x, y = regression_data(50, seed=15, dtype=np.float64)
    eta, lam, n = 0.3, 0.9, 50
    nets = [sn.inference_network(4, [sn.fully_connected(8, sn.sigmoid),
                                     sn.fully_connected(1, sn.linear)],
                                 device=device, dtype=torch.float64, seed=15) for _ in range(2)]
    w0 = [sn.to_numpy(la.weights) for la in nets[0].layers]
    for net, hyper in zip(nets, [(eta, lam), (eta, 0.0)]):
        with sn.training_network(net, x) as train:
            sn.sgd(train, y, sn.quadratic_cost, 1, hyper)
    for decayed, plain, start in zip(nets[0].layers, nets[1].layers, w0):
        np.testing.assert_allclose(sn.to_numpy(decayed.weights) - sn.to_numpy(plain.weights),
                                   -(eta * lam / n) * start, rtol=1e-9, atol=1e-15)
        np.testing.assert_array_equal(sn.to_numpy(decayed.bias), sn.to_numpy(plain.bias))
    for net in nets:
        net.close()


# ------------------------------------------------------------------ part 16
def test_part16_momentum_rule(device):
    """Part 16's rule, v <- mu v - eta grad C0 (v starting at zero) and
    w <- (1 - eta lambda / n) w + v, biases by plain gradient steps, against
    float64 autograd over three epochs."""
    x, y = regression_data(40, seed=16, dtype=np.float64)
    eta, lam, mu, n = 0.2, 0.1, 0.4, 40
    net = sn.inference_network(4, [sn.fully_connected(8, sn.sigmoid),
                                   sn.fully_connected(8, sn.tanh),
                                   sn.fully_connected(1, sn.linear)],
                               device=device, dtype=torch.float64, seed=16)
    params = params64(net)
    velocity = [torch.zeros_like(w) for w, _ in params]
    oracle_costs = []
    for _ in range(3):
        loss = quadratic64(y, forward64(net, params, x))
        oracle_costs.append(loss.item())
        loss.backward()
        with torch.no_grad():
            for (w, b), v in zip(params, velocity):
                v.mul_(mu).sub_(eta * w.grad)
                w.mul_(1 - eta * lam / n).add_(v)
                b.sub_(eta * b.grad)
                w.grad = b.grad = None
    with sn.training_network(net, x) as train:
        costs = sn.sgd(train, y, sn.quadratic_cost, [(1, (eta, lam, mu))] * 3)
    np.testing.assert_allclose(costs, oracle_costs, rtol=1e-10)
    for layer, (w, b) in zip(net.layers, params):
        np.testing.assert_allclose(sn.to_numpy(layer.weights), w.detach().numpy(), rtol=1e-9,
                                   atol=1e-13)
        np.testing.assert_allclose(sn.to_numpy(layer.bias), b.detach().numpy(), rtol=1e-9,
                                   atol=1e-13)
    net.close()
