"""The native epoch runners: the reference runners' epochs, run by ``epoch.cpp``.

:class:`NativeFullBatch` and :class:`NativeMiniBatch` are the reference
:class:`~scratchnet.engine.reference.FullBatch` and
:class:`~scratchnet.engine.reference.MiniBatch` with ``run`` and ``measure``
done by one C++ call for many epochs (full batch) or for one epoch of all
its steps (mini-batches).  They train the same torch CPU tensors in place:
``net.params``, ``train.grads``, ``train.state`` (velocity, Adam's m, v and
t) and the cost slots, so the driver, the monitors and checkpoints see
exactly what the reference runners would leave.

A call keeps the contract of ``engine/base.py``: ``train.epoch`` counts
every epoch, the per-epoch costs land in the same slots, and ``stop`` is
looked at between calls; a full-batch call is cut into pieces of about
:data:`CALL_SECONDS` so that a Ctrl-C is answered quickly.  Costs and
optimizers the kernels do not know (a user's own ``Cost`` or optimizer
class, subclasses included) are handed to the reference ``run`` unchanged.
"""

from __future__ import annotations

import ctypes
import time

import numpy as np
import torch

from ...nn.costs import CrossEntropyCost, QuadraticCost
from ...nn.optim import SGD, Adam
from ..reference import FullBatch, MiniBatch
from . import abi
from .build import load

#: Longest a single native call should run (seconds): the driver's
#: deferred Ctrl-C is seen between calls.
CALL_SECONDS = 0.05

#: Samples per block: a block goes forward and back through every layer
#: while its activations stay in cache.  Narrow networks run blocks of
#: BLOCK, wider ones (whose block buffers would pass WORKSPACE_BYTES) of
#: half that: the sweep in docs/performance.md (`--mode blocks`).
BLOCK = 512
WORKSPACE_BYTES = 512 * 1024

DTYPES = {torch.float32: 0, torch.float64: 1}


def supports_network(net) -> str | None:
    """None when the kernels can train ``net``, else why not."""
    backend = net.backend
    device = getattr(backend, "torch_device", None)
    if device is None or device.type != "cpu":
        return f"device {net.device!r} is not the CPU"
    if backend.dtype not in DTYPES:
        return f"dtype {backend.dtype} is not float32 or float64"
    if len(net.layers) > abi.MAX_LAYERS:
        return f"{len(net.layers)} layers (the kernels take at most {abi.MAX_LAYERS})"
    for layer in net.layers:
        if type(layer.activation).__module__ != "scratchnet.nn.activations" or \
                layer.activation.name not in abi.ACTIVATIONS:
            return f"activation {layer.activation!r}"
    return None


def cost_code(cost, net) -> int | None:
    """The kernels' code for the library's own costs; None for anything else."""
    kind = type(cost)
    if kind is QuadraticCost:
        return abi.QUADRATIC
    if kind is CrossEntropyCost:
        return abi.BINARY_CE if cost.bind(net).binary else abi.CATEGORICAL_CE
    return None


def _ptr(tensor) -> int:
    return tensor.data_ptr()


class _Kernels:
    """The C structures of one network on one data set, made once."""

    def __init__(self, net, grads, x, y, steps, block, index=None):
        self.lib = load()
        self.net = net
        self.dtype = net.backend.dtype
        self.itemsize = torch.empty((), dtype=self.dtype).element_size()
        dims = [net.in_dim] + [layer.out_dim for layer in net.layers]
        self._dims = (ctypes.c_int64 * len(dims))(*dims)
        acts = [abi.ACTIVATIONS[layer.activation.name] for layer in net.layers]
        self._acts = (ctypes.c_int64 * len(acts))(*acts)
        self._steps = (ctypes.c_int64 * len(steps))(*steps)
        lanes = self.lib.sn_vector_bytes() // self.itemsize
        rows = dims[0] + dims[-1] + sum(dims[1:]) + 2 * max(dims[1:]) + 1
        if rows * block * self.itemsize > WORKSPACE_BYTES:
            block //= 2
        block = max(lanes, -(-min(block, max(steps)) // lanes) * lanes)
        self.c_net = abi.Net(layers=len(net.layers), dims=self._dims, acts=self._acts,
                             params=_ptr(net.params), grads=_ptr(grads),
                             n_weights=net.n_weights, n_params=net.n_params,
                             bias_sign=net.bias_sign, cost=abi.QUADRATIC,
                             dtype=DTYPES[self.dtype], block=block, workspace=None)
        self.workspace = torch.empty(self.lib.sn_workspace_bytes(ctypes.byref(self.c_net)),
                                     dtype=torch.uint8)
        self.c_net.workspace = _ptr(self.workspace)
        self.index = index
        self.c_data = abi.Data(x=_ptr(x), y=_ptr(y), stride=int(x.shape[1]),
                               index=None if index is None else
                               index.ctypes.data_as(ctypes.POINTER(ctypes.c_int64)),
                               steps=self._steps, n_steps=len(steps))
        self.c_opt = abi.Optim()
        self.grads = grads
        self.x, self.y = x, y
        self.p_net, self.p_data = ctypes.byref(self.c_net), ctypes.byref(self.c_data)
        self.p_opt = ctypes.byref(self.c_opt)

    def describe(self) -> str:
        lanes = self.lib.sn_vector_bytes() // self.itemsize
        return (f"{8 * self.lib.sn_vector_bytes()}-bit vectors, {lanes} {self.dtype} lanes, "
                f"blocks of {self.c_net.block} samples")

    def refresh(self) -> None:
        """Re-read the arrays' addresses (cheap; an array may be replaced)."""
        self.c_net.params = _ptr(self.net.params)

    def set_optimizer(self, optimizer, state) -> bool:
        """Fill the optimizer structure; False for an optimizer the kernels
        do not know."""
        o = self.c_opt
        kind = type(optimizer)
        if kind is SGD:
            o.kind = abi.PLAIN if not optimizer.mu else (
                abi.NESTEROV if optimizer.nesterov else abi.MOMENTUM)
            o.eta, o.lam, o.mu = optimizer.eta, optimizer.lam, optimizer.mu
            o.velocity = _ptr(state["velocity"]) if optimizer.mu else None
            return True
        if kind is Adam:
            o.kind = abi.ADAM
            o.eta, o.lam = optimizer.eta, optimizer.lam
            o.beta1, o.beta2, o.eps = optimizer.beta1, optimizer.beta2, optimizer.eps
            o.m, o.v = _ptr(state["adam.m"]), _ptr(state["adam.v"])
            o.count = _ptr(state["adam.t"])
            return True
        return False

    def call(self, epochs: int, record: bool, costs, offset: int, train: bool = True) -> None:
        where = None if costs is None else costs.data_ptr() + offset * self.itemsize
        self.lib.sn_run(self.p_net, self.p_data, self.p_opt if train else None, epochs,
                        int(record), where)

    def release(self) -> None:
        """Free the workspace now and forget every address."""
        self.workspace = None
        self.c_net.workspace = self.c_net.params = self.c_net.grads = None
        self.c_data.x = self.c_data.y = None
        self.grads = self.x = self.y = self.index = None

    def update(self, n: int) -> None:
        """One optimizer update from the gradient in ``grads`` (for tests)."""
        self.lib.sn_update(self.p_net, self.p_opt, n)


def _aim(kernels: _Kernels, train, cost, optimizer) -> bool:
    """Point the kernels at ``cost`` and ``optimizer``; False (the reference
    step then runs) for a cost or optimizer they do not know."""
    code = cost_code(cost, train.net)
    if code is None or not kernels.set_optimizer(optimizer, train.state):
        return False
    kernels.c_net.cost = code
    return True


def _costs(runner, cost, k: int, per_epoch: int = 1) -> list[float] | None:
    """The first ``k`` epochs' costs from the slots, for the library's
    costs: one view of the CPU buffer, one float64 copy, one division
    (what ``cost.finish`` does per number); None for other costs."""
    if type(cost) not in (QuadraticCost, CrossEntropyCost):
        return None
    raw = runner.slots.buffer.numpy()[:k * per_epoch].astype(np.float64)
    if per_epoch > 1:
        raw = raw.reshape(k, per_epoch).sum(axis=1)
    return cost.finish(raw, runner.n_samples).tolist()


class NativeFullBatch(FullBatch):
    """:class:`FullBatch` with its epochs run by the native kernels."""

    kind = "native"

    def __init__(self, train):
        super().__init__(train)
        self.kernels = _Kernels(train.net, train.grads, train.x, train.y, [train.n], BLOCK)
        # a first guess of an epoch's duration (refined by every call)
        macs = sum(la.in_dim * la.out_dim for la in train.net.layers) * train.n
        self.epoch_s = 3 * macs / 2e10

    def _native(self, cost, optimizer) -> bool:
        return self.train.all_reduce is None and _aim(self.kernels, self.train, cost, optimizer)

    def run(self, cost, epochs: int, optimizer, record: bool = False) -> None:
        if not self._native(cost, optimizer):
            super().run(cost, epochs, optimizer, record)
            return
        train, kernels = self.train, self.kernels
        kernels.refresh()
        self.slots.get(epochs if record else 1)
        buffer = self.slots.buffer
        self.n_samples = train.n_global
        done = 0
        try:
            while done < epochs:
                if self.stop.requested:
                    return
                k = min(epochs - done, max(1, int(CALL_SECONDS / self.epoch_s)))
                start = time.perf_counter()
                kernels.call(k, record, buffer, done if record else 0)
                self.epoch_s = max((time.perf_counter() - start) / k, 1e-7)
                done += k
                train.epoch += k
        finally:
            if type(optimizer) is Adam:
                optimizer.prepare(train)   # re-reads t, which the kernels advanced

    def costs(self, cost, k: int) -> list[float]:
        fast = _costs(self, cost, k)
        return super().costs(cost, k) if fast is None else fast

    def close(self) -> None:
        super().close()
        self.kernels.release()

    def measure(self, cost) -> float:
        train = self.train
        code = cost_code(cost, train.net)
        if code is None or train.all_reduce is not None:
            return super().measure(cost)
        self.kernels.refresh()
        self.kernels.c_net.cost = code
        slot = self.slots.get(1)[0]
        self.kernels.call(1, False, self.slots.buffer, 0, train=False)
        return cost.finish(self.backend.read_scalar(slot), train.n_global)


class NativeMiniBatch(MiniBatch):
    """:class:`MiniBatch` with each epoch's steps run by one native call
    (the host still shuffles, with the same generator, so the batches are
    the reference runner's)."""

    kind = "native"

    def __init__(self, net, x, y, batch_size: int, *, shuffle: bool = True,
                 seed: int | None = None, state: dict | None = None, epoch: int = 0):
        super().__init__(net, x, y, batch_size, shuffle=shuffle, seed=seed, state=state,
                         epoch=epoch)
        try:
            self.kernels = _Kernels(net, self.train.grads, self.x, self.y, self.step_sizes,
                                    BLOCK, index=self.order)
        except BaseException:
            self.close()
            raise

    def _native(self, cost, optimizer) -> bool:
        return _aim(self.kernels, self.train, cost, optimizer)

    def run(self, cost, epochs: int, optimizer, record: bool = False) -> None:
        if not self._native(cost, optimizer):
            super().run(cost, epochs, optimizer, record)
            return
        kernels = self.kernels
        kernels.refresh()
        per_epoch = len(self.steps)
        self.slots.get(per_epoch * (epochs if record else 1))
        buffer = self.slots.buffer
        try:
            for epoch in range(epochs):
                if self.stop.requested:
                    return
                if self.shuffle:
                    self.permute()                   # in place: the kernels read it
                wanted = record or epoch == epochs - 1
                kernels.call(1, True, buffer if wanted else None,
                             per_epoch * epoch if record else 0)
                self.train.epoch += 1
        finally:
            # the reference runner's measure() gathers through the device index
            self.backend.load_index(self.index, self.order)
            if type(optimizer) is Adam:
                optimizer.prepare(self.train)

    def costs(self, cost, k: int) -> list[float]:
        fast = _costs(self, cost, k, len(self.steps))
        return super().costs(cost, k) if fast is None else fast

    def close(self) -> None:
        super().close()
        kernels = getattr(self, "kernels", None)   # absent when setup failed
        if kernels is not None:
            kernels.release()

    def measure(self, cost) -> float:
        code = cost_code(cost, self.train.net)
        if code is None:
            return super().measure(cost)
        self.kernels.refresh()
        self.kernels.c_net.cost = code
        self.slots.get(len(self.steps))
        self.kernels.call(1, True, self.slots.buffer, 0, train=False)
        return self.last_cost(cost)
