"""Data-parallel training past one process, on ``torch.distributed``.

Every rank (process) holds a shard S_r of the samples and a full copy of the
network.  With N = Σ_r n_r samples in all, full-batch gradient descent needs
sums over *all* samples, and a sum over all samples is a sum over ranks of
sums over shards:

    Σ_x δ_x a_xᵀ = Σ_r ( Σ_{x∈S_r} δ_x a_xᵀ )        Σ_x δ_x = Σ_r ( Σ_{x∈S_r} δ_x )
    C0 = 1/(2N) Σ_r ( Σ_{x∈S_r} ‖y_x − a_x‖² )
    W ← W − (η/N) (Σ_x δ_x a_xᵀ + λ W)             b ← b − (η/N) Σ_x δ_x

The training network already keeps the inner sums (batch sums, no 1/n) in one
flat array ``train.reduce_buffer`` = [∇W | ∇b | Σ(a − y)²].  So an epoch is:
forward and backward on the local shard, **one** ``all_reduce(SUM)`` of that
array between backward and update, and the same update on every rank with
n = N (``train.n_global``).  Every rank then holds the same numbers, the
weights stay identical without ever being sent again, and the result is
single-process full-batch training on the concatenated shards, up to the
float rounding of summing in a different order.  The cost rides in the same
call, so every rank reads the global cost (monitors, a divergence guard and
the value ``sgd`` returns agree everywhere) and every rank issues exactly the
same collectives whatever monitors it has: rank 0 may log and checkpoint
while the others do not.

Transport is ``torch.distributed``: gloo for CPU tensors, NCCL for CUDA
tensors, launched by ``torchrun`` (see :func:`init_from_env`).  In one
process (``torch.distributed`` not initialised, or a world of one rank)
:func:`distributed_training_network` is :func:`~scratchnet.training_network`
and the epoch loop pays one ``is None`` test.

Backends whose arrays are not torch tensors (the OpenCL plugin) take the
slow path, ``staging="host"``: every epoch the flat buffer is copied to the
host, summed there by gloo, and copied back (two transfers of (#params + 1)
numbers, a host array and a device staging array per epoch, and a host sync
that stops the device queue from running ahead).  It is correct everywhere
and fast enough when the network is small or the epoch long; a plugin that
wants better must expose its buffers to a collective library itself.
"""

from __future__ import annotations

import datetime
import hashlib
import os

import numpy as np
import torch
import torch.distributed as dist

from .. import validation as check
from .network import Network, TrainingNetwork, training_network

STAGING = ("auto", "device", "host")


class DistributedError(RuntimeError):
    """A collective failed: another rank died, hung past the process-group
    timeout, or the ranks disagree about the network."""


def rank_and_world(group=None) -> tuple[int, int]:
    """(this process's rank in ``group``, its size); (0, 1) when
    ``torch.distributed`` is unavailable or not initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def shard(n: int, group=None, *, rank: int | None = None, world_size: int | None = None) -> slice:
    """The rows of an ``n``-sample data set that ``rank`` holds: contiguous
    blocks in rank order whose sizes differ by at most one (the first
    ``n mod R`` ranks take one more).  ``rank``/``world_size`` default to
    this process's place in ``group``."""
    n = check.check_int("n", n, 1)
    here, size = rank_and_world(group)
    world_size = size if world_size is None else check.check_int("world_size", world_size, 1)
    rank = here if rank is None else check.check_int("rank", rank, 0)
    if rank >= world_size:
        raise ValueError(f"rank: expected an int in 0 .. {world_size - 1}, got {rank}")
    if n < world_size:
        raise ValueError(f"n: every one of the {world_size} ranks needs at least one sample, "
                         f"got n = {n}")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def init_from_env(device: str = "cpu", *, timeout: float = 60.0) -> str:
    """Join the process group a launcher (``torchrun``) describes in the
    environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and
    return the device this rank should use.

    ``device="cuda"`` gives each rank ``cuda:LOCAL_RANK`` and an NCCL group;
    anything else (``"cpu"``, ``"opencl"``, ...) a gloo group and the device
    unchanged.  ``timeout`` (seconds) bounds every collective: a rank whose
    peer died or hangs fails after at most that long instead of waiting
    forever.  Without the launcher's variables nothing is initialised (a plain
    ``python script.py`` is a world of one rank)."""
    if isinstance(device, bool) or not isinstance(device, str) or not device:
        raise TypeError(f"device: expected a device string such as 'cpu' or 'cuda', "
                        f"got {device!r}")
    timeout = check.check_real("timeout", timeout, positive=True)
    cuda = device.split(":", 1)[0] == "cuda"
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if not torch.cuda.is_available() or local >= torch.cuda.device_count():
            raise ValueError(f"device: 'cuda' for local rank {local}, but this host has "
                             f"{torch.cuda.device_count() if torch.cuda.is_available() else 0} "
                             f"CUDA devices")
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    if "WORLD_SIZE" in os.environ and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo",
                                timeout=datetime.timedelta(seconds=timeout))
    return device


class _AllReduce:
    """``all_reduce(array)``: sum a device array over the group's ranks, in
    place.  Collective failures become :class:`DistributedError` naming this
    rank and how many epochs ran."""

    def __init__(self, backend, group, via_host: bool):
        self.backend = backend
        self.group = group
        self.via_host = via_host
        self.calls = 0
        self.rank, self.world = rank_and_world(group)

    def _run(self, what: str, op, tensor):
        try:
            op(tensor)
        except RuntimeError as exc:  # DistBackendError, gloo's connection errors, timeouts
            raise DistributedError(
                f"rank {self.rank} of {self.world}: {what} failed after {self.calls} "
                f"all-reduce(s); another rank probably died, or did not reach the same "
                f"collective within the process group's timeout ({exc})") from exc

    def apply(self, what: str, op, array) -> None:
        """Run the collective ``op`` on ``array``: in place on the device, or
        through a host copy (the slow path)."""
        if not self.via_host:
            self._run(what, op, array)
            return
        be = self.backend
        host = torch.from_numpy(np.ascontiguousarray(be.to_numpy(array)))
        self._run(what, op, host)
        staged = be.from_host(host)
        be.copy_(array, staged)
        be.release(staged)

    def gather(self, what: str, values) -> list[list[int]]:
        """Every rank's ``values`` (the same number of ints everywhere), in
        rank order: one all-gather of a small int64 tensor."""
        mine = values if isinstance(values, torch.Tensor) else torch.tensor(
            values, dtype=torch.int64, device=_collective_device(self.backend, self.via_host))
        gathered = [torch.empty_like(mine) for _ in range(self.world)]
        self._run(what, lambda t: dist.all_gather(gathered, t, group=self.group), mine)
        return torch.stack(gathered).cpu().tolist()

    def __call__(self, array) -> None:
        self.apply("all_reduce", lambda t: dist.all_reduce(t, group=self.group), array)
        self.calls += 1


def _collective_device(backend, via_host: bool) -> torch.device:
    """Where small control tensors (sizes, checks) must live for this
    group: the CPU for gloo and the host path, the network's GPU for NCCL."""
    if via_host or backend.name != "torch":
        return torch.device("cpu")
    return backend.torch_device


def _digest(text: str) -> list[int]:
    """Four non-negative int64 words of the sha256 of ``text``: what ranks
    compare, so that any difference is seen in one small collective."""
    raw = hashlib.sha256(text.encode()).digest()
    return [int.from_bytes(raw[i:i + 7], "little") for i in range(0, 28, 7)]


def architecture(net: Network) -> str:
    """What must be equal on every rank: widths, activations, convention
    and dtype (a parameter count alone lets a 4-100-2-1 network train
    against a 4-32-16-1 one)."""
    layers = ",".join(f"{la.out_dim}:{la.activation.name}" for la in net.layers)
    return f"{net.in_dim}|{layers}|{net.convention}|{net.dtype}"


def describe_plan(front: str, cost, schedule, *extra) -> str:
    """A call's plan as text: the front end, the cost, every entry's epochs
    and its optimizer's type and numeric settings, and ``extra`` (batch
    size, shuffle, seed)."""
    entries = []
    for epochs, opt in schedule:
        settings = {k: v for k, v in sorted(vars(opt).items())
                    if isinstance(v, (bool, int, float)) and not k.startswith("_")}
        entries.append(f"{epochs}x{type(opt).__name__}{settings}")
    return f"{front}|{type(cost).__name__}:{getattr(cost, 'binary', '')}|{entries}|{extra}"


def agree_on_plan(reducer, front: str, cost, schedule, *extra) -> None:
    """Compare this call's plan (:func:`describe_plan`) across the ranks;
    when any rank differs, every rank raises ``ValueError`` before any
    update (so no rank waits forever for a collective another will not
    make, and no rank trains alone)."""
    plan = describe_plan(front, cost, schedule, *extra)
    table = reducer.gather("the plan check", _digest(plan))
    differ = [r for r, row in enumerate(table) if row != table[0]]
    if differ:
        raise ValueError(
            f"{front}: every rank must make the same call (epochs, hyperparameters, cost"
            f"{', batch size, shuffle, seed' if extra else ''}); rank(s) {differ} differ from "
            f"rank 0.  This rank (rank {reducer.rank}) has {plan}")


class DataParallel:
    """What ``train(..., distributed=...)`` needs: the all-reduce, every
    rank's number of samples, and this rank's place."""

    def __init__(self, reducer, shard_sizes: list[int]):
        self.reducer = reducer
        self.shard_sizes = shard_sizes
        self.rank = reducer.rank


def _join(net: Network, n_local: int | None, group, via_host: bool, error=None):
    """One collective in which every rank shows whether it accepted its
    arguments, its sample count and its architecture; raises ``ValueError``
    on every rank when any rank refused or differs.  Returns (reducer,
    every rank's sample count)."""
    rank, world = rank_and_world(group)
    ok = error is None
    mine = torch.tensor([ok, n_local or 0, *_digest(architecture(net))], dtype=torch.int64,
                        device=_collective_device(net.backend, via_host))
    reducer = _AllReduce(net.backend, group, via_host)
    table = reducer.gather("the shape check", mine)
    if error is not None:
        raise error
    refused = [r for r, row in enumerate(table) if not row[0]]
    if refused:
        raise ValueError(f"x: rank(s) {refused} rejected their shard (see their error); "
                         f"no rank starts training")
    differ = [r for r, row in enumerate(table) if row[2:] != table[0][2:]]
    if differ:
        raise ValueError(
            f"net: every rank needs the same network (widths, activations, convention, "
            f"dtype); rank(s) {differ} differ from rank 0.  This rank (rank {rank}) has "
            f"{architecture(net)}")
    return reducer, [row[1] for row in table]


def _staging(net: Network, group, staging: str) -> bool:
    """Whether collectives go through host memory; ``ValueError`` for a
    combination that cannot work."""
    if staging not in STAGING:
        raise ValueError(f"staging: expected one of {', '.join(map(repr, STAGING))}, "
                         f"got {staging!r}")
    torch_arrays = net.backend.name == "torch"
    via_host = staging == "host" or (staging == "auto" and not torch_arrays)
    if not via_host and not torch_arrays:
        raise ValueError(f"staging: 'device' needs torch tensors, but the {net.backend.name} "
                         f"backend's arrays are not; use staging='host' (or 'auto')")
    kind = "cpu" if via_host else net.backend.torch_device.type
    pg = str(dist.get_backend(group))
    if kind == "cpu" and pg == "nccl":
        raise ValueError(f"group: an NCCL process group cannot sum {'host' if via_host else 'CPU'}"
                         f" arrays (device {net.device!r}, staging {staging!r}); "
                         f"initialise a gloo group")
    return via_host


def _broadcast(reducer, net: Network, src: int, group) -> None:
    global_src = src if group is None else dist.get_global_rank(group, src)
    reducer.apply(f"broadcasting the parameters from rank {src}",
                  lambda t: dist.broadcast(t, src=global_src, group=group), net.params)


def data_parallel(net: Network, n_local: int, distributed, plan=None) -> DataParallel | None:
    """The data-parallel setup of ``train(..., distributed=...)``:
    ``False`` → None (one process); ``True`` → the default group; else a
    ``torch.distributed`` process group.  Every rank's architecture is
    compared, then ``plan`` (``(front, cost, schedule, *extra)``, see
    :func:`agree_on_plan`), and only then rank 0's parameters are
    broadcast: on any disagreement every rank raises ``ValueError`` with
    nothing changed.  A group of one rank is one process: None."""
    if distributed is False or distributed is None:
        return None
    if distributed is True:
        group = None
    elif isinstance(distributed, bool) or isinstance(distributed, (int, float, str)):
        raise TypeError(f"distributed: expected False, True or a torch.distributed process "
                        f"group, got {distributed!r}")
    else:
        group = distributed
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError("distributed: torch.distributed is not initialised; launch with "
                         "torchrun and call scratchnet.distributed.init_from_env() first")
    rank, world = rank_and_world(group)
    if world == 1:
        return None
    via_host = _staging(net, group, "auto")
    reducer, sizes = _join(net, n_local, group, via_host)
    if plan is not None:
        agree_on_plan(reducer, *plan)
    _broadcast(reducer, net, 0, group)
    return DataParallel(reducer, sizes)


def distributed_training_network(net: Network, x, *, group=None, staging: str = "auto",
                                 src: int = 0) -> TrainingNetwork:
    """A training network for this rank's shard ``x`` (n_r, in_dim) whose
    epochs sum gradients and cost over every rank of ``group`` (default: the
    whole world), so :func:`~scratchnet.sgd` trains on all shards at once.

    Call it on every rank, with the same architecture, dtype and convention;
    pass each rank its own targets to ``sgd``, and the same schedule on every
    rank (each epoch is a collective).  ``staging``: ``"device"`` all-reduces
    the device arrays in place (torch tensors: gloo on CPU, NCCL on CUDA),
    ``"host"`` copies them through host memory to a gloo group (the slow path
    for non-torch backends such as OpenCL), ``"auto"`` picks ``"device"`` for
    torch tensors and ``"host"`` otherwise.

    Initial weights: rank ``src`` of ``group`` broadcasts its parameters once,
    so ranks that drew them differently (no seed, or a checkpoint loaded on
    one rank only) still start equal.

    Every rank checks its arguments first; then one collective compares the
    ranks (widths, activations, convention, dtype, shard accepted) and, if
    any rank disagrees, every rank raises ``ValueError`` and nothing is
    modified.  Each ``sgd`` call compares its plan (epochs, hyperparameters,
    cost) the same way before its first update.  Without an
    initialised process group, or in a group of one, this is
    :func:`~scratchnet.training_network`.
    """
    if not isinstance(net, Network):
        raise TypeError(f"net: expected a scratchnet Network (inference_network(...)), "
                        f"got {type(net).__name__}")
    if staging not in STAGING:
        raise ValueError(f"staging: expected one of {', '.join(map(repr, STAGING))}, "
                         f"got {staging!r}")
    rank, world = rank_and_world(group)
    src = check.check_int("src", src, 0)
    if src >= world:
        raise ValueError(f"src: expected a rank in 0 .. {world - 1}, got {src}")
    if world == 1:
        return training_network(net, x)
    via_host = _staging(net, group, staging)

    # Validate locally, then agree: a rank that rejects its shard must still
    # join the check, or its peers would wait for it until the timeout.
    train, error = None, None
    try:
        train = training_network(net, x)
    except (TypeError, ValueError) as exc:
        error = exc
    try:
        reducer, sizes = _join(net, None if train is None else train.n, group, via_host, error)
    except BaseException:
        if train is not None:
            train.close()
        raise
    _broadcast(reducer, net, src, group)
    train.n_global = int(sum(sizes))
    train.all_reduce = reducer
    return train
