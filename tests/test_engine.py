"""One engine behind ``sgd`` and ``train``: mini-batch training gets what
full-batch training has (TensorBoard, checkpoints, the guard, progress),
interruptions leave a consistent network, and settings users bring from
other libraries get an error that says where they go here.

Oracles: the costs a call returns and the weights it leaves, computed by
calls without the feature under test (one-epoch calls, guard-free runs from
the same initial weights); the update arithmetic is the same, so equality is
bit for bit where the same operations run.
"""

from __future__ import annotations

import _thread
import threading
import warnings

import numpy as np
import pytest
from helpers import article_net, read_events, regression_data

import scratchnet as sn


def params(net) -> np.ndarray:
    return sn.to_numpy(net.params)


# ---------------------------------------------------------------- TensorBoard
def test_train_logs_epochs_to_tensorboard(tmp_path, device):
    """train(log_dir=...) logs cost/train at every log_every-th epoch (the
    sample-weighted epoch cost, as one-epoch calls return it), the test cost
    and the weights' max |w| of the state the call leaves."""
    x, y = regression_data(100)
    x_test, y_test = regression_data(40, seed=9)
    net = article_net(device)
    sn.train(net, x, y, sn.quadratic_cost, 6, 0.1, batch_size=16, seed=2, log_dir=tmp_path,
             log_every=2, test=(x_test, y_test))
    logged, _, _ = read_events(tmp_path)
    oracle = article_net(device)
    expected = sn.train(oracle, x, y, sn.quadratic_cost, [(1, 0.1)] * 6, batch_size=16, seed=2)
    assert [s for s, _ in logged["cost/train"]] == [2, 4, 6]
    np.testing.assert_allclose([v for _, v in logged["cost/train"]],
                               np.float32(expected[1::2]), rtol=1e-6)
    np.testing.assert_array_equal(params(net), params(oracle))
    assert logged["cost/test"][-1][1] == pytest.approx(
        sn.quadratic_cost(y_test, net(x_test)), rel=1e-5)
    for i, layer in enumerate(net.layers):
        assert logged[f"weights/layer{i}/amax"][-1] == (6, np.float32(sn.amax(layer.weights)))


# ---------------------------------------------------------------- checkpoints
def test_train_checkpoint_resumes_bit_for_bit(tmp_path, device):
    """10 epochs of momentum in one call equal 6 epochs saved by
    checkpoint=, loaded with load_training and trained 4 more with the same
    seed: the epoch count, the velocity and the shuffles all go on."""
    x, y = regression_data(90)
    hyper = sn.SGD(0.05, 0.01, 0.9)
    straight = article_net(device)
    sn.train(straight, x, y, sn.quadratic_cost, 10, hyper, batch_size=16, seed=4)
    first = article_net(device)
    path = tmp_path / "six.ckpt"
    sn.train(first, x, y, sn.quadratic_cost, 6, hyper, batch_size=16, seed=4, checkpoint=path)
    with sn.load_training(path, x, device=device) as resumed:
        assert resumed.epoch == 6 and "velocity" in resumed.state
        sn.train(resumed, x, y, sn.quadratic_cost, 4, hyper, batch_size=16, seed=4)
        assert resumed.epoch == 10
        np.testing.assert_array_equal(params(resumed.net), params(straight))


def test_train_periodic_checkpoints_hold_verified_epochs(tmp_path, device):
    x, y = regression_data(60)
    net = article_net(device)
    path = tmp_path / "every.ckpt"
    seen = []

    class Peek(sn.Monitor):
        chunk = 3

        def after_chunk(self, train, first_epoch, costs):
            if path.exists():
                seen.append(sn.load_training(path, x[:1]).epoch)

    sn.train(net, x, y, sn.quadratic_cost, 12, 0.05, batch_size=16, seed=1, checkpoint=path,
             checkpoint_every=3, guard_every=3, monitors=[Peek()])
    # Epoch e is saved once the guard has verified it (the chunk after e's
    # ends: 3, 6 and 9), the last state after the call; a caller's monitor
    # runs before the checkpointer, so it sees the previous chunk's save.
    assert seen == [3, 6] and sn.load_training(path, x[:1]).epoch == 12


# ---------------------------------------------------------------- the guard
class StepSaboteur(sn.SGD):
    """SGD whose ``at``-th step (counted over the whole call, 0-based)
    writes NaN into every parameter, at most ``times`` times.  A subclass
    of SGD trains on the reference step on every runner; the oracles below
    take the same path through a saboteur that never fires (``at=-1``)."""

    def __init__(self, eta, at, times=None):
        super().__init__(eta)
        self.at, self.times, self.steps, self.fired = at, times, 0, 0

    def with_eta(self, eta):
        other = StepSaboteur(eta, self.at, self.times)
        other.steps, other.fired = self.steps, self.fired
        return other

    def step(self, train):
        super().step(train)
        if self.steps == self.at and (self.times is None or self.fired < self.times):
            self.fired += 1
            train.backend.axpy_(train.net.params, float("nan"), train.net.params)
        self.steps += 1


def test_train_guard_raises_with_the_verified_state(device):
    """5 batches per epoch; step 17, the third of epoch 3, poisons the
    weights, so epoch 3's cost (its last two batches ran on NaN weights) is
    the first bad one.  With guard_every=2 the verified state is epoch 2:
    the network holds exactly a guard-free run's epoch-2 weights."""
    x, y = regression_data(80)
    net = article_net(device)
    with pytest.raises(sn.DivergenceError) as info:
        sn.train(net, x, y, sn.quadratic_cost, 8, StepSaboteur(0.05, 17), batch_size=16,
                 seed=5, guard_every=2)
    assert (info.value.epoch, info.value.restored_epoch) == (3, 2)
    oracle = article_net(device)
    sn.train(oracle, x, y, sn.quadratic_cost, 2, StepSaboteur(0.05, -1), batch_size=16,
             seed=5, guard=False)
    np.testing.assert_array_equal(params(net), params(oracle))


def test_train_guard_backs_off_and_reruns_the_lost_epochs(device):
    x, y = regression_data(80)
    net = article_net(device)
    with pytest.warns(sn.DivergenceWarning, match="halved eta 0.05 -> 0.025"):
        sn.train(net, x, y, sn.quadratic_cost, 6, StepSaboteur(0.05, 17, times=1),
                 batch_size=16, seed=5, guard_every=2, on_divergence="backoff")
    oracle = article_net(device)
    sn.train(oracle, x, y, sn.quadratic_cost,
             [(2, StepSaboteur(0.05, -1)), (4, StepSaboteur(0.025, -1))], batch_size=16,
             seed=5, guard=False)
    np.testing.assert_array_equal(params(net), params(oracle))


def test_backoff_reruns_each_lost_epoch_at_its_own_entry_eta(device):
    """The schedule [(8, 0.05), (20, 5.0)] blows up in its second entry.
    The restored epochs of the first entry are trained again at 0.05, the
    second entry at 5.0 halved per backoff, and the guard's best cost comes
    back with the state it restores: the call ends finite, equal bit for
    bit to a guard-free run at the η the backoffs reached."""
    x, y = regression_data(200)
    train = sn.training_network(article_net(device), x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sn.sgd(train, y, sn.quadratic_cost, [(8, 0.05), (20, 5.0)], on_divergence="backoff")
    backoffs = sum(w.category is sn.DivergenceWarning for w in caught)
    assert 1 <= backoffs <= 5 and train.epoch == 28
    eta = 5.0 / 2 ** backoffs
    oracle = sn.training_network(article_net(device), x)
    sn.sgd(oracle, y, sn.quadratic_cost, [(8, 0.05), (20, eta)], guard=False)
    np.testing.assert_array_equal(params(train.net), params(oracle.net))
    assert np.isfinite(params(train.net)).all()


def test_a_restore_also_restores_the_guards_best_cost():
    """The guard's own bookkeeping goes back with the state it restores:
    after a rewind to epoch 8, ``best`` is the best of the costs up to
    epoch 8 (1.0, its own), not the 0.5 of the discarded epoch 9, which
    would judge the rerun against a cost the restored state never had.
    Costs are fed to the guard directly, chunk by chunk."""
    from scratchnet.monitors.guard import Guard

    x, _ = regression_data(8)
    train = sn.training_network(article_net("cpu"), x)
    guard = Guard(every=4, on_divergence="backoff")
    optimizer = sn.SGD(0.1)
    guard.start(train, sn.quadratic_cost, optimizer)
    guard.begin(train, optimizer, 100)
    for first, costs in ((0, [10.0, 9.0, 8.0, 7.0]), (4, [6.0, 5.0, 4.0, 3.0])):
        train.epoch = first + 4
        assert guard.after_chunk(train, first, costs) is None
    train.epoch = 12
    with pytest.warns(sn.DivergenceWarning):
        answer = guard.after_chunk(train, 8, [1.0, 0.5, float("nan"), 0.4])
    assert answer == sn.Rewind(8, 0.5) and train.epoch == 8
    assert guard.best == 1.0


# ---------------------------------------------------------------- progress
@pytest.mark.parametrize("front", ["sgd", "train"])
def test_progress_bar_on_stderr_only_when_asked(capsys, front):
    x, y = regression_data(50)
    net = article_net("cpu")
    train = sn.training_network(net, x)

    def call(**kw):
        if front == "sgd":
            return sn.sgd(train, y, sn.quadratic_cost, 40, 0.1, **kw)
        return sn.train(net, x, y, sn.quadratic_cost, 40, 0.1, batch_size=10, **kw)

    call()
    out = capsys.readouterr()
    assert out.err == "" and out.out == ""
    cost = call(progress=True)
    err = capsys.readouterr().err
    assert f"{front}:" in err and "40/40" in err and "epoch/s" in err
    assert f"cost={cost:.4g}" in err


# ---------------------------------------------------------------- interrupts
def _interrupt_soon(seconds=0.3):
    timer = threading.Timer(seconds, _thread.interrupt_main)
    timer.start()
    return timer


def test_ctrl_c_in_sgd_leaves_epoch_equal_to_updates(tmp_path, device):
    """Ctrl-C during a long call stops it between two epochs: the epoch
    count equals the updates the weights received (a guard-free run of that
    many epochs gives the same weights), and a checkpoint saved afterwards
    records that epoch."""
    x, y = regression_data(64)
    train = sn.training_network(article_net(device), x)
    timer = _interrupt_soon()
    with pytest.raises(KeyboardInterrupt):
        sn.sgd(train, y, sn.quadratic_cost, 10**8, 0.01)
    timer.join()
    done = train.epoch
    assert done > 0
    oracle = sn.training_network(article_net(device), x)
    sn.sgd(oracle, y, sn.quadratic_cost, done, 0.01, guard=False)
    np.testing.assert_array_equal(params(train.net), params(oracle.net))
    sn.save(train, tmp_path / "after.ckpt")
    assert sn.load_training(tmp_path / "after.ckpt", x).epoch == done


def test_ctrl_c_in_train_leaves_epoch_equal_to_updates(device):
    x, y = regression_data(64)
    net = article_net(device)
    resumable = sn.training_network(net, x)
    timer = _interrupt_soon()
    with pytest.raises(KeyboardInterrupt):
        sn.train(resumable, x, y, sn.quadratic_cost, 10**8, 0.01, batch_size=16, seed=3)
    timer.join()
    done = resumable.epoch
    assert done > 0
    oracle = article_net(device)
    sn.train(oracle, x, y, sn.quadratic_cost, done, 0.01, batch_size=16, seed=3, guard=False)
    np.testing.assert_array_equal(params(net), params(oracle))


def test_ctrl_c_during_the_last_chunks_monitors_is_not_lost():
    """A Ctrl-C that arrives while the monitors read the last chunk still
    interrupts the call (the deferred flag is looked at once more before
    sgd returns)."""
    x, y = regression_data(32)
    train = sn.training_network(article_net("cpu"), x)

    class Slow(sn.Monitor):
        chunk = 10

        def after_chunk(self, train, first_epoch, costs):
            _thread.interrupt_main()   # the deferred handler only sets the flag

    with pytest.raises(KeyboardInterrupt):
        sn.sgd(train, y, sn.quadratic_cost, 10, 0.01, monitors=[Slow()], guard=False)
    assert train.epoch == 10


def test_saves_from_another_thread_are_consistent(tmp_path):
    """A thread saves the training network again and again while sgd runs:
    every file holds (weights, epoch, state) of one moment, the weights of
    a momentum run after exactly the epochs the file records."""
    x, y = regression_data(32)
    hyper = sn.SGD(0.02, 0.0, 0.5)
    train = sn.training_network(article_net("cpu"), x)
    files, stop = [], threading.Event()

    def saver():
        while not stop.is_set():
            path = tmp_path / f"{len(files)}.ckpt"
            sn.save(train, path)
            files.append(path)

    def inside_calls():   # saved epochs that fell inside a call, not between two
        return {e for e in loaded if e % 3000}

    thread = threading.Thread(target=saver)
    thread.start()
    loaded, read = {}, 0
    try:
        for _ in range(20):   # until saves have landed inside calls (a few ms each)
            sn.sgd(train, y, sn.quadratic_cost, 3000, hyper, guard_every=16)   # many chunks
            saved, read = files[read:], len(files)
            for path in saved:
                with sn.load_training(path, x) as t:
                    loaded[t.epoch] = (params(t.net),
                                       sn.to_numpy(t.state.get("velocity", np.zeros(1))))
            if len(inside_calls()) >= 3:
                break
    finally:
        stop.set()
        thread.join()
    assert len(inside_calls()) >= 3, sorted(loaded)
    oracle = sn.training_network(article_net("cpu"), x)
    for epoch in sorted(loaded):
        sn.sgd(oracle, y, sn.quadratic_cost, epoch - oracle.epoch, hyper, guard=False)
        np.testing.assert_array_equal(loaded[epoch][0], params(oracle.net), err_msg=str(epoch))
        if epoch:
            np.testing.assert_array_equal(loaded[epoch][1], sn.to_numpy(oracle.state["velocity"]))


# ---------------------------------------------------------------- teaching errors
@pytest.mark.parametrize("keyword, words", [
    ("lr", ["eta", "hyper"]), ("learning_rate", ["eta"]), ("weight_decay", ["lam"]),
    ("momentum", ["mu"]), ("batch_size", ["scratchnet.train", "batch_size=B"]),
])
def test_keywords_from_other_libraries_say_where_they_go(keyword, words):
    x, y = regression_data(10)
    train = sn.training_network(article_net("cpu"), x)
    before = params(train.net)
    with pytest.raises(TypeError, match=f"unexpected keyword argument '{keyword}'") as info:
        sn.sgd(train, y, sn.quadratic_cost, 5, 0.1, **{keyword: 0.1})
    for word in words:
        assert word in str(info.value)
    np.testing.assert_array_equal(params(train.net), before)
    assert train.epoch == 0
    if keyword != "batch_size":
        with pytest.raises(TypeError, match=words[0]):
            sn.train(train.net, x, y, sn.quadratic_cost, 5, 0.1, **{keyword: 0.1})


def test_activation_keyword_on_fully_connected_says_where_it_goes():
    with pytest.raises(TypeError, match="activation_fn: fully_connected.32, scratchnet.relu"):
        sn.fully_connected(32, activation=sn.relu)
    with pytest.raises(TypeError, match="activation_fn: missing"):
        sn.fully_connected(32)
