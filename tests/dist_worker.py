"""What each spawned rank of ``test_distributed.py`` runs.

A separate module (not a test file) so that ``torch.multiprocessing``'s spawn
start method can import it cheaply in the child.  Every rank writes what it
saw to ``out_dir``: ``rank{r}.npz`` on success, ``rank{r}.err`` with the
exception's type and message on failure; the test reads those files.
"""

from __future__ import annotations

import datetime
import os
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from helpers import CostRecorder, article_net, regression_data

import scratchnet as sn


def flat_params(net) -> np.ndarray:
    return sn.to_numpy(net.params).astype(np.float64)


def train_scenario(rank: int, world: int, *, n: int, schedule, staging: str = "auto",
                   monitor_chunk: int = 0, data_seed: int = 1, net_seed: int = 0,
                   device: str = "cpu") -> dict:
    """Train on this rank's shard.  Ranks other than 0 draw their initial
    weights from another seed on purpose: the broadcast from rank 0 must
    make them equal.  Only rank 0 has a monitor."""
    x, y = regression_data(n, seed=data_seed)
    rows = sn.distributed.shard(n)
    net = article_net(device, seed=net_seed if rank == 0 else net_seed + 1 + rank)
    train = sn.distributed_training_network(net, x[rows], staging=staging)
    monitors = [CostRecorder(monitor_chunk)] if monitor_chunk and rank == 0 else []
    costs = sn.sgd(train, y[rows], sn.quadratic_cost, schedule, monitors=monitors)
    after = sn.sgd(train, y[rows], sn.quadratic_cost, 0, 0.1)   # 0 epochs: the cost now
    out = {"params": flat_params(net), "costs": np.array(costs), "after": after,
           "n_local": train.n,
           "n_global": train.n_global}
    if monitors:
        out["monitored"] = np.array(monitors[0].costs)
    train.close()
    net.close()
    return out


def mismatch_scenario(rank: int, world: int) -> dict:
    """Two bad set-ups, each must fail on every rank with ValueError and
    change nothing: different architectures, then one rank's bad shard."""
    x, _ = regression_data(20)
    messages = []
    wide = sn.inference_network(4, [sn.fully_connected(8 + rank, sn.tanh),
                                    sn.fully_connected(1, sn.linear)], seed=0)
    before = flat_params(wide)
    try:
        sn.distributed_training_network(wide, x)
        messages.append("no error")
    except ValueError as exc:
        messages.append(f"ValueError: {exc}")
    unchanged = np.array_equal(before, flat_params(wide))
    net = article_net("cpu", seed=rank)
    before = flat_params(net)
    shard = x.copy()
    if rank == 1:
        shard[3, 2] = np.nan
    try:
        sn.distributed_training_network(net, shard)
        messages.append("no error")
    except ValueError as exc:
        messages.append(f"ValueError: {exc}")
    unchanged = unchanged and np.array_equal(before, flat_params(net)) and net.trainings == 0
    return {"messages": np.array(messages), "unchanged": unchanged}


class Stopper(sn.Monitor):
    """On the failing rank: after ``after`` epochs, die without a word or
    stop answering (a monitor changes no collective, so the others are by
    then inside their next all-reduce)."""

    def __init__(self, after: int, how: str):
        self.chunk, self.how = after, how

    def after_chunk(self, train, first_epoch, costs):
        if self.how == "die":
            os._exit(3)
        time.sleep(600)


def failing_scenario(rank: int, world: int, *, after: int, how: str) -> dict:
    """The last rank trains ``after`` epochs and then dies without a word
    (``how="die"``) or stops answering (``how="hang"``: it sleeps, alive,
    until the test kills it); the others keep training and must fail with
    DistributedError."""
    x, y = regression_data(60)
    rows = sn.distributed.shard(60)
    net = article_net("cpu", seed=0)
    train = sn.distributed_training_network(net, x[rows])
    monitors = [Stopper(after, how)] if rank == world - 1 else []
    start = time.perf_counter()
    try:
        sn.sgd(train, y[rows], sn.quadratic_cost, 100_000, 0.1, monitors=monitors, guard=False)
    finally:
        Path(os.environ["SN_TEST_OUT"], f"rank{rank}.seconds").write_text(
            str(time.perf_counter() - start))
    return {}


def minibatch_scenario(rank: int, world: int, *, n: int, batch_size: int, schedule,
                       shuffle: bool = False, seed: int = 0) -> dict:
    """Data-parallel mini-batches: this rank's contiguous shard, its own
    batches; every step all-reduces.  Ranks other than 0 start from other
    weights on purpose (rank 0's are broadcast)."""
    x, y = regression_data(n, seed=1)
    rows = sn.distributed.shard(n)
    net = article_net("cpu", seed=0 if rank == 0 else 1 + rank)
    costs = sn.train(net, x[rows], y[rows], sn.quadratic_cost, schedule, batch_size=batch_size,
                     shuffle=shuffle, seed=seed, distributed=True)
    return {"params": flat_params(net), "costs": np.array(costs), "rows": np.array(
        [rows.start, rows.stop])}


def disagree_scenario(rank: int, world: int) -> dict:
    """Ranks that disagree, each case refused on every rank with ValueError
    before anything changes: the same parameter count in other widths
    (4-100-2-1 and 4-32-16-1 both have 705), other activations, and calls
    whose plans differ (eta, epochs; batch size for train)."""
    x, y = regression_data(20)
    rows = sn.distributed.shard(20)
    messages, unchanged = [], True

    def attempt(net, call):
        nonlocal unchanged
        before = flat_params(net)
        try:
            call()
            messages.append("no error")
        except ValueError as exc:
            messages.append(f"ValueError: {exc}")
        unchanged = unchanged and np.array_equal(before, flat_params(net))

    widths = (32, 16) if rank == 0 else (100, 2)
    other = sn.inference_network(4, [sn.fully_connected(widths[0], sn.sigmoid),
                                     sn.fully_connected(widths[1], sn.tanh),
                                     sn.fully_connected(1, sn.linear)], seed=0)
    attempt(other, lambda: sn.distributed_training_network(other, x[rows]))
    acts = article_net("cpu", seed=0)
    if rank == 1:
        acts = sn.inference_network(4, [sn.fully_connected(32, sn.relu),
                                        sn.fully_connected(16, sn.tanh),
                                        sn.fully_connected(1, sn.linear)], seed=0)
    attempt(acts, lambda: sn.distributed_training_network(acts, x[rows]))
    net = article_net("cpu", seed=0)
    train = sn.distributed_training_network(net, x[rows])
    eta = 0.1 if rank == 0 else 0.2
    attempt(net, lambda: sn.sgd(train, y[rows], sn.quadratic_cost, 5, eta))
    epochs = 5 if rank == 0 else 6
    attempt(net, lambda: sn.sgd(train, y[rows], sn.quadratic_cost, epochs, 0.1))
    batch = 4 if rank == 0 else 5
    attempt(net, lambda: sn.train(net, x[rows], y[rows], sn.quadratic_cost, 2, 0.1,
                                  batch_size=batch, distributed=True))
    unchanged = unchanged and train.epoch == 0
    return {"messages": np.array(messages), "unchanged": unchanged}


SCENARIOS = {"train": train_scenario, "mismatch": mismatch_scenario,
             "failing": failing_scenario, "minibatch": minibatch_scenario,
             "disagree": disagree_scenario}


def run(rank: int, world: int, port: int, out_dir: str, timeout: float, jobs) -> None:
    """The spawned process's entry point: join a gloo group on 127.0.0.1,
    run the scenarios ``jobs`` ((name, kwargs) pairs, one group for all: a
    spawn costs seconds on two cores), write the results (keys prefixed by
    the job's index) or the first error to ``out_dir``."""
    torch.set_num_threads(1)   # two cores shared by everything: no oversubscription
    os.environ["SN_TEST_OUT"] = out_dir
    out = Path(out_dir)
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world,
                                timeout=datetime.timedelta(seconds=timeout))
        results = {}
        for i, (scenario, kwargs) in enumerate(jobs):
            result = SCENARIOS[scenario](rank, world, **kwargs)
            results.update({f"{i}.{key}": value for key, value in result.items()})
        np.savez(out / f"rank{rank}.npz", **results)
    except BaseException as exc:  # noqa: BLE001 - reported to the test through a file
        (out / f"rank{rank}.err").write_text(f"{type(exc).__name__}: {exc}\n\n"
                                             f"{traceback.format_exc()}")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
