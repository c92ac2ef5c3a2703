"""Data-parallel training (scratchnet/nn/distributed.py) against single-process
training on the concatenated data.

Real gloo process groups on 127.0.0.1: the test spawns 2 or 3 processes with
``torch.multiprocessing`` (spawn start method, a free port), each runs a
scenario from ``dist_worker.py`` and writes what it saw to a file.  The
oracle is the single-process full-batch run on the same data (itself checked
against torch autograd and torch.optim.SGD in test_sgd.py); ranks must agree
with it within float32 rounding and with each other bit for bit.
"""

from __future__ import annotations

import importlib.util
import inspect
import socket
import time
from pathlib import Path

import dist_worker
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from helpers import CostRecorder, article_net, regression_data

import scratchnet as sn

pytestmark = pytest.mark.skipif(not (torch.distributed.is_available()
                                     and torch.distributed.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")

# float32 rounding: the ranks sum their shards' partial sums in another order
# than one process does.  Measured after these 50 epochs: at most 1.2e-7 on a
# weight (|w| up to 2), 9e-8 relative on a cost; the bounds leave a 30x margin.
# The update with the local n instead of the global one misses by up to 0.2.
ATOL, RTOL = 4e-6, 1e-5


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(tmp_path, world: int, jobs, *, timeout: float = 20.0, deadline: float = 50.0,
          wait_for=None):
    """Run ``jobs`` ((scenario, kwargs) pairs, see dist_worker.py) on
    ``world`` gloo ranks; return {rank: {job index: result dict} or error
    string}.  Waits for the ranks ``wait_for`` (default all) at most
    ``deadline`` seconds, then kills whatever is still alive and reports it
    as hung: the test fails instead of hanging."""
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=dist_worker.run,
                         args=(r, world, port, str(tmp_path), timeout, jobs))
             for r in range(world)]
    for p in procs:
        p.start()
    end = time.monotonic() + deadline
    for r in range(world) if wait_for is None else wait_for:
        procs[r].join(max(0.0, end - time.monotonic()))
    hung = [r for r, p in enumerate(procs) if p.is_alive()]
    for r in hung:
        procs[r].kill()
        procs[r].join()
    results = {}
    for r in range(world):
        ok, err = tmp_path / f"rank{r}.npz", tmp_path / f"rank{r}.err"
        if ok.exists():
            with np.load(ok) as data:
                results[r] = {}
                for key in data.files:
                    job, name = key.split(".", 1)
                    results[r].setdefault(int(job), {})[name] = data[key]
        elif err.exists():
            results[r] = err.read_text()
        elif r in hung:
            results[r] = "hung"
        else:
            results[r] = f"exited with code {procs[r].exitcode} and no report"
    return results


def single_process(n, schedule, monitor_chunk=0, data_seed=1, net_seed=0):
    """The oracle: one process, full batch, the concatenated data."""
    x, y = regression_data(n, seed=data_seed)
    net = article_net("cpu", seed=net_seed)
    monitors = [CostRecorder(monitor_chunk)] if monitor_chunk else []
    with sn.training_network(net, x) as train:
        costs = sn.sgd(train, y, sn.quadratic_cost, schedule, monitors=monitors)
        costs.append(sn.sgd(train, y, sn.quadratic_cost, 0, 0.1))   # 0 epochs: the cost now
    return dist_worker.flat_params(net), np.array(costs), (
        np.array(monitors[0].costs) if monitors else None)


def _assert_all_ran(results, world):
    for r in range(world):
        assert isinstance(results[r], dict), f"rank {r}: {results[r]}"


def test_two_ranks_equal_one_process_and_disagreeing_ranks_all_fail(tmp_path):
    """n = 101 on 2 ranks (51 + 50 samples), 30 epochs of eta 0.1 then 20 of
    0.05 with weight decay: every rank ends with the single-process weights
    and reports the single-process (global) costs.

    Then, in the same group, two bad set-ups that must fail on every rank
    with ValueError and change nothing: different architectures, and one
    rank's shard holding a NaN."""
    n, schedule = 101, [(30, 0.1), (20, (0.05, 0.9))]
    results = spawn(tmp_path, 2, [("train", {"n": n, "schedule": schedule}),
                                  ("mismatch", {})])
    _assert_all_ran(results, 2)
    params, costs, _ = single_process(n, schedule)
    trained = [results[r][0] for r in range(2)]
    assert [int(t["n_local"]) for t in trained] == [51, 50]
    assert all(int(t["n_global"]) == n for t in trained)
    for t in trained:
        np.testing.assert_allclose(t["params"], params, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(list(t["costs"]) + [t["after"]], costs, rtol=RTOL)
    # Same numbers in, same update: the ranks agree exactly, not just closely.
    np.testing.assert_array_equal(trained[0]["params"], trained[1]["params"])
    # The run moved far from the start: equality above is not "nothing happened".
    start = dist_worker.flat_params(article_net("cpu", seed=0))
    assert np.max(np.abs(params - start)) > 100 * ATOL

    refused = [results[r][1] for r in range(2)]
    for r in range(2):
        arch, shard = refused[r]["messages"]
        assert arch.startswith("ValueError: net: every rank needs the same network"), arch
        assert bool(refused[r]["unchanged"])
    assert "rank(s) [1] rejected their shard" in refused[0]["messages"][1]
    assert refused[1]["messages"][1].startswith("ValueError: x:")     # its own reason


def test_three_ranks_monitor_on_rank_0_only_and_host_staging(tmp_path):
    """n = 100 on 3 ranks (34 + 33 + 33).  Rank 0 alone has a monitor (as
    when it alone logs): its chunked epochs must still pair with the other
    ranks' collectives, and the per-epoch costs it sees are the global ones.
    Then staging='host' (the path for backends whose arrays are not torch
    tensors, e.g. OpenCL: the flat buffer goes through host memory and
    gloo): the same result."""
    n, schedule = 100, [(50, 0.1)]
    results = spawn(tmp_path, 3, [
        ("train", {"n": n, "schedule": schedule, "monitor_chunk": 7}),
        ("train", {"n": n, "schedule": schedule, "staging": "host"})])
    _assert_all_ran(results, 3)
    params, costs, monitored = single_process(n, schedule, monitor_chunk=7)
    for job in (0, 1):
        trained = [results[r][job] for r in range(3)]
        assert [int(t["n_local"]) for t in trained] == [34, 33, 33]
        for t in trained:
            np.testing.assert_allclose(t["params"], params, rtol=RTOL, atol=ATOL)
            np.testing.assert_allclose(list(t["costs"]) + [t["after"]], costs, rtol=RTOL)
            np.testing.assert_array_equal(t["params"], trained[0]["params"])
    assert len(results[0][0]["monitored"]) == 50
    np.testing.assert_allclose(results[0][0]["monitored"], monitored, rtol=RTOL)


def minibatch_oracle(n, world, batch_size, schedule):
    """One process, the data-parallel step's promise: step k trains on the
    ranks' k-th batches concatenated (rank r's contiguous shard, batches in
    order, the short one last; a rank out of batches adds none), one
    full-batch sgd step each, the optimizer state shared by all steps.
    Returns (params, one epoch cost per schedule entry)."""
    x, y = regression_data(n, seed=1)
    shards = [sn.distributed.shard(n, rank=r, world_size=world) for r in range(world)]
    per_rank = [[range(s.start + k, min(s.start + k + batch_size, s.stop))
                 for k in range(0, s.stop - s.start, batch_size)] for s in shards]
    steps = max(len(b) for b in per_rank)
    batches = [np.concatenate([list(b[k]) for b in per_rank if k < len(b)])
               for k in range(steps)]
    net = article_net("cpu", seed=0)
    trains = [sn.training_network(net, x[idx]) for idx in batches]
    for t in trains[1:]:
        t.state = trains[0].state
    costs = []
    for epochs, hyper in schedule:
        for _ in range(epochs):
            total = 0.0
            for t, idx in zip(trains, batches):
                total += sn.sgd(t, y[idx], sn.quadratic_cost, 1, hyper, guard=False) * len(idx)
            cost = total / n
        costs.append(cost)
    return dist_worker.flat_params(net), np.array(costs)


@pytest.mark.parametrize("world, n, batch_size", [(2, 23, 5), (2, 21, 5), (3, 23, 5)],
                         ids=["short-last-batches", "rank-out-of-batches", "three-ranks"])
def test_data_parallel_minibatches_equal_one_process(tmp_path, world, n, batch_size):
    """train(..., distributed=True): every step sums the ranks' gradients
    of their k-th batches and updates with the summed batch size, so the
    ranks end where one process ends training on those batches
    concatenated.  Uneven shards (12 + 11), a short last batch on each rank
    (2 and 1 samples), a rank whose shard runs out a step before the other
    (11 + 10 in batches of 5: the second rank adds nothing to the third
    step), three ranks; plain SGD with decay, then momentum (one velocity
    across the steps)."""
    schedule = [(3, (0.05, 0.1)), (3, (0.05, 0.0, 0.5))]
    results = spawn(tmp_path, world, [("minibatch", {"n": n, "batch_size": batch_size,
                                                     "schedule": schedule})])
    _assert_all_ran(results, world)
    params, costs = minibatch_oracle(n, world, batch_size, schedule)
    trained = [results[r][0] for r in range(world)]
    for t in trained:
        np.testing.assert_allclose(t["params"], params, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(t["costs"], costs, rtol=RTOL)
        np.testing.assert_array_equal(t["params"], trained[0]["params"])
    start = dist_worker.flat_params(article_net("cpu", seed=0))
    assert np.max(np.abs(params - start)) > 100 * ATOL


def test_ranks_that_disagree_all_refuse_before_any_update(tmp_path):
    """Same parameter count in other widths, other activations, another
    eta, other epochs, another batch size: every rank raises ValueError,
    nothing changes on any rank."""
    results = spawn(tmp_path, 2, [("disagree", {})])
    _assert_all_ran(results, 2)
    for r in range(2):
        widths, acts, eta, epochs, batch = results[r][0]["messages"]
        assert widths.startswith("ValueError: net: every rank needs the same network"), widths
        assert acts.startswith("ValueError: net: every rank needs the same network"), acts
        assert "rank(s) [1] differ" in widths
        for plan in (eta, epochs):
            assert plan.startswith("ValueError: sgd: every rank must make the same call"), plan
        assert batch.startswith("ValueError: train: every rank must make the same call"), batch
        assert bool(results[r][0]["unchanged"])


def test_two_ranks_on_every_other_device(tmp_path, device):
    """The same 2-rank training on each non-CPU backend (CUDA tensors through
    gloo, OpenCL through host copies), against one process on the CPU:
    equal within float32 rounding across devices."""
    if device == "cpu":
        pytest.skip("the CPU is covered by the tests above")
    n, schedule = 101, [(50, 0.1)]
    results = spawn(tmp_path, 2, [("train", {"n": n, "schedule": schedule, "device": device})])
    _assert_all_ran(results, 2)
    params, costs, _ = single_process(n, schedule)
    for r in range(2):
        np.testing.assert_allclose(results[r][0]["params"], params, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(list(results[r][0]["costs"]) + [results[r][0]["after"]],
                                   costs, rtol=RTOL)
    np.testing.assert_array_equal(results[0][0]["params"], results[1][0]["params"])


@pytest.mark.parametrize("how, world", [("die", 3), ("hang", 2)])
def test_a_dead_or_silent_rank_makes_the_others_fail_not_hang(tmp_path, how, world):
    """The last rank stops after 5 epochs: it dies (its peers see the
    connection reset at once) or hangs alive (they give up at the process
    group's 3 s timeout).  The others are inside a 100,000-epoch call: they
    must raise DistributedError naming their rank, within the timeout."""
    results = spawn(tmp_path, world, [("failing", {"after": 5, "how": how})], timeout=3.0,
                    deadline=40.0, wait_for=range(world - 1))
    last = world - 1
    assert results[last] == ("exited with code 3 and no report" if how == "die" else "hung")
    for r in range(last):
        assert isinstance(results[r], str) and results[r] != "hung", results[r]
        assert results[r].startswith(f"DistributedError: rank {r} of {world}: all_reduce "
                                     f"failed after 5 all-reduce(s)"), results[r]
        seconds = float((tmp_path / f"rank{r}.seconds").read_text())
        if how == "die":   # the connection reset is seen at once, not at the timeout
            assert seconds < 3.0, seconds
        else:              # the timeout, plus scheduling slack
            assert 2.9 < seconds < 3.0 + 10.0, seconds


# ------------------------------------------------------- one process, no spawn
def test_world_of_one_is_plain_training(device):
    """Without an initialised process group the distributed constructor is
    training_network: no all-reduce hook, n_global = n, identical numbers."""
    assert not torch.distributed.is_initialized()
    x, y = regression_data(64)
    a, b = article_net(device, seed=3), article_net(device, seed=3)
    with sn.distributed_training_network(a, x) as ta, sn.training_network(b, x) as tb:
        assert ta.all_reduce is None and ta.n_global == ta.n == 64
        # guard=False: η = 0.3 explodes on this seed; both runs must explode alike
        ca = sn.sgd(ta, y, sn.quadratic_cost, 20, (0.3, 0.9), guard=False)
        cb = sn.sgd(tb, y, sn.quadratic_cost, 20, (0.3, 0.9), guard=False)
    assert ca == cb
    np.testing.assert_array_equal(sn.to_numpy(a.params), sn.to_numpy(b.params))


@pytest.mark.parametrize("n, world", [(1, 1), (7, 7), (10, 3), (100, 3), (101, 2), (5, 4)])
def test_shards_cover_the_data_and_differ_by_at_most_one(n, world):
    slices = [sn.distributed.shard(n, rank=r, world_size=world) for r in range(world)]
    covered = [i for s in slices for i in range(n)[s]]
    assert covered == list(range(n))
    sizes = [s.stop - s.start for s in slices]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    assert sizes == sorted(sizes, reverse=True)


def test_shard_errors():
    with pytest.raises(ValueError, match="n: every one of the 3 ranks needs at least one"):
        sn.distributed.shard(2, rank=0, world_size=3)
    with pytest.raises(ValueError, match=r"rank: expected an int in 0 \.\. 2, got 3"):
        sn.distributed.shard(10, rank=3, world_size=3)
    with pytest.raises(TypeError, match="n: expected an int"):
        sn.distributed.shard(10.0)
    assert sn.distributed.shard(10) == slice(0, 10)   # one process holds everything


def test_constructor_errors_change_nothing():
    x, _ = regression_data(10)
    net = article_net("cpu")
    before = sn.to_numpy(net.params)
    with pytest.raises(TypeError, match="net: expected a scratchnet Network"):
        sn.distributed_training_network("net", x)
    with pytest.raises(ValueError, match="staging: expected one of 'auto', 'device', 'host', "
                                         "got 'gpu'"):
        sn.distributed_training_network(net, x, staging="gpu")
    with pytest.raises(ValueError, match=r"src: expected a rank in 0 \.\. 0, got 1"):
        sn.distributed_training_network(net, x, src=1)
    np.testing.assert_array_equal(sn.to_numpy(net.params), before)
    assert net.trainings == 0


def test_init_from_env_without_a_launcher_stays_single_process(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert sn.distributed.init_from_env("cpu") == "cpu"
    assert not torch.distributed.is_initialized()
    assert sn.distributed.rank_and_world() == (0, 1)
    with pytest.raises(ValueError, match="timeout: expected a finite number > 0"):
        sn.distributed.init_from_env("cpu", timeout=0)


def _script():
    path = Path(__file__).resolve().parents[1] / "scripts" / "train_distributed.py"
    spec = importlib.util.spec_from_file_location("train_distributed", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_rank0_logs_and_checkpoints_through_whatever_this_build_has(monkeypatch, tmp_path,
                                                                           capsys):
    """scripts/train_distributed.py in one process (rank 0): TensorBoard and
    checkpoints come from other branches, so the script detects them.  With
    stand-ins for sgd(log_dir=...) and sn.save/sn.load it must pass log_dir
    to every sgd call, save after every --checkpoint-every epochs, and start
    from the loaded network on --resume; without them it refuses the flags."""
    script = _script()
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    if "log_dir" not in inspect.signature(sn.sgd).parameters:
        with pytest.raises(SystemExit):
            script.main(["--epochs", "1", "--log-dir", str(tmp_path)])
        assert "--log-dir: this scratchnet's sgd has no log_dir" in capsys.readouterr().err
    real_sgd, logged, saved = sn.sgd, [], []

    def sgd_with_log_dir(train, y, cost, epochs, hyper=None, *, monitors=(), log_dir=None):
        logged.append((epochs, log_dir))
        return real_sgd(train, y, cost, epochs, hyper, monitors=monitors)

    def save(net, path):
        saved.append((path, sn.to_numpy(net.params)))

    resumed = article_net("cpu", seed=7)
    monkeypatch.setattr(sn, "sgd", sgd_with_log_dir)
    monkeypatch.setattr(sn, "save", save, raising=False)
    monkeypatch.setattr(sn, "load", lambda path, device: resumed, raising=False)
    script.main(["--epochs", "25", "--calls", "2", "--samples", "64", "--log-dir",
                 str(tmp_path / "run"), "--checkpoint", str(tmp_path / "c"),
                 "--checkpoint-every", "10", "--resume", str(tmp_path / "old")])
    # calls end at the progress points (0, 12, 25) and at every checkpoint (10, 20)
    assert logged == [(10, str(tmp_path / "run")), (2, str(tmp_path / "run")),
                      (8, str(tmp_path / "run")), (5, str(tmp_path / "run"))]
    assert [p for p, _ in saved] == [str(tmp_path / "c")] * 2
    assert not np.array_equal(saved[0][1], saved[1][1])   # saved as training went on
    out = capsys.readouterr().out
    assert "25 epochs in" in out and "1 rank(s) on cpu" in out
    assert resumed.params is None   # the script trained (and closed) the loaded network
