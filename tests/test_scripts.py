"""The scripts in ``scripts/`` behave alike: ``--help`` answers without
importing torch, every flag says what it does and its default, one spelling
per concept, ``--seeds`` is a list everywhere, each run gets a fresh run
folder and never stacks on an earlier one; and the shared pieces in
``scripts/common.py`` do what they say."""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import one_thread  # noqa: F401 - fixture

import scratchnet as sn

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
OWNED = ["weight_decay", "momentum", "sweep", "digits", "train_distributed",
         "bench_distributed", "series_timing", "soak", "screenshots"]
HEAVY = {"torch", "numpy", "scratchnet", "tensorboard", "sklearn", "opencl_ext"}
# Subprocesses import this checkout's scratchnet, not an installed one.
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
STAMP = re.compile(r"^\d{8}-\d{6}(-\d+)?$")


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sys.path.insert(0, str(SCRIPTS))   # as every script does: one shared ``common`` module
import common  # noqa: E402


@pytest.mark.parametrize("name", OWNED)
def test_help_imports_no_heavy_module(name):
    """``-X importtime`` lists every module the interpreter imported: none of
    torch, numpy, scratchnet, tensorboard or scikit-learn may be among them."""
    proc = subprocess.run([sys.executable, "-X", "importtime", str(SCRIPTS / f"{name}.py"),
                           "--help"], capture_output=True, text=True, cwd=ROOT, env=ENV,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage:")
    imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:") and "|" in line}
    assert "argparse" in imported   # the listing is real
    heavy = sorted(m for m in imported if m.split(".")[0] in HEAVY)
    assert heavy == []


@pytest.mark.parametrize("name", OWNED)
def test_every_flag_has_help_and_a_default(name):
    """Every flag has help text, and its help shows the default, or says in
    words what happens without it (a flag that is off unless given excepted)."""
    parser = load(name).build_parser()
    formatter = parser._get_formatter()
    flags = [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]
    assert flags
    for action in flags:
        assert action.help and action.help.strip(), f"{action.option_strings}: no help"
        if isinstance(action, argparse._StoreTrueAction):
            continue
        text = formatter._get_help_string(action)
        assert "default" in text, f"{action.option_strings}: no default in {text!r}"
        assert "(default: None)" not in text
    assert parser.formatter_class is common.Formatter


def option_names(name):
    return {s for a in load(name).build_parser()._actions for s in a.option_strings}


def test_one_spelling_per_concept():
    """--log-dir and --device everywhere they apply; the old spellings nowhere."""
    for name in OWNED:
        options = option_names(name)
        assert not options & {"--logdir", "--log_dir", "--devices", "--batch_size"}, name
        assert "--log-dir" in options, name
        if name not in ("bench_distributed", "screenshots"):   # one kind of process only
            assert "--device" in options, name


@pytest.mark.parametrize("name", [n for n in OWNED if "--seeds" in option_names(n)])
def test_seeds_is_the_same_list_everywhere(name, capsys):
    parser = load(name).build_parser()
    assert parser.parse_args(["--seeds", "3", "5-7"]).seeds == [3, 5, 6, 7]
    assert parser.parse_args(["--seeds", "4"]).seeds == [4]      # seed 4, not four seeds
    default = parser.parse_args([]).seeds
    assert isinstance(default, list) and default and all(isinstance(s, int) for s in default)
    for bad, message in [("7-5", "ranges A-B with A <= B, got '7-5'"),
                         ("x", "integers >= 0 or ranges A-B, got 'x'"),
                         ("-1", "integers >= 0 or ranges A-B, got '-1'")]:
        with pytest.raises(SystemExit):
            parser.parse_args(["--seeds", bad])
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["--seeds", "1-3", "2"])
    assert "each seed once, got 2 twice" in capsys.readouterr().err


def test_number_flags_name_what_they_expect(capsys):
    parser = load("momentum").build_parser()
    for flag, value in [("--epochs", "0"), ("--epochs", "2.5"), ("--threads", "-1")]:
        with pytest.raises(SystemExit):
            parser.parse_args([flag, value])
        assert f"argument {flag}: expected an integer >= 1, got '{value}'" in \
            capsys.readouterr().err
    with pytest.raises(SystemExit):
        load("sweep").build_parser().parse_args(["--eta", "nan"])
    assert "argument --eta: expected a number > 0, got 'nan'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- run folders


def test_run_folders_are_fresh_even_within_one_second(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    now = datetime.datetime(2024, 5, 6, 7, 8, 9)
    folders = [common.run_folder("demo", now=now) for _ in range(3)]
    assert [f.as_posix() for f in folders] == ["runs/demo/20240506-070809",
                                               "runs/demo/20240506-070809-2",
                                               "runs/demo/20240506-070809-3"]
    assert all(f.is_dir() and not any(f.iterdir()) for f in folders)


def test_a_named_folder_is_used_as_given(tmp_path):
    named = tmp_path / "a" / "b"
    assert common.run_folder("demo", named) == named and named.is_dir()


def test_a_folder_holding_a_run_is_refused_and_left_alone(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    common.check_log_dir(parser, tmp_path / "absent")       # a new folder: accepted
    common.check_log_dir(parser, tmp_path)                  # an empty one too
    (tmp_path / "lam0").mkdir()
    event = tmp_path / "lam0" / "events.out.tfevents.1.host"
    event.write_bytes(b"x")
    with pytest.raises(SystemExit):
        common.check_log_dir(parser, tmp_path)
    err = capsys.readouterr().err
    assert f"--log-dir: {tmp_path} already holds a TensorBoard run (lam0/{event.name})" in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == [event.name, "lam0"]
    with pytest.raises(SystemExit):
        common.check_log_dir(parser, event)
    assert "expected a folder, got the file" in capsys.readouterr().err


def test_running_a_script_twice_never_stacks(tmp_path, monkeypatch, capsys):
    """Without --log-dir, two runs get two folders under runs/<script>/."""
    monkeypatch.chdir(tmp_path)
    momentum = load("momentum")
    for _ in range(2):
        assert momentum.main(["--epochs", "4", "--every", "2", "--samples", "20"]) == 0
    folders = sorted((tmp_path / "runs" / "momentum").iterdir())
    assert len(folders) == 2 and all(STAMP.match(f.name) for f in folders)
    assert all((f / "summary.md").is_file() for f in folders)
    out = capsys.readouterr().out
    assert out.count("Run folder: runs/momentum/") == 2


# ----------------------------------------------------------------------------- shared pieces


def test_series_data_is_the_series_function():
    x, y = common.series_data(50, 3)
    assert x.dtype == y.dtype == np.float32 and x.shape == (50, 4) and y.shape == (50, 1)
    x64 = x.astype(np.float64)
    expected = np.sin(x64[:, 0]) + np.cos(x64[:, 1]) + np.tanh(x64[:, 2]) + x64[:, 3] ** 2
    np.testing.assert_allclose(y[:, 0], expected, rtol=1e-6)
    assert x.min() >= 0 and x.max() < 1
    rng = np.random.default_rng(3)   # a generator: successive draws differ
    first, second = common.series_data(50, rng), common.series_data(50, rng)
    np.testing.assert_array_equal(first[0], x)
    assert not np.array_equal(second[0], x)


def test_table_aligns_numbers_right_and_escapes_pipes():
    text = common.table(["name", "ms", "note"], [["a|b", "1.5", "x"], ["c", "12%", "-"]])
    assert text.splitlines() == ["| name |  ms | note |",
                                 "|------|----:|------|",
                                 "| a\\|b | 1.5 | x    |",
                                 "| c    | 12% | -    |"]
    with pytest.raises(ValueError, match="expected 2 cells"):
        common.table(["a", "b"], [["1"]])


def test_stats():
    s = common.stats([10.0, 1.0, 3.0, 2.0])
    assert (s.n, s.median, s.low, s.high) == (4, 2.5, 1.0, 10.0)
    assert (s.q1, s.q3) == (1.75, 4.75)
    assert s.spread(1e3, ".0f") == "1000 .. 10000"
    assert common.stats([7.0]).median == 7.0
    with pytest.raises(ValueError, match="at least one value"):
        common.stats([])


def test_interleave_alternates_configurations():
    calls = []
    out = common.interleave(["a", "b"], 3, lambda c: calls.append(c) or len(calls))
    assert calls == ["a", "b"] * 3
    assert out == {"a": [1, 3, 5], "b": [2, 4, 6]}


def test_bar_monitor_follows_epochs_across_calls():
    """One bar over three sgd calls ends at their total, with the last cost."""
    from tqdm import tqdm

    x, y = common.series_data(40, 0)
    with open("/dev/null", "w") as sink, tqdm(total=30, file=sink) as bar, \
            sn.inference_network(4, common.article_layers(), seed=0) as net, \
            sn.training_network(net, x) as train:
        monitor = common.bar_monitor(bar, chunk=4)
        seen = []
        for epochs in (5, 10, 15):
            cost = sn.sgd(train, y, sn.quadratic_cost, epochs, 0.1, monitors=[monitor])
            seen.append(bar.n)
        assert seen == [5, 15, 30]
        assert bar.postfix == f"cost={cost:.4g}"


# ----------------------------------------------------------------------------- the scripts


def test_weight_decay_logs_each_replay_once_per_epoch(tmp_path, capsys):
    """The replay's TensorBoard runs hold every epoch exactly once, and the
    summary's costs are the logged ones at the end of each call."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    wd = load("weight_decay")
    assert wd.main(["--replay-only", "--samples", "40", "--threads", "1",
                    "--log-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for lam in ("0", "0.9"):
        events = EventAccumulator(str(tmp_path / f"lam{lam}"), size_guidance={"scalars": 0})
        events.Reload()
        costs = {e.step: e.value for e in events.Scalars("cost/train")}
        assert sorted(costs) == list(range(1, 2171))
        assert len(events.Scalars("cost/train")) == 2170
        rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()
                if line.startswith("|")]
        cells = next(row for row in rows if row[0] == lam)
        for cell, step in zip(cells[1:6], (5, 20, 170, 1170, 2170)):
            if math.isfinite(costs[step]):
                assert float(cell) == pytest.approx(costs[step], rel=1e-3)
    with pytest.raises(SystemExit):   # a second replay into the same folder
        wd.main(["--replay-only", "--samples", "40", "--log-dir", str(tmp_path)])
    assert "already holds a TensorBoard run" in capsys.readouterr().err


def test_series_timing_trains_the_series_run(tmp_path, capsys):
    """Its final cost is that of 1 + --epochs epochs of sgd at (0.1, 0.01)."""
    st = load("series_timing")
    assert st.main(["--device", "cpu,cpu:0", "--epochs", "3", "--rounds", "2", "--samples",
                    "30", "--log-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    x, y = common.series_data(30, 0)
    with sn.inference_network(4, common.article_layers(), seed=0) as net, \
            sn.training_network(net, x) as train:
        sn.sgd(train, y, sn.quadratic_cost, 1, (0.1, 0.01))
        cost = sn.sgd(train, y, sn.quadratic_cost, 3, (0.1, 0.01))
    rows = [line for line in out.splitlines() if line.startswith("| cpu")]
    assert [r.split("|")[1].strip() for r in rows] == ["cpu", "cpu:0"]   # commas split
    assert all(r.rstrip(" |").endswith(f"{cost:.5f}") for r in rows)
    assert (tmp_path / "summary.md").read_text().count("| cpu") == 2


def test_train_distributed_mini_batches_in_one_process(tmp_path, monkeypatch, capsys):
    """--batch-size B in one process is sn.train with that batch size."""
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    td = load("train_distributed")
    assert td.main(["--epochs", "3", "--samples", "64", "--batch-size", "16", "--threads", "1",
                    "--log-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    x, y = common.series_data(64, 0)
    with sn.inference_network(4, common.article_layers(), seed=0) as net:
        cost = sn.train(net, x, y, sn.quadratic_cost, 3, (0.1, 0.0), batch_size=16, seed=0)
    assert f"final cost {cost:.6g}" in out
    assert "batches of 16 per rank" in out
    assert list(tmp_path.glob("events.out.tfevents.*"))
    with pytest.raises(SystemExit, match="--batch-size: expected at most the smallest"):
        td.main(["--samples", "8", "--batch-size", "9", "--log-dir", str(tmp_path / "n")])


@pytest.mark.slow
def test_bench_distributed_reports_three_configurations(tmp_path):
    """In a subprocess: its configurations spawn processes that import it."""
    proc = subprocess.run([sys.executable, str(SCRIPTS / "bench_distributed.py"), "--samples",
                           "200", "--epochs", "2", "--warmup", "0", "--rounds", "1",
                           "--log-dir", str(tmp_path)], capture_output=True, text=True,
                          cwd=ROOT, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and
            "process" in line]
    assert [r.split("|")[1].strip() for r in rows] == [
        "1 process(es) x 1 thread(s)", "1 process(es) x 2 thread(s)",
        "2 process(es) x 1 thread(s)"]
    assert rows[0].split("|")[4].strip() == "1.00x"
    assert rows[2].split("|")[5].strip().endswith("%")
    assert (tmp_path / "summary.md").read_text().count("process(es)") == 3


#: The other scripts (the benchmark, the docs runner, the OpenCL layout
#: timer): the same rules for --help and the spellings.
OTHERS = ["benchmark", "run_docs", "opencl_layouts"]


@pytest.mark.parametrize("name", OTHERS)
def test_other_scripts_help_fast_and_spelled_alike(name):
    proc = subprocess.run([sys.executable, "-X", "importtime", str(SCRIPTS / f"{name}.py"),
                           "--help"], capture_output=True, text=True, cwd=ROOT, env=ENV,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:") and "|" in line}
    assert "argparse" in imported
    assert sorted(m for m in imported if m.split(".")[0] in HEAVY) == []
    for old in ("--logdir", "--log_dir", "--devices", "--batch_size"):
        assert old not in proc.stdout, (name, old)
    assert set(OWNED) | set(OTHERS) | {"common"} == {p.stem for p in SCRIPTS.glob("*.py")}
