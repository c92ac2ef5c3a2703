"""Checkpoints: bit-for-bit round trips across devices, resuming training,
periodic saves that only ever hold verified states, hostile files, and
atomicity under SIGKILL."""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import struct
import sys
import time

import numpy as np
import pytest
import torch
from helpers import CostRecorder, Saboteur, article_net, regression_data

import scratchnet as sn
from scratchnet.nn import checkpoint


def same_network(a, b):
    assert a.in_dim == b.in_dim and a.convention == b.convention and a.dtype == b.dtype
    assert [(la.out_dim, la.activation) for la in a.layers] == [
        (lb.out_dim, lb.activation) for lb in b.layers]
    np.testing.assert_array_equal(sn.to_numpy(a.params), sn.to_numpy(b.params))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("convention", ["standard", "series"])
def test_round_trip_between_devices_bit_for_bit(device, tmp_path, dtype, convention):
    x, y = regression_data(50)
    net = article_net(device, dtype=dtype, convention=convention)
    sn.sgd(sn.training_network(net, x), y, sn.quadratic_cost, 3, 0.1)
    path = tmp_path / "net.ckpt"
    sn.save(net, path)
    for target in {device, "cpu"}:
        back = sn.load(path, device=target)
        assert back.device.split(":")[0] == target.split(":")[0]
        same_network(net, back)   # the parameters themselves: bit for bit
        if target == device:
            np.testing.assert_array_equal(sn.to_numpy(back(x)), sn.to_numpy(net(x)))
        else:   # another backend sums in another order: equal to rounding
            tol = 1e-5 if dtype == torch.float32 else 1e-12
            np.testing.assert_allclose(sn.to_numpy(back(x)), sn.to_numpy(net(x)), rtol=tol,
                                       atol=tol)
    converted = sn.load(str(path), dtype=torch.float64)
    np.testing.assert_allclose(sn.to_numpy(converted.params),
                               sn.to_numpy(net.params).astype(np.float64), rtol=0)


def test_resume_continues_the_same_trajectory(device, tmp_path):
    """200 epochs straight vs 100 + save + load_training + 100: the same
    per-epoch costs and weights (float32 tolerance; same device, same
    arithmetic)."""
    x, y = regression_data(300)
    straight, log = sn.training_network(article_net(device), x), CostRecorder(25)
    sn.sgd(straight, y, sn.quadratic_cost, 200, (0.1, 0.01), monitors=[log])
    first, log1 = sn.training_network(article_net(device), x), CostRecorder(25)
    sn.sgd(first, y, sn.quadratic_cost, 100, (0.1, 0.01), monitors=[log1])
    sn.save(first, tmp_path / "t.ckpt")
    first.close()
    with sn.load_training(tmp_path / "t.ckpt", x, device=device) as resumed:
        assert resumed.epoch == 100
        log2 = CostRecorder(25)
        sn.sgd(resumed, y, sn.quadratic_cost, 100, (0.1, 0.01), monitors=[log2])
        assert resumed.epoch == 200
        assert len(log.costs) == 200
        np.testing.assert_allclose(log1.costs + log2.costs, log.costs, rtol=1e-6)
        np.testing.assert_allclose(sn.to_numpy(resumed.net.params),
                                   sn.to_numpy(straight.net.params), rtol=1e-6, atol=1e-7)
    assert resumed.net.params is None   # close() closed the loaded network too


def test_sgd_checkpoint_keyword_and_resume(device, tmp_path):
    x, y = regression_data(100)
    path = tmp_path / "run.ckpt"
    straight = sn.training_network(article_net(device), x)
    sn.sgd(straight, y, sn.quadratic_cost, 120, 0.1)
    train = sn.training_network(article_net(device), x)
    sn.sgd(train, y, sn.quadratic_cost, 70, 0.1, checkpoint=path, checkpoint_every=30)
    meta, _ = checkpoint.read(path)
    assert meta["epoch"] == 70                      # the final state is saved
    with sn.load_training(path, x, device=device) as resumed:
        sn.sgd(resumed, y, sn.quadratic_cost, 50, 0.1)
        np.testing.assert_allclose(sn.to_numpy(resumed.net.params),
                                   sn.to_numpy(straight.net.params), rtol=1e-6, atol=1e-7)


def test_periodic_saves_hold_only_verified_states(device, tmp_path, monkeypatch):
    """θ_58 becomes NaN (update 57): the guard stops; the file holds the
    last periodic save, epoch 50, finite and equal to 50 plain epochs (on
    the reference runner, the saboteur's path, for bit equality)."""
    monkeypatch.setenv("SCRATCHNET_RUNNER", "reference")
    x, y = regression_data(50)
    path = tmp_path / "g.ckpt"
    train = sn.training_network(article_net(device), x)
    with pytest.raises(sn.DivergenceError):
        sn.sgd(train, y, sn.quadratic_cost, 100, Saboteur(0.1, 57), checkpoint=path,
               checkpoint_every=10, guard_every=1)
    saved = sn.load_training(path, x)
    assert saved.epoch == 50
    ref = sn.training_network(article_net(device), x)
    sn.sgd(ref, y, sn.quadratic_cost, 50, 0.1, guard=False)
    np.testing.assert_array_equal(sn.to_numpy(saved.net.params), sn.to_numpy(ref.net.params))


def test_optimizer_state_round_trips(tmp_path):
    x, _ = regression_data(10)
    train = sn.training_network(article_net("cpu"), x)
    train.epoch = 17
    train.state["velocity"] = torch.arange(train.net.n_weights, dtype=torch.float32)
    sn.save(train, tmp_path / "s.ckpt")
    back = sn.load_training(tmp_path / "s.ckpt", x)
    assert back.epoch == 17 and set(back.state) == {"velocity"}
    np.testing.assert_array_equal(sn.to_numpy(back.state["velocity"]),
                                  sn.to_numpy(train.state["velocity"]))
    bare = sn.load_training(tmp_path / "s.ckpt", x)
    assert bare.epoch == 17
    sn.save(train.net, tmp_path / "n.ckpt")
    assert sn.load_training(tmp_path / "n.ckpt", x).epoch == 0


# ------------------------------------------------------------ hostile files
@pytest.fixture(scope="module")
def good_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ck") / "good.ckpt"
    net = sn.inference_network(3, [sn.fully_connected(4, sn.tanh),
                                   sn.fully_connected(2, sn.linear)], seed=1)
    sn.save(net, path)
    return path, path.read_bytes()


def expect_error(tmp_path, data: bytes, *words):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(data)
    with pytest.raises(sn.CheckpointError) as info:
        sn.load(bad)
    for word in words:
        assert word in str(info.value)
    assert isinstance(info.value, ValueError) and "path" in str(info.value)
    return str(info.value)


def test_every_truncation_is_refused(tmp_path, good_file):
    _, data = good_file
    for length in range(len(data)):
        expect_error(tmp_path, data[:length])


def test_every_single_bit_flip_is_refused(tmp_path, good_file):
    """The sha256 covers metadata and arrays; the safetensors header is
    checked by its parser and by the shape checks: any flipped bit, in any
    byte, is an error (sampled: 400 random bits of the file)."""
    _, data = good_file
    rng = random.Random(0)
    for _ in range(400):
        bit = rng.randrange(8 * len(data))
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        expect_error(tmp_path, bytes(flipped))


def test_foreign_and_newer_files(tmp_path, good_file):
    import safetensors.numpy as stn

    _, data = good_file
    expect_error(tmp_path, b"", "truncated")
    expect_error(tmp_path, os.urandom(300))
    expect_error(tmp_path, json.dumps({"params": [1, 2]}).encode())
    expect_error(tmp_path, pickle.dumps({"params": np.zeros(3)}))
    expect_error(tmp_path, stn.save({"params": np.zeros(26, np.float32)}), "foreign")
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = json.loads(header["__metadata__"]["scratchnet"])
    arrays = stn.load(data)
    for key, value, words in [("version", 2, ["version 2", "newer"]),
                              ("format", "other", ["format"]),
                              ("version", "1", ["version"])]:
        changed = dict(meta, **{key: value})
        expect_error(tmp_path, stn.save(arrays, metadata={"scratchnet": json.dumps(changed)}),
                     *words)


def test_bad_paths_and_objects(tmp_path):
    net = article_net("cpu")
    with pytest.raises(TypeError, match="path"):
        sn.save(net, 3)
    with pytest.raises(ValueError, match="path"):
        sn.save(net, tmp_path)
    with pytest.raises(TypeError, match="net_or_train"):
        sn.save("net", tmp_path / "a")
    with pytest.raises(FileNotFoundError):
        sn.load(tmp_path / "missing.ckpt")
    sn.save(net, tmp_path / "a")
    with pytest.raises(ValueError, match="x"):
        sn.load_training(tmp_path / "a", np.zeros((3, 7), np.float32))
    with pytest.raises(ValueError, match="device"):
        sn.load(tmp_path / "a", device="tpu")
    assert os.listdir(tmp_path) == ["a"]   # no temp files left by normal saves


# ---------------------------------------------------------- kill test
KILL_TRIALS = 100


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_sigkill_during_save_leaves_old_or_new(tmp_path):
    """A forked child saves two 0.5M-parameter networks B and A alternately
    to one path, reporting each finished save through a pipe.  The parent
    waits for j (random, 0-3) finished saves, then sends SIGKILL after a
    random delay up to twice the measured duration of one save, so kills
    land in every phase of a save (writing, fsync, rename, folder fsync).
    Afterwards the path must hold A or B, bit for bit, or nothing if no save
    had finished.  Odd trials start with A already in place."""
    nets = [sn.inference_network(700, [sn.fully_connected(700, sn.tanh)], seed=s)
            for s in (1, 2)]
    expected = [sn.to_numpy(n.params) for n in nets]
    start = time.perf_counter()
    sn.save(nets[0], tmp_path / "timing.ckpt")
    one_save = time.perf_counter() - start
    rng = random.Random(1)
    outcomes = {"A": 0, "B": 0, "absent": 0}
    for trial in range(KILL_TRIALS):
        path = tmp_path / f"t{trial}" / "net.ckpt"
        path.parent.mkdir()
        if trial % 2:
            sn.save(nets[0], path)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:   # child: save B, A, B, ... forever
            try:
                os.close(read_end)
                i = 1
                while True:
                    sn.save(nets[i], path)
                    os.write(write_end, b"s")
                    i ^= 1
            finally:
                os._exit(1)
        os.close(write_end)
        for _ in range(rng.randrange(4)):
            assert os.read(read_end, 1) == b"s"
        time.sleep(rng.uniform(0, 2 * one_save))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(read_end)
        if not path.exists():
            assert trial % 2 == 0, "the old checkpoint vanished"
            outcomes["absent"] += 1
            continue
        params = sn.to_numpy(sn.load(path).params)
        matches = [np.array_equal(params, e) for e in expected]
        assert any(matches), f"trial {trial}: the file is neither A nor B"
        outcomes["AB"[matches.index(True)]] += 1
        for stray in path.parent.iterdir():   # killed saves leave their temp file
            assert stray.name == "net.ckpt" or stray.name.endswith(".tmp")
    print(f"\nkill-during-save: {KILL_TRIALS} trials, outcomes {outcomes}", file=sys.stderr)
    assert outcomes["A"] and outcomes["B"]   # kills landed before and after renames
