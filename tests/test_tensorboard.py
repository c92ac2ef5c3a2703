"""TensorBoard logging (``sgd(..., log_dir=...)``), read back from the event
files with TensorBoard's own ``EventAccumulator``.

The oracle for every logged value is what a user sees without logging: the
cost ``sgd`` returns, ``sn.amax`` of the weights and the test cost of
``net(x_test)`` after an ``sgd`` call that ends at that step.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch
from helpers import article_net, assert_unchanged, read_events, regression_data, snapshot
from torch.utils.tensorboard import SummaryWriter

import scratchnet as sn

LAYERS = 3
TAGS = ["cost/train", "cost/test"] + [f"weights/layer{i}/{kind}" for i in range(LAYERS)
                                      for kind in ("amax", "norm")]


def observe(net, cost, x_test, y_test):
    """What a user sees after an sgd call: {tag: value} computed without the
    logger (amax by the backend, norm and test cost in float64 on the host)."""
    seen = {"cost/train": cost, "cost/test": sn.quadratic_cost(y_test, net(x_test))}
    for i, layer in enumerate(net.layers):
        seen[f"weights/layer{i}/amax"] = sn.amax(layer.weights)
        seen[f"weights/layer{i}/norm"] = float(np.linalg.norm(
            sn.to_numpy(layer.weights).astype(np.float64)))
    return seen


def assert_logged(logged, expected):
    """``logged`` {tag: [(step, value)]} equals ``expected`` {step: {tag: value}}
    as float32 (TensorBoard stores scalars as float32)."""
    steps = sorted(expected)
    for tag in TAGS:
        assert [s for s, _ in logged[tag]] == steps, tag
        got = np.array([v for _, v in logged[tag]], np.float32)
        want = np.array([expected[s][tag] for s in steps], np.float32)
        if tag.endswith("amax"):   # a max of stored weights: exact
            np.testing.assert_array_equal(got, want, err_msg=tag)
        else:
            np.testing.assert_allclose(got, want, rtol=2e-6, err_msg=tag)


def test_one_epoch_calls_log_what_sgd_returned_and_the_weights_amax(device, tmp_path):
    """One-epoch sgd calls, each opening and closing its own writer on the
    same run: one value per epoch, steps continuing across the calls, each
    equal to the call's return value and to the weights it left."""
    x, y = regression_data(200)
    x_test, y_test = regression_data(50, seed=1)
    net = article_net(device)
    train = sn.training_network(net, x)
    expected = {}
    for _ in range(4):
        cost = sn.sgd(train, y, sn.quadratic_cost, 1, (0.3, 0.9), log_dir=tmp_path,
                      test=(x_test, y_test))
        expected[train.epoch] = observe(net, cost, x_test, y_test)
    logged, hists, _ = read_events(tmp_path)
    assert sorted(logged) == sorted(TAGS)
    assert hists == {}   # hist_every is off by default
    assert_logged(logged, expected)
    assert sorted(expected) == [1, 2, 3, 4]


def test_chunked_logging_matches_one_epoch_calls(device, tmp_path):
    """log_every=3 over a 10-epoch call logs epochs 3, 6, 9 and the call's
    last, 10, with the values one-epoch calls see at those steps; a second
    call continues at 13 and ends at 14.  The weights at step e are the ones
    after epoch e's update, the cost the one before it."""
    x, y = regression_data(200)
    x_test, y_test = regression_data(50, seed=1)
    reference = article_net(device)
    ref_train = sn.training_network(reference, x)
    seen = {}
    for _ in range(14):
        cost = sn.sgd(ref_train, y, sn.quadratic_cost, 1, (0.1, 0.01))
        seen[ref_train.epoch] = observe(reference, cost, x_test, y_test)

    net = article_net(device)
    train = sn.training_network(net, x)
    with SummaryWriter(str(tmp_path)) as writer:
        first = sn.sgd(train, y, sn.quadratic_cost, 10, (0.1, 0.01), log_dir=writer,
                       test=(x_test, y_test), log_every=3)
        second = sn.sgd(train, y, sn.quadratic_cost, 4, (0.1, 0.01), log_dir=writer,
                        test=(x_test, y_test), log_every=3)
    logged, _, _ = read_events(tmp_path)
    assert [s for s, _ in logged["cost/train"]] == [3, 6, 9, 10, 13, 14]
    assert logged["cost/train"][3][1] == np.float32(first)
    assert logged["cost/train"][5][1] == np.float32(second)
    for tag in TAGS:   # chunked and one-epoch runs are the same arithmetic
        got = [v for _, v in logged[tag]]
        want = [seen[s][tag] for s in (3, 6, 9, 10, 13, 14)]
        np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=tag)


def test_histograms_every_hist_every_epochs(device, tmp_path):
    """hist_every=2: a histogram at each logged step that reaches a new
    multiple of 2, across calls; each one bins every weight of its layer."""
    x, y = regression_data(100)
    net = article_net(device)
    train = sn.training_network(net, x)
    weights_at = {}
    for epochs in (5, 3):
        sn.sgd(train, y, sn.quadratic_cost, epochs, 0.1, log_dir=tmp_path, hist_every=2)
        weights_at[train.epoch] = [sn.to_numpy(la.weights) for la in net.layers]
    _, hists, _ = read_events(tmp_path)
    assert sorted(hists) == [f"weights/layer{i}" for i in range(LAYERS)]
    for i in range(len(net.layers)):
        events = hists[f"weights/layer{i}"]
        assert [e.step for e in events] == [2, 4, 6, 8]
        for e in events:
            assert e.histogram_value.num == weights_at[8][i].size
        last = events[-1].histogram_value   # step 8 = the weights now
        assert last.min == pytest.approx(float(weights_at[8][i].min()), rel=1e-6)
        assert last.max == pytest.approx(float(weights_at[8][i].max()), rel=1e-6)


def test_a_diverging_run_logs_nan_without_crashing(device, tmp_path):
    """η = 10⁴ sends the weights to 1e30 and then NaN: every epoch is still
    logged (NaN as NaN), histograms bin the finite values only."""
    x, y = regression_data(100)
    train = sn.training_network(article_net(device), x)
    with np.errstate(all="ignore"):
        last = sn.sgd(train, y, sn.quadratic_cost, 8, 1e4, log_dir=tmp_path, test=(x, y),
                      hist_every=1, guard=False)   # the guard would stop the explosion
    assert math.isnan(last)
    logged, hists, _ = read_events(tmp_path)
    assert [s for s, _ in logged["cost/train"]] == list(range(1, 9))
    assert math.isnan(logged["cost/train"][-1][1])
    assert math.isnan(logged["cost/test"][-1][1])
    assert all(math.isnan(v) for _, v in logged["weights/layer0/amax"][-2:])
    assert 1 <= len(hists["weights/layer0"]) < 8


def test_a_callers_writer_is_flushed_not_closed(tmp_path):
    """The values are on disk when sgd returns (flushed), and the caller's
    writer is still open: what it writes afterwards lands in the same file."""
    x, y = regression_data(50)
    train = sn.training_network(article_net("cpu"), x)
    writer = SummaryWriter(str(tmp_path), flush_secs=3600)
    sn.sgd(train, y, sn.quadratic_cost, 2, 0.1, log_dir=writer)
    logged, _, _ = read_events(tmp_path)
    assert len(logged["cost/train"]) == 2
    assert writer.file_writer is not None   # SummaryWriter.close() sets it to None
    writer.add_scalar("mine", 7.0, 0)
    writer.close()
    logged, _, _ = read_events(tmp_path)
    assert logged["mine"] == [(0, 7.0)]
    assert len(list(tmp_path.iterdir())) == 1


def writer_threads():
    return [t for t in threading.enumerate() if type(t).__name__ == "_AsyncWriterThread"]


def test_own_writer_is_closed(tmp_path):
    """With a path, sgd opens a writer for the call and closes it: its
    event-writing thread is gone when sgd returns, even after an error."""
    x, y = regression_data(50)
    train = sn.training_network(article_net("cpu"), x)
    before = writer_threads()
    sn.sgd(train, y, sn.quadratic_cost, 2, 0.1, log_dir=tmp_path / "a", test=(x, y))
    assert writer_threads() == before

    class Boom(sn.Monitor):
        chunk = 1

        def after_chunk(self, *args):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        sn.sgd(train, y, sn.quadratic_cost, 2, 0.1, log_dir=tmp_path / "b", monitors=[Boom()])
    assert writer_threads() == before
    logged, _, _ = read_events(tmp_path / "b")   # the logger ran first: epoch 3 is on disk
    assert [s for s, _ in logged["cost/train"]] == [3]


def test_custom_scalar_layout(tmp_path):
    """The layout overlays cost/train and cost/test and puts every layer's
    amax in one chart (its tags are regexes matching the logged tags)."""
    import re

    from tensorboard.plugins.custom_scalar import layout_pb2

    x, y = regression_data(50)
    train = sn.training_network(article_net("cpu"), x)
    sn.sgd(train, y, sn.quadratic_cost, 1, 0.1, log_dir=tmp_path, test=(x, y))
    logged, _, acc = read_events(tmp_path)
    (event,) = acc.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(event.tensor_proto.string_val[0])
    charts = {c.title: list(c.multiline.tag) for cat in layout.category for c in cat.chart}
    matched = {title: sorted(t for t in logged if any(re.search(r, t) for r in regexes))
               for title, regexes in charts.items()}
    assert matched["cost (train, test)"] == ["cost/test", "cost/train"]
    assert matched["max |w| per layer"] == [f"weights/layer{i}/amax" for i in range(LAYERS)]


def test_logging_allocates_per_call_not_per_epoch(tmp_path):
    """The logger allocates its buffers once per sgd call: 3 and 9 logged
    epochs see the same number of device allocations."""
    x, y = regression_data(50)
    train = sn.training_network(article_net("cpu"), x)
    writer = SummaryWriter(str(tmp_path))
    sn.sgd(train, y, sn.quadratic_cost, 1, 0.1, log_dir=writer, test=(x, y))  # warm-up
    counts = []
    for epochs in (3, 9):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                    profile_memory=True) as prof:
            sn.sgd(train, y, sn.quadratic_cost, epochs, 0.1, log_dir=writer, test=(x, y))
        counts.append(sum(1 for e in prof.events() if e.cpu_memory_usage > 0))
    writer.close()
    assert counts[0] == counts[1], counts


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(log_dir=None, test="T"), ValueError, "log_dir: .*give log_dir"),
    (dict(log_dir=None, log_every=5), ValueError, "log_dir"),
    (dict(log_dir=42), TypeError, "log_dir: expected a run directory .* got int"),
    (dict(log_dir=""), ValueError, "log_dir: expected a run directory, got an empty"),
    (dict(log_every=0), ValueError, "log_every: expected an int >= 1, got 0"),
    (dict(log_every=1.5), TypeError, "log_every: expected an int"),
    (dict(hist_every=0), ValueError, "hist_every: expected an int >= 1"),
    (dict(test="T"), TypeError, "test: expected an .x_test, y_test. pair, got str"),
    (dict(test=("X",)), TypeError, "test: expected an .x_test, y_test. pair, got tuple of "
                                   "length 1"),
    (dict(test=("X3", "Y")), ValueError, r"test\[0\] \(x_test\): expected 4 columns"),
    (dict(test=("X", "Y7")), ValueError, r"test\[1\] \(y_test\): expected 8 rows"),
    (dict(test=("X", "Ynan")), ValueError, r"test\[1\] \(y_test\): expected finite"),
    (dict(test=("Xint", "Y")), TypeError, r"test\[0\] \(x_test\): expected floating"),
])
def test_bad_logging_arguments_change_nothing(device, tmp_path, kwargs, error, match):
    x, y = regression_data(20)
    data = {"X": regression_data(8)[0], "Y": regression_data(8)[1],
            "X3": regression_data(8)[0][:, :3], "Y7": regression_data(7)[1],
            "Ynan": np.full((8, 1), np.nan, np.float32),
            "Xint": regression_data(8)[0].astype(np.int64)}
    kwargs = dict(kwargs)   # the parametrize dict is shared by every device's run
    if "test" in kwargs and isinstance(kwargs["test"], tuple):
        kwargs["test"] = tuple(data[k] for k in kwargs["test"])
    kwargs.setdefault("log_dir", tmp_path / "run")
    net = article_net(device)
    train = sn.training_network(net, x)
    before = snapshot(net)
    with pytest.raises(error, match=match):
        sn.sgd(train, y, sn.quadratic_cost, 3, 0.1, **kwargs)
    assert_unchanged(net, before)
    assert train.epoch == 0 and not sn.to_numpy(train.y).any()   # y not loaded
    assert list(tmp_path.iterdir()) == []   # no run directory, no event file


def test_the_logger_as_a_monitor(tmp_path):
    """TensorBoardLogger passed through monitors= logs like the keywords; one
    made for another training network is refused before any epoch runs."""
    from scratchnet.monitors.tensorboard import TensorBoardLogger

    x, y = regression_data(50)
    train = sn.training_network(article_net("cpu"), x)
    logger = TensorBoardLogger(tmp_path / "m", train=train, log_every=2)
    sn.sgd(train, y, sn.quadratic_cost, 4, 0.1, monitors=[logger])
    sn.sgd(train, y, sn.quadratic_cost, 3, 0.1, monitors=[logger])   # reusable
    logged, _, _ = read_events(tmp_path / "m")
    assert [s for s, _ in logged["cost/train"]] == [2, 4, 6, 7]
    other = sn.training_network(article_net("cpu"), x)
    with pytest.raises(ValueError, match="train: this TensorBoardLogger was made for another"):
        sn.sgd(other, y, sn.quadratic_cost, 2, 0.1, monitors=[logger])
    assert other.epoch == 0


def test_guard_backoff_logs_train_eta(tmp_path):
    """on_divergence="backoff" with logging on: each backoff writes
    train/eta at the restored epoch (the guard's eta_changed hook), and the
    cost keeps being logged after the rewind."""
    from helpers import Saboteur

    x, y = regression_data(64)
    train = sn.training_network(article_net("cpu"), x)
    with pytest.warns(sn.DivergenceWarning):
        sn.sgd(train, y, sn.quadratic_cost, 12, Saboteur(0.2, 6, times=1), log_dir=tmp_path,
               on_divergence="backoff", guard_every=1)
    logged, _, _ = read_events(tmp_path)
    assert logged["train/eta"] == [(6, pytest.approx(0.1))]
    steps = [s for s, _ in logged["cost/train"]]
    assert steps[-1] == 12 and all(math.isfinite(v) for _, v in logged["cost/train"][-5:])
