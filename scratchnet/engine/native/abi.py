"""The ctypes mirrors of ``epoch.cpp``'s argument structures, and the codes
it understands.  Field order and types must match the C++ ``struct``s."""

from __future__ import annotations

import ctypes

c_i64, c_f64, c_ptr = ctypes.c_int64, ctypes.c_double, ctypes.c_void_p

ACTIVATIONS = {"sigmoid": 0, "tanh": 1, "linear": 2, "relu": 3, "elu": 4, "softmax": 5}
QUADRATIC, BINARY_CE, CATEGORICAL_CE = 0, 1, 2
PLAIN, MOMENTUM, NESTEROV, ADAM = 0, 1, 2, 3

#: The most layers the kernels take (their per-layer tables are this long).
MAX_LAYERS = 64


class Net(ctypes.Structure):
    _fields_ = [("layers", c_i64), ("dims", ctypes.POINTER(c_i64)),
                ("acts", ctypes.POINTER(c_i64)), ("params", c_ptr), ("grads", c_ptr),
                ("n_weights", c_i64), ("n_params", c_i64), ("bias_sign", c_f64),
                ("cost", c_i64), ("dtype", c_i64), ("block", c_i64), ("workspace", c_ptr)]


class Data(ctypes.Structure):
    _fields_ = [("x", c_ptr), ("y", c_ptr), ("stride", c_i64),
                ("index", ctypes.POINTER(c_i64)), ("steps", ctypes.POINTER(c_i64)),
                ("n_steps", c_i64)]


class Optim(ctypes.Structure):
    _fields_ = [("kind", c_i64), ("eta", c_f64), ("lam", c_f64), ("mu", c_f64),
                ("beta1", c_f64), ("beta2", c_f64), ("eps", c_f64), ("velocity", c_ptr),
                ("m", c_ptr), ("v", c_ptr), ("count", c_ptr)]
