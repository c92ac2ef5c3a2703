"""The epoch loop's CPU thread count: automatic rule, user setting, scope."""

from __future__ import annotations

import pytest
import torch
from helpers import article_net, regression_data

import scratchnet as sn
from scratchnet.engine import threads


class ThreadSpy(sn.Monitor):
    """A monitor that records torch's thread count while epochs run."""

    chunk = 1

    def __init__(self):
        self.seen = []

    def after_chunk(self, train, first_epoch, costs):
        self.seen.append(torch.get_num_threads())



@pytest.fixture
def torch_threads():
    """Run with torch at 2 threads and the automatic rule; restore both."""
    before, requested = torch.get_num_threads(), threads._requested
    torch.set_num_threads(2)
    threads.set_num_threads(None)
    yield
    torch.set_num_threads(before)
    threads._requested = requested


def test_small_cpu_networks_train_on_one_thread_and_restore(torch_threads):
    x, y = regression_data(100)
    train = sn.training_network(article_net("cpu"), x)
    spy = ThreadSpy()
    sn.sgd(train, y, sn.quadratic_cost, 3, 0.1, monitors=[spy])
    assert spy.seen == [1, 1, 1]
    assert torch.get_num_threads() == 2


def test_user_setting_wins_and_is_reported(torch_threads):
    x, y = regression_data(100)
    train = sn.training_network(article_net("cpu"), x)
    torch.set_num_threads(1)
    sn.set_num_threads(2)
    assert sn.get_num_threads() == 2
    spy = ThreadSpy()
    sn.sgd(train, y, sn.quadratic_cost, 2, 0.1, monitors=[spy])
    assert spy.seen == [2, 2]
    assert torch.get_num_threads() == 1


def test_large_products_keep_torchs_setting(torch_threads):
    """out · in · n ≥ SMALL_PRODUCT: torch's own count, untouched."""
    net = sn.inference_network(8, [sn.fully_connected(1024, sn.sigmoid),
                                   sn.fully_connected(1024, sn.linear)], seed=0)
    n = threads.SMALL_PRODUCT // (1024 * 1024) + 1
    train = sn.training_network(net, torch.rand(n, 8))
    assert threads.largest_product(train) >= threads.SMALL_PRODUCT
    assert threads.threads_for(train) is None
    small = sn.training_network(net, torch.rand(n - 1, 8))
    assert threads.threads_for(small) == 1


def test_non_cpu_devices_are_left_alone(torch_threads):
    x, _ = regression_data(10)
    train = sn.training_network(article_net("meta"), x)
    sn.set_num_threads(1)
    assert threads.threads_for(train) is None


@pytest.mark.parametrize("bad, exc", [(0, ValueError), (-3, ValueError), (1.5, TypeError),
                                      ("2", TypeError), (True, TypeError)])
def test_bad_thread_counts_are_refused(torch_threads, bad, exc):
    sn.set_num_threads(3)
    with pytest.raises(exc, match="threads"):
        sn.set_num_threads(bad)
    assert sn.get_num_threads() == 3


@pytest.mark.parametrize("raw, expected", [("3", 3), ("", None), (" 1 ", 1)])
def test_environment_variable(torch_threads, monkeypatch, raw, expected):
    monkeypatch.setenv(threads.ENV, raw)
    threads._requested = threads._UNSET
    assert sn.get_num_threads() == expected


def test_malformed_environment_variable_fails_before_training(torch_threads, monkeypatch):
    x, y = regression_data(50)
    train = sn.training_network(article_net("cpu"), x)
    before = sn.to_numpy(train.net.params)
    monkeypatch.setenv(threads.ENV, "two")
    threads._requested = threads._UNSET
    with pytest.raises(ValueError, match="SCRATCHNET_NUM_THREADS.*'two'"):
        sn.sgd(train, y, sn.quadratic_cost, 1, 0.1)
    assert train.epoch == 0 and (sn.to_numpy(train.net.params) == before).all()
    assert torch.get_num_threads() == 2
