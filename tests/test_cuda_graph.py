"""CUDA graphs (scratchnet/engine/cuda_graph.py) and the CUDA allocator check.

The runner's bookkeeping (warm-up, chunking into graphs, the cache keyed by
hyperparameters and cost slots, fallback) is tested on every machine with a
stand-in for the CUDA mechanism that records the body at capture and runs it
at replay; the real capture is tested against eager training where CUDA
exists (skipped otherwise)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import CostRecorder, article_net, regression_data

import scratchnet as sn
from scratchnet.engine import runner_for
from scratchnet.engine.cuda_graph import GraphRunner
from scratchnet.engine.reference import FullBatch

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="CUDA is not available (torch.cuda.is_available() is False)")


class FakeGraphs:
    """Stands in for CudaGraphs: capture records the body without running it
    (as CUDA does), replay runs it."""

    def __init__(self, fail_captures=0):
        self.warmups = 0
        self.captured = []
        self.dropped = 0
        self.fail_captures = fail_captures

    def warm_up(self, body):
        self.warmups += 1
        body()

    def capture(self, body):
        if self.fail_captures:
            self.fail_captures -= 1
            raise RuntimeError("operation not permitted when stream is capturing")
        self.captured.append(body)
        return body

    @staticmethod
    def replay(graph):
        graph()

    def drop(self, graph):
        self.dropped += 1


def train_both(device, runner_for_graphs, guard=True):
    """The same schedule eagerly and through a graph runner; returns both
    training networks and their costs.  ``guard=False`` keeps sgd's chunking
    to what the schedule and the monitor ask (the guard reads every 16)."""
    x, y = regression_data(300)
    results = []
    for graphs in (False, True):
        train = sn.training_network(article_net(device), x)
        train.runner = runner_for_graphs(train) if graphs else FullBatch(train)
        # 194 epochs in all: compare within the first 200 (chaotic later)
        costs = sn.sgd(train, y, sn.quadratic_cost, [(1, (0.1, 0.01))] * 5
                       + [(70, (0.1, 0.01)), (30, (0.05, 0.0)), (0, 0.1), (64, (0.1, 0.01))],
                       guard=guard)
        rec = CostRecorder(10)
        costs.append(sn.sgd(train, y, sn.quadratic_cost, 25, (0.1, 0.01), monitors=[rec],
                            guard=guard))
        results.append((train, costs, rec.costs))
    return results


def fake_runner(train, **kw):
    return GraphRunner(train, FakeGraphs(), epochs_per_graph=64, **kw)


def test_replayed_epochs_equal_eager_epochs():
    (eager, c_eager, m_eager), (graph, c_graph, m_graph) = train_both("cpu", fake_runner)
    assert c_graph == c_eager and m_graph == m_eager and len(m_graph) == 25
    np.testing.assert_array_equal(sn.to_numpy(graph.net.params), sn.to_numpy(eager.net.params))
    assert graph.epoch == eager.epoch == 5 + 70 + 30 + 64 + 25


def test_graphs_are_cached_by_hyperparameters_and_chunk():
    (_, _, _), (graph, _, _) = train_both("cpu", fake_runner, guard=False)
    runner = graph.runner
    # one eager epoch before the first capture of each (optimizer, cost):
    # (0.1, 0.01) and (0.05, 0)
    assert runner.mechanism.warmups == 2
    # keys: 1 epoch (0.1, 0.01) [4 calls after the warm-up]; 64 and 6 (70 =
    # 64 + 6); 29 at (0.05, 0) after its warm-up; the 64-epoch call reuses;
    # the monitored 25 epochs: chunks of 10, 10, 5 with cost slots -> 10, 5.
    assert runner.captures == len(runner.mechanism.captured) == 6
    assert runner.replays == 4 + 2 + 1 + 1 + 3


def test_least_recently_used_graphs_are_dropped():
    x, y = regression_data(50)
    train = sn.training_network(article_net("cpu"), x)
    train.runner = runner = fake_runner(train, max_graphs=2)
    for eta in (0.1, 0.2, 0.3, 0.1):
        sn.sgd(train, y, sn.quadratic_cost, 3, eta)
    assert runner.captures == 4 and runner.mechanism.dropped == 2
    assert len(runner.graphs) == 2
    train.close()
    assert runner.mechanism.dropped == 4 and train.runner is None


def test_optimizers_without_a_key_run_eagerly():
    class Plain(sn.SGD):       # a subclass may step differently: no key, no graph
        pass

    x, y = regression_data(50)
    train = sn.training_network(article_net("cpu"), x)
    train.runner = fake_runner(train)
    sn.sgd(train, y, sn.quadratic_cost, 5, Plain(0.1))
    assert train.runner.mechanism.warmups == 0 and train.runner.captures == 0
    assert train.epoch == 5


def test_failed_capture_warns_and_finishes_eagerly():
    x, y = regression_data(100)
    eager = sn.training_network(article_net("cpu"), x)
    eager.runner = FullBatch(eager)
    expected = sn.sgd(eager, y, sn.quadratic_cost, 200, 0.1)
    train = sn.training_network(article_net("cpu"), x)
    train.runner = GraphRunner(train, FakeGraphs(fail_captures=1), epochs_per_graph=64)
    with pytest.warns(RuntimeWarning, match="capture failed"):
        got = sn.sgd(train, y, sn.quadratic_cost, 200, 0.1)
    assert got == expected and train.epoch == 200
    assert "stream is capturing" in train.runner.broken
    sn.sgd(train, y, sn.quadratic_cost, 70, 0.1)     # broken: eager from now on
    assert train.runner.captures == 0


def test_no_graphs_off_cuda():
    x, _ = regression_data(10)
    assert not isinstance(runner_for(sn.training_network(article_net("cpu"), x)), GraphRunner)


def test_guarded_calls_capture_one_graph_per_chunk_shape():
    """With the guard on (chunks of 64 epochs at n = 300, see
    guard.automatic_every, with cost slots) the schedule of train_both
    captures 6 graphs: the count the CUDA test below expects."""
    (_, _, _), (graph, _, _) = train_both("cpu", fake_runner, guard=True)
    assert graph.runner.captures == GUARDED_CAPTURES


#: Graphs train_both captures with the guard on, counted with the stand-in.
GUARDED_CAPTURES = 6


# ------------------------------------------------------------ real CUDA
@needs_cuda
def test_cuda_graph_replay_matches_eager_cuda():
    from scratchnet.engine.cuda_graph import CudaGraphs

    def real(train):
        return GraphRunner(train, CudaGraphs(train.backend.torch_device), epochs_per_graph=64)

    (eager, c_eager, m_eager), (graph, c_graph, m_graph) = train_both("cuda", real)
    assert graph.runner.captures == GUARDED_CAPTURES
    np.testing.assert_allclose(c_graph, c_eager, rtol=1e-5)
    np.testing.assert_allclose(m_graph, m_eager, rtol=1e-5)
    np.testing.assert_allclose(sn.to_numpy(graph.net.params), sn.to_numpy(eager.net.params),
                               rtol=1e-5, atol=1e-6)


@needs_cuda
def test_cuda_training_networks_use_graphs_by_default():
    x, y = regression_data(100)
    train = sn.training_network(article_net("cuda"), x)
    assert isinstance(runner_for(train), GraphRunner)
    sn.sgd(train, y, sn.quadratic_cost, 10, 0.1)
    assert train.runner.captures == 1 and train.runner.replays == 1


@needs_cuda
@pytest.mark.parametrize("n", [1000, 200_000])
@pytest.mark.parametrize("graphs", [True, False], ids=["graphs", "eager"])
def test_cuda_epochs_allocate_nothing_after_the_first(graphs, n):
    """The CUDA caching allocator's counters: after the first call (which
    warms up and captures the 64-epoch graph), 128 more epochs (two replays)
    allocate nothing, not even a cached block, also where a reduction over
    the samples would need scratch (n = 200,000)."""
    x, y = regression_data(n)
    y = torch.from_numpy(y)
    train = sn.training_network(article_net("cuda"), x)
    if not graphs:
        train.runner = FullBatch(train)
    sn.sgd(train, y, sn.quadratic_cost, 1 + 128, (0.1, 0.01))
    torch.cuda.synchronize()
    before = torch.cuda.memory_stats()
    sn.sgd(train, y, sn.quadratic_cost, 128, (0.1, 0.01))
    torch.cuda.synchronize()
    after = torch.cuda.memory_stats()
    for key in ("allocation.all.allocated", "segment.all.allocated"):
        assert after[key] == before[key], key
