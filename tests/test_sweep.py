"""``scripts/sweep.py`` on a tiny grid: one run directory per configuration,
each with its hparams and final metrics, a diverging run marked and the
sweep carried on."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

import scratchnet as sn

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def load_sweep():
    spec = importlib.util.spec_from_file_location("sweep", SCRIPTS / "sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_run(path):
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    scalars = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    hparams = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
               for k, v in start.hparams.items()}
    return scalars, hparams


def test_tiny_sweep(tmp_path):
    sweep = load_sweep()
    epochs, samples = 30, 200
    results = sweep.sweep(["--eta", "0.1", "1e4", "--lam", "0", "0.9", "--seeds", "0",
                           "--epochs", str(epochs), "--samples", str(samples),
                           "--log-every", "5", "--log-dir", str(tmp_path)])
    names = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert names == ["eta0.1_lam0.9_seed0", "eta0.1_lam0_seed0",
                     "eta10000_lam0.9_seed0", "eta10000_lam0_seed0"]
    assert len(results) == 4
    for r in results:
        scalars, hparams = read_run(tmp_path / sweep.run_name(r["eta"], r["lam"], r["seed"]))
        assert hparams == {"eta": r["eta"], "lam": r["lam"], "seed": 0.0, "device": "cpu"}
        final = {k: v[-1][1] for k, v in scalars.items() if k.startswith("final/")}
        assert sorted(final) == ["final/diverged", "final/max_abs_w", "final/test_cost",
                                 "final/train_cost"]
        if r["eta"] == 0.1:
            assert final["final/diverged"] == 0.0
            assert scalars["cost/train"][-1][0] == epochs
            assert final["final/train_cost"] == scalars["cost/train"][-1][1]
            # the logged test cost is accumulated on the device, the metric in float64
            assert final["final/test_cost"] == pytest.approx(scalars["cost/test"][-1][1],
                                                             rel=1e-5)
            assert final["final/max_abs_w"] == max(scalars[f"weights/layer{i}/amax"][-1][1]
                                                   for i in range(3))
        else:   # η = 10⁴ blows up: stopped at its first non-finite cost, logged, marked
            assert final["final/diverged"] == 1.0
            assert not math.isfinite(scalars["cost/train"][-1][1])
            assert scalars["cost/train"][-1][0] < epochs


def test_sweep_run_reproduces_a_plain_sgd_run(tmp_path):
    """A sweep run's final costs equal those of the same training written
    with scratchnet directly (same seed for data and weights)."""
    sweep = load_sweep()
    (r,) = sweep.sweep(["--eta", "0.1", "--lam", "0.9", "--seeds", "0", "--epochs", "12",
                        "--samples", "100", "--log-every", "4", "--log-dir", str(tmp_path)])
    rng = np.random.default_rng(0)
    x, y = sweep.common.series_data(100, rng)
    x_test, y_test = sweep.common.series_data(100, rng)
    net = sn.inference_network(4, [sn.fully_connected(32, sn.sigmoid),
                                   sn.fully_connected(16, sn.tanh),
                                   sn.fully_connected(1, sn.linear)], seed=0)
    cost = sn.sgd(sn.training_network(net, x), y, sn.quadratic_cost, 12, (0.1, 0.9))
    assert r["final/train_cost"] == pytest.approx(cost, rel=1e-6)
    assert r["final/test_cost"] == pytest.approx(sn.quadratic_cost(y_test, net(x_test)),
                                                 rel=1e-6)
    assert r["final/max_abs_w"] == max(sn.amax(la.weights) for la in net.layers)
    assert r["final/diverged"] == 0.0


def test_sweep_refuses_bad_options(tmp_path, capsys):
    sweep = load_sweep()
    with pytest.raises(SystemExit):
        sweep.sweep(["--eta", "0", "--log-dir", str(tmp_path)])
    assert "argument --eta: expected a number > 0, got '0'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_sweep_seeds_are_a_list_and_the_summary_is_saved(tmp_path, capsys):
    """``--seeds 3 5`` runs seeds 3 and 5 (not five seeds); the printed
    table is saved in the run folder under the command line."""
    sweep = load_sweep()
    results = sweep.sweep(["--eta", "0.1", "--lam", "0", "--seeds", "3", "5", "--epochs", "2",
                           "--samples", "20", "--log-every", "1", "--log-dir", str(tmp_path)])
    assert [r["seed"] for r in results] == [3, 5]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "eta0.1_lam0_seed3", "eta0.1_lam0_seed5", "summary.md"]
    out = capsys.readouterr().out
    summary = (tmp_path / "summary.md").read_text()
    assert "$ python scripts/sweep.py --eta 0.1 --lam 0 --seeds 3 5" in summary
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert len(table) == 4 and all(line in summary for line in table)


def test_a_second_sweep_into_the_same_folder_is_refused(tmp_path, capsys):
    """Two runs into one folder would stack on the same steps: the second
    is refused before it writes anything."""
    sweep = load_sweep()
    args = ["--eta", "0.1", "--lam", "0", "--seeds", "0", "--epochs", "2", "--samples", "20",
            "--log-dir", str(tmp_path)]
    sweep.sweep(args)
    before = sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    capsys.readouterr()
    with pytest.raises(SystemExit):
        sweep.sweep(args)
    err = capsys.readouterr().err
    assert f"argument --log-dir: {tmp_path} already holds a TensorBoard run" in err
    assert sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*")) == before
