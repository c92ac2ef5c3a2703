"""scripts/digits.py, short: a real classification task learns, every
device agrees with the CPU, and the TensorBoard log holds what it says."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from helpers import one_thread  # noqa: F401 - fixture

pytest.importorskip("sklearn")
pytestmark = pytest.mark.usefixtures("one_thread")

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "digits.py"
spec = importlib.util.spec_from_file_location("digits_script", SCRIPT)
digits = importlib.util.module_from_spec(spec)
spec.loader.exec_module(digits)

EPOCHS = 4


@pytest.fixture(scope="module")
def cpu_run():
    return digits.run("cpu", epochs=EPOCHS)


def test_short_run_learns_far_above_chance(cpu_run):
    """Ten classes: chance is 10%; four epochs of Adam already reach >85%."""
    assert cpu_run["accuracy"] > 0.85
    counts = cpu_run["confusion"]
    assert counts.sum() == cpu_run["n_test"] == 450
    assert np.trace(counts) == round(cpu_run["accuracy"] * 450)
    np.testing.assert_array_equal(counts.sum(axis=1), np.bincount(digits.load()[3]))


def test_every_device_agrees_with_the_cpu(device, cpu_run):
    run = digits.run(device, epochs=EPOCHS)
    np.testing.assert_allclose(run["params"], cpu_run["params"], rtol=1e-3, atol=1e-4)
    assert np.mean(run["predicted"] == cpu_run["predicted"]) > 0.99
    assert run["cost"] == pytest.approx(cpu_run["cost"], rel=1e-3)


def test_tensorboard_log(tmp_path, cpu_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = digits.run("cpu", epochs=EPOCHS, log_dir=tmp_path)
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    costs = [e.value for e in events.Scalars("cost/train")]
    accuracy = [e.value for e in events.Scalars("accuracy/test")]
    assert [e.step for e in events.Scalars("cost/train")] == list(range(1, EPOCHS + 1))
    np.testing.assert_allclose(costs, run["log"].costs, rtol=1e-6)
    assert costs[-1] == pytest.approx(cpu_run["cost"], rel=1e-6)   # logging changes nothing
    assert accuracy[-1] == pytest.approx(cpu_run["accuracy"])
    assert costs[-1] < costs[0]


def test_confusion_matrix_counts_the_predictions(cpu_run):
    """counts[true, predicted], recounted here pair by pair."""
    _, _, _, labels = digits.load()
    expected = np.zeros((10, 10), dtype=np.int64)
    for true, guess in zip(labels, cpu_run["predicted"]):
        expected[true, guess] += 1
    np.testing.assert_array_equal(cpu_run["confusion"], expected)


def test_main_runs_every_seed_into_its_own_tensorboard_run(tmp_path, capsys):
    """``--seeds 0 2``: two runs, logged to seed0/ and seed2/, each row of
    the summary the accuracy of the run with that seed."""
    assert digits.main(["--seeds", "0", "2", "--epochs", "2", "--log-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed0", "seed2", "summary.md"]
    for seed in (0, 2):
        accuracy = digits.run("cpu", epochs=2, seed=seed)["accuracy"]
        row = next(line for line in out.splitlines() if line.startswith(f"| {seed} "))
        assert f"{100 * accuracy:.2f}%" in row
        assert list((tmp_path / f"seed{seed}").glob("events.out.tfevents.*"))
    assert "| median " in out
