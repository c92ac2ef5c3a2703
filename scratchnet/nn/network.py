"""Networks: the inference network (owns the parameters) and the training
network (owns every buffer one epoch on one batch needs).

As in the series (parts 11–12), training shares memory with inference: the
training network's layers hold *views* of the inference network's weights and
biases, so training updates ``net`` in place and ``net(x)`` always sees the
latest weights.  Release is deterministic: ``close()`` (or ``with``) frees
device memory now, like the series' ``with-release``.
"""

from __future__ import annotations

import threading

import torch

from .. import validation as check
from ..backends import get_backend
from .layers import FullyConnected, FullyConnectedTraining, LayerSpec

CONVENTIONS = {"standard": 1.0, "series": -1.0}


def _size(nbytes: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if nbytes < 1024 or unit == "PiB":
            return f"{nbytes:,.0f} {unit}" if unit == "bytes" else f"{nbytes:,.1f} {unit}"
        nbytes /= 1024
    return ""  # pragma: no cover - the loop returns


def check_fits(backend, name: str, what: str, elements: int) -> None:
    """Refuse, before allocating, ``elements`` numbers the device cannot
    hold: a ``ValueError`` naming argument ``name``, the size asked for and
    the memory it would take (torch's allocator would fail halfway, with a
    message about neither)."""
    need = elements * torch.empty((), dtype=backend.dtype).element_size()
    free = backend.available_memory()
    if free is not None and need > free:
        raise ValueError(f"{name}: {what} needs {elements:,} numbers, {_size(need)} of "
                         f"{backend.device} memory in {backend.dtype}; {_size(free)} is "
                         f"available")


def check_training_fits(net, n: int) -> None:
    """Refuse a training network for ``n`` samples that the device cannot
    hold: x, y, z and a of every layer (a linear layer's a is its z), the
    softmax work vector, and the gradient buffer."""
    per_sample = net.in_dim + net.out_dim + sum(
        layer.out_dim * (1 if layer.activation.name == "linear" else 2)
        + (1 if layer.activation.columnwise else 0) for layer in net.layers)
    check_fits(net.backend, "x", f"training on {n:,} samples", per_sample * n + net.n_params + 1)


class _Closable:
    """``close()`` once, context-manager support, and a clear error on use
    after close."""

    _closed = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._release()

    def _release(self) -> None:  # pragma: no cover - overridden
        pass

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{type(self).__name__}: this network was closed; its device "
                             f"memory is released")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Network(_Closable):
    """A fully connected inference network (see :func:`inference_network`).

    Attributes: ``layers`` (list of :class:`~scratchnet.nn.layers.FullyConnected`),
    ``in_dim``, ``out_dim``, ``device``, ``dtype``, ``convention``, ``backend``
    and ``params``: the flat parameter array ``[W_0 … W_{L−1} | b_0 … b_{L−1}]``
    whose views are the layers' ``weights`` and ``bias``.  The weights come
    first so weight decay touches one contiguous prefix of ``n_weights``.
    """

    def __init__(self, backend, in_dim: int, specs: list[LayerSpec], convention: str):
        dims = [in_dim] + [s.out_dim for s in specs]
        n_weights = sum(o * i for i, o in zip(dims, dims[1:]))
        check_fits(backend, "layers", f"a {'-'.join(map(str, dims))} network's parameters",
                   n_weights + sum(dims[1:]))
        self.backend = backend
        self.in_dim = in_dim
        self.convention = convention
        self.bias_sign = CONVENTIONS[convention]
        self.n_weights = n_weights
        self.n_params = self.n_weights + sum(dims[1:])
        self.params = backend.zeros((self.n_params,))
        self.layers = []
        w_at, b_at = 0, self.n_weights
        for spec, fan_in in zip(specs, dims):
            w = backend.view(self.params, w_at, (spec.out_dim, fan_in))
            b = backend.view(self.params, b_at, (spec.out_dim,))
            w_at += spec.out_dim * fan_in
            b_at += spec.out_dim
            self.layers.append(FullyConnected(backend, w, b, spec.activation, self.bias_sign))
        self.out_dim = dims[-1]
        self.trainings = 0  # live training networks (they hold views of params)
        self.lock = threading.RLock()   # held while training changes params

    @property
    def device(self) -> str:
        return self.backend.device

    @property
    def dtype(self) -> torch.dtype:
        return self.backend.dtype

    def __repr__(self) -> str:
        arch = "-".join([str(self.in_dim)] + [str(la.out_dim) for la in self.layers])
        acts = ", ".join(la.activation.name for la in self.layers)
        return (f"Network({arch}, [{acts}], device={self.device!r}, dtype={self.dtype}, "
                f"convention={self.convention!r})")

    def init_(self, seed: int | None = None) -> Network:
        """(Re)initialise with the series' final rule (part 13):
        w ~ N(0, 1) / fan_in, b ~ N(0, 1), drawn on the host in float64 from
        ``seed`` so every device starts from identical numbers."""
        self._check_open()
        gen = torch.Generator(device="cpu")
        if seed is None:
            gen.seed()
        else:
            gen.manual_seed(check.check_int("seed", seed, 0, 2**64 - 1))
        weights, biases = [], []
        for layer in self.layers:
            w = torch.randn((layer.out_dim, layer.in_dim), generator=gen, dtype=torch.float64)
            weights.append((w / layer.in_dim).reshape(-1))
            biases.append(torch.randn(layer.out_dim, generator=gen, dtype=torch.float64))
        host = torch.cat(weights + biases)
        staged = self.backend.from_host(host)
        self.backend.copy_(self.params, staged)
        self.backend.release(staged)
        return self

    @torch.no_grad()
    def __call__(self, x):
        """Inference on any batch: ``x`` is (n, in_dim), rows are samples;
        returns a new (n, out_dim) array on the network's device."""
        self._check_open()
        be = self.backend
        x = check.matrix("x", x, be, cols=self.in_dim)
        a = check.to_columns(x, be)
        for layer in self.layers:
            z = be.zeros((layer.out_dim, a.shape[1]))
            work = be.zeros((a.shape[1],)) if layer.activation.columnwise else None
            layer.forward(a, z, work)
            be.release(a)
            if work is not None:
                be.release(work)
            a = z
        out = be.transpose(a)
        be.release(a)
        return out

    def _release(self) -> None:
        self.backend.release(self.params)
        self.params = None
        for layer in self.layers:
            layer.weights = layer.bias = layer.bias_operand = None


class TrainingNetwork(_Closable):
    """Every buffer one full-batch epoch needs, allocated once for the batch
    ``x`` (see :func:`training_network`).

    Attributes: ``net`` (the inference network it trains), ``n`` (batch
    size), ``epoch`` (the updates its parameters have had, across calls),
    ``layers`` (the training layers), ``grads`` (flat gradient array in the
    layout of ``net.params``), ``output`` (the last layer's a), ``state``
    (optimizer state by name: device arrays, e.g. the momentum velocity,
    Adam's moments and its step count), ``runner`` (the epoch runner the
    engine picked for it, kept across calls) and ``lock`` (the network's,
    held while epochs run).

    Data parallelism (``scratchnet/nn/distributed.py``) needs two more:
    ``n_global``, the n of the update and of the reported cost (the sum of
    every rank's ``n``; equal to ``n`` in one process), and ``all_reduce``,
    ``None`` in one process, else a callable that sums a device array over
    the ranks in place.  ``grads`` and ``cost_sum`` are views of one flat
    array ``reduce_buffer`` = [∇W | ∇b | Σ(a − y)²], so the sum over ranks
    of a whole epoch is one call on (#params + 1) numbers.
    """

    def __init__(self, net: Network, x):
        be = net.backend
        check_training_fits(net, int(x.shape[0]))
        self.net = net
        self.backend = be
        self.x = check.to_columns(x, be)   # (in, n): samples are columns inside
        self.n = int(self.x.shape[1])
        self.epoch = 0
        self.n_global = self.n
        self.all_reduce = None
        self.reduce_buffer = be.zeros((net.n_params + 1,))
        self.grads = be.view(self.reduce_buffer, 0, (net.n_params,))
        self.cost_sum = be.view(self.reduce_buffer, net.n_params, (1,))
        self.weights_grad = be.view(self.reduce_buffer, 0, (net.n_weights,))
        self.weights_flat = be.view(net.params, 0, (net.n_weights,))
        n_biases = net.n_params - net.n_weights
        self.biases_grad = be.view(self.reduce_buffer, net.n_weights, (n_biases,))
        self.biases_flat = be.view(net.params, net.n_weights, (n_biases,))
        self.y = be.zeros((net.out_dim, self.n))
        self.state: dict = {}
        self._buffers: dict = {}   # named helper buffers, see buffer()
        self.owns_net = False      # close() also closes net (set by load_training)
        self.layers: list[FullyConnectedTraining] = []
        a_prev, g_prev = self.x, None
        w_at, b_at = 0, net.n_weights
        for layer in net.layers:
            dw = be.view(self.reduce_buffer, w_at, tuple(layer.weights.shape))
            db = be.view(self.reduce_buffer, b_at, tuple(layer.bias.shape))
            w_at += layer.out_dim * layer.in_dim
            b_at += layer.out_dim
            train_layer = FullyConnectedTraining(layer, a_prev, g_prev, dw, db, self.n)
            self.layers.append(train_layer)
            a_prev, g_prev = train_layer.a, train_layer.z
        net.trainings += 1
        #: The epoch runner the engine picked for this network (made on the
        #: first sgd call, kept across calls, closed with the network).
        self.runner = None
        #: The network's lock, held while epochs run: a save from another
        #: thread waits for a consistent (weights, epoch, state).
        self.lock = net.lock

    @property
    def output(self):
        """The last layer's activations a_L (out_dim, n)."""
        return self.layers[-1].a

    def _check_open(self) -> None:
        super()._check_open()
        self.net._check_open()

    def forward(self) -> None:
        """a_L = net(x) through the training buffers."""
        for layer in self.layers:
            layer.forward()

    def backward(self, output_delta: bool = False) -> None:
        """The output layer's z must hold ∇_{a_L}C (or δ_L itself when
        ``output_delta``: a cost fused with the output activation); fills
        ``grads``."""
        last = self.layers[-1]
        for layer in reversed(self.layers):
            layer.backward(output_delta and layer is last)

    def buffer(self, name: str, shape: tuple[int, ...]):
        """A device buffer named ``name`` owned by this training network:
        allocated on the first request (or when ``shape`` changes), the same
        array on every later one, released by :meth:`close`.  Monitors keep
        their device state here (the divergence guard's snapshots) so a call
        of ``sgd`` allocates nothing a previous call already did."""
        shape = tuple(shape)
        buf = self._buffers.get(name)
        if buf is None or tuple(buf.shape) != shape:
            if buf is not None:
                self.backend.release(buf)
            buf = self._buffers[name] = self.backend.zeros(shape)
        return buf

    def load_y(self, y) -> None:
        """Copy validated targets (n, out_dim) into the y buffer (every
        call: a caller may change its array behind torch's back, through
        ``.numpy()``, and must still be trained against what it passed)."""
        self.backend.load_columns(self.y, y)

    def _release(self) -> None:
        be = self.backend
        if self.runner is not None:
            self.runner.close()
            self.runner = None
        for layer in self.layers:
            layer.release()
        for name in ("x", "reduce_buffer", "y"):
            be.release(getattr(self, name))
            setattr(self, name, None)
        self.grads = self.cost_sum = self.weights_grad = self.all_reduce = None
        self.biases_grad = self.weights_flat = self.biases_flat = None
        for buf in list(self.state.values()) + list(self._buffers.values()):
            be.release(buf)
        self.state.clear()
        self._buffers.clear()
        self.net.trainings -= 1
        if self.owns_net:
            self.net.close()


def inference_network(in_dim: int, layers, *, device="cpu", dtype=torch.float32,
                      seed: int | None = None, convention: str = "standard") -> Network:
    """A fully connected network ``in_dim → layers…``, initialised.

    ``layers`` is a list of :func:`~scratchnet.fully_connected` specs.
    ``device`` picks the backend by prefix (``"cpu"``, ``"cuda"``,
    ``"cuda:1"``, ``"opencl"``, ``"opencl:P:D"``, ...).  The weights are drawn
    with the series' rule (w ~ N(0,1)/fan_in, b ~ N(0,1)) from ``seed`` on
    the host.  ``convention="series"`` uses the series' z = W a − b (and its
    update), ``"standard"`` z = W a + b.
    """
    in_dim = check.check_int("in_dim", in_dim, 1)
    if isinstance(layers, LayerSpec) or not hasattr(layers, "__iter__"):
        raise TypeError(f"layers: expected a list of fully_connected(...) specs, got {layers!r}")
    specs = list(layers)
    if not specs:
        raise ValueError("layers: expected at least one fully_connected(...) layer, got none")
    for i, spec in enumerate(specs):
        if not isinstance(spec, LayerSpec):
            raise TypeError(f"layers[{i}]: expected a fully_connected(...) spec, got {spec!r}")
    if not isinstance(convention, str) or convention not in CONVENTIONS:
        raise ValueError(f"convention: expected one of {', '.join(CONVENTIONS)}, "
                         f"got {convention!r}")
    check.check_dtype(dtype)
    if seed is not None:
        check.check_int("seed", seed, 0, 2**64 - 1)   # torch.Generator's range
    backend = get_backend(device, dtype)
    net = Network(backend, in_dim, specs, convention)
    return net.init_(seed)


def training_network(net: Network, x) -> TrainingNetwork:
    """Buffers to train ``net`` on the full batch ``x`` (n, in_dim), rows
    are samples.  Shares weights with ``net``; x is copied (and transposed)
    to the device once."""
    if not isinstance(net, Network):
        raise TypeError(f"net: expected a scratchnet Network (inference_network(...)), "
                        f"got {type(net).__name__}")
    net._check_open()
    x = check.matrix("x", x, net.backend, cols=net.in_dim, check_values=False)
    check_training_fits(net, int(x.shape[0]))   # before scanning what cannot fit
    x = check.matrix("x", x, net.backend, cols=net.in_dim)
    return TrainingNetwork(net, x)
