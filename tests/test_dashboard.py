"""The dashboard, checked for real: a TensorBoard server started in this
process on 127.0.0.1 (a free port picked by the OS) over a fresh logdir holds
one plain ``sgd(log_dir=...)`` run and one run of ``scripts/sweep.py``; its
HTTP data API must serve the runs, the tags, the values and the hparams.
Only loopback is contacted, every request has a timeout, and the test stops
the server itself."""

from __future__ import annotations

import importlib.util
import json
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from helpers import article_net, regression_data

import scratchnet as sn

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
TIMEOUT = 10   # seconds, per request and for the first load of the logdir


def load_sweep():
    spec = importlib.util.spec_from_file_location("sweep", SCRIPTS / "sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def logdir(tmp_path):
    """Two runs: ``plain`` (sgd with test data, 6 epochs) and the sweep's one
    run; returns the logdir and what the plain run's sgd returned."""
    x, y = regression_data(100)
    x_test, y_test = regression_data(30, seed=1)
    train = sn.training_network(article_net("cpu"), x)
    costs = [sn.sgd(train, y, sn.quadratic_cost, 3, (0.1, 0.9), log_dir=tmp_path / "plain",
                    test=(x_test, y_test)) for _ in range(2)]
    sweep = load_sweep()
    sweep.sweep(["--eta", "0.1", "--lam", "0.9", "--seeds", "0", "--epochs", "4",
                 "--samples", "50", "--log-every", "2", "--log-dir", str(tmp_path / "sweep")])
    return tmp_path, costs


@pytest.fixture
def server(logdir):
    """A real TensorBoard (``tensorboard.program``) on 127.0.0.1:<free port>,
    loading in-process and once, before it serves (no Rust data server
    subprocess, no reload thread left behind); shut down after."""
    from tensorboard import program

    servers = []

    def make_server(app, flags):
        servers.append(program.WerkzeugServer(app, flags))
        return servers[-1]

    tb = program.TensorBoard(server_class=make_server)
    tb.configure(argv=[None, "--logdir", str(logdir[0]), "--host", "127.0.0.1",
                       "--port", "0", "--load_fast", "false", "--reload_interval", "0",
                       "--reload_task", "blocking"])
    url = tb.launch()
    (srv,) = servers
    assert srv.server_address[0] == "127.0.0.1"
    try:
        yield url.rstrip("/"), logdir[1]
    finally:
        srv.shutdown()
        srv.server_close()
        stopped = [t for t in threading.enumerate() if t.name == "TensorBoard"]
        for t in stopped:
            t.join(TIMEOUT)


OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy


def get(url, path, **query):
    if query:
        path += "?" + urllib.parse.urlencode(query)
    with OPENER.open(url + path, timeout=TIMEOUT) as response:
        return json.loads(response.read())


def post(url, path, body):
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with OPENER.open(request, timeout=TIMEOUT) as response:
        return json.loads(response.read())


def wait_for_runs(url, expected):
    deadline = time.monotonic() + TIMEOUT
    while True:
        runs = get(url, "/data/runs")
        if set(expected) <= set(runs) or time.monotonic() > deadline:
            return runs
        time.sleep(0.2)


def test_dashboard_serves_runs_tags_values_and_hparams(server):
    url, costs = server
    sweep_run = "sweep/eta0.1_lam0.9_seed0"
    runs = wait_for_runs(url, ["plain", sweep_run])
    assert sorted(runs) == ["plain", sweep_run]

    tags = get(url, "/data/plugin/scalars/tags")
    expected = {"cost/train", "cost/test"} | {f"weights/layer{i}/{k}" for i in range(3)
                                              for k in ("amax", "norm")}
    assert set(tags["plain"]) == expected
    assert set(tags[sweep_run]) == expected | {"final/train_cost", "final/test_cost",
                                               "final/max_abs_w", "final/diverged"}

    series = get(url, "/data/plugin/scalars/scalars", run="plain", tag="cost/train")
    assert [step for _, step, _ in series] == [1, 2, 3, 4, 5, 6]
    by_step = {step: value for _, step, value in series}
    assert by_step[3] == np.float32(costs[0]) and by_step[6] == np.float32(costs[1])

    layout = get(url, "/data/plugin/custom_scalars/layout")
    titles = [c["title"] for cat in layout["category"] for c in cat["chart"]]
    assert "cost (train, test)" in titles and "max |w| per layer" in titles

    # The hparams plugin takes its request as a JSON POST body.
    experiment = post(url, "/data/plugin/hparams/experiment", {"experimentName": ""})
    hparams = {h["name"] for h in experiment["hparamInfos"]}
    metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
    assert hparams == {"eta", "lam", "seed", "device"}
    assert metrics == {"final/train_cost", "final/test_cost", "final/max_abs_w",
                       "final/diverged"}
    final = get(url, "/data/plugin/scalars/scalars", run=sweep_run, tag="final/diverged")
    assert [value for _, _, value in final] == [0.0]
