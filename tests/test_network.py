"""Networks: construction, initialisation, inference, device genericity,
memory behaviour, the backend registry."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
from helpers import article_net, forward64, params64, regression_data

import scratchnet as sn
from scratchnet import backends
from scratchnet.engine.reference import FullBatch
from scratchnet.nn.optim import SGD


def test_init_rule_and_seed(device):
    """Series' final rule: w ~ N(0,1)/fan_in, b ~ N(0,1), from the seed, on
    the host: the same numbers on every device."""
    net = sn.inference_network(200, [sn.fully_connected(300, sn.tanh)], device=device, seed=7)
    w = sn.to_numpy(net.layers[0].weights).astype(np.float64)
    b = sn.to_numpy(net.layers[0].bias).astype(np.float64)
    assert w.shape == (300, 200) and b.shape == (300,)
    assert np.std(w) == pytest.approx(1 / 200, rel=0.02)
    assert abs(np.mean(w)) < 3 / 200 / np.sqrt(w.size) * 3
    assert np.std(b) == pytest.approx(1.0, rel=0.15)
    gen = torch.Generator().manual_seed(7)
    expected = torch.randn((300, 200), generator=gen, dtype=torch.float64) / 200
    np.testing.assert_array_equal(w.astype(np.float32), expected.numpy().astype(np.float32))
    again = sn.inference_network(200, [sn.fully_connected(300, sn.tanh)], device="cpu", seed=7)
    np.testing.assert_array_equal(sn.to_numpy(again.layers[0].weights), sn.to_numpy(
        net.layers[0].weights))
    other = sn.inference_network(200, [sn.fully_connected(300, sn.tanh)], device=device, seed=8)
    assert not np.array_equal(sn.to_numpy(other.layers[0].weights), w.astype(np.float32))


@pytest.mark.parametrize("n", [1, 2, 17, 1000])
def test_inference_any_batch_any_input_type(device, n):
    net = article_net(device, dtype=torch.float64)
    x, _ = regression_data(n, dtype=np.float64)
    expected = forward64(net, params64(net), x).detach().numpy()
    for data in (x, torch.from_numpy(x), torch.from_numpy(x.T).t(), x.astype(np.float32),
                 x.tolist()):
        out = net(data)
        assert tuple(out.shape) == (n, 1)
        np.testing.assert_allclose(sn.to_numpy(out), expected,
                                   rtol=1e-6 if getattr(data, "dtype", None) in (
                                       np.float32,) else 1e-12)


def test_weights_are_live_views(device):
    """layer.weights has the shape of torch.nn.Linear and is the live array
    training updates; setting it changes inference."""
    net = article_net(device)
    x, y = regression_data(100)
    layer = net.layers[0]
    assert tuple(layer.weights.shape) == (32, 4) and tuple(layer.bias.shape) == (32,)
    w_before = sn.to_numpy(layer.weights)
    train = sn.training_network(net, x)
    sn.sgd(train, y, sn.quadratic_cost, 1, 0.5)
    assert not np.array_equal(w_before, sn.to_numpy(layer.weights))
    if isinstance(layer.weights, torch.Tensor):
        out_before = sn.to_numpy(net(x))
        layer.weights.copy_(torch.zeros(32, 4))
        assert not np.allclose(out_before, sn.to_numpy(net(x)))
        assert sn.amax(layer.weights) == 0.0


def test_training_input_is_not_overwritten(device):
    """Part 12's bug: the first layer must not write Wᵀδ into the input."""
    x, y = regression_data(64)
    net = article_net(device)
    train = sn.training_network(net, x)
    sn.sgd(train, y, sn.quadratic_cost, 5, 0.1)
    np.testing.assert_array_equal(sn.to_numpy(train.x), x.T)


def test_amax_and_to_numpy(device):
    net = article_net(device)
    for layer in net.layers:
        w = sn.to_numpy(layer.weights)
        assert isinstance(w, np.ndarray)
        assert sn.amax(layer.weights) == pytest.approx(float(np.max(np.abs(w))))


def test_no_gradients_anywhere(device):
    x, y = regression_data(30)
    net = article_net(device)
    train = sn.training_network(net, torch.from_numpy(x).requires_grad_())
    sn.sgd(train, torch.from_numpy(y).requires_grad_(), sn.quadratic_cost, 2, 0.1)
    arrays = [net.params, train.grads, train.x] + [t.z for t in train.layers]
    for a in arrays:
        assert not getattr(a, "requires_grad", False)


def test_meta_device_runs_everything_without_the_cpu():
    """Device-generic code: the whole epoch runs on torch's meta device, where
    any hidden CPU assumption (a stray host tensor, a .item() in the loop,
    an allocation on the default device) fails."""
    x, y = regression_data(40)
    net = article_net("meta")
    train = sn.training_network(net, x)
    train.load_y(y)
    FullBatch(train).run(sn.quadratic_cost, 3, SGD(0.1, 0.01))
    tensors = [net.params, train.grads, train.x, train.y, train.cost_sum]
    tensors += [t for tl in train.layers for t in (tl.z, tl.a, tl.dw, tl.db)]
    assert all(t.device.type == "meta" for t in tensors)
    assert train.epoch == 3
    assert tuple(net(x).shape) == (40, 1) and net(x).device.type == "meta"


@pytest.mark.parametrize("n", [1000, 200_000])
def test_epoch_loop_allocates_nothing_after_the_first(n):
    """Every buffer is allocated by training_network; 100 epochs later the
    same storages are in place and the CPU allocator saw no new allocation
    (also at n = 200,000, where torch.sum over the samples would allocate
    scratch on every call)."""
    x, y = regression_data(n)
    net = article_net("cpu")
    train = sn.training_network(net, x)
    sn.sgd(train, y, sn.quadratic_cost, 1, (0.1, 0.01))
    runner = train.runner
    ptrs = [t.data_ptr() for tl in train.layers for t in (tl.z, tl.a)]
    ptrs += [net.params.data_ptr(), train.grads.data_ptr()]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                profile_memory=True) as prof:
        runner.run(sn.quadratic_cost, 100 if n < 10**5 else 3, SGD(0.1, 0.01))
    allocations = [e for e in prof.events() if e.cpu_memory_usage > 0]
    assert allocations == [], [e.name for e in allocations][:10]
    assert ptrs == [t.data_ptr() for tl in train.layers for t in (tl.z, tl.a)] + [
        net.params.data_ptr(), train.grads.data_ptr()]


def test_close_releases_and_context_managers(device):
    x, _ = regression_data(10)
    with article_net(device) as net:
        with sn.training_network(net, x) as train:
            assert net.trainings == 1
        assert train.grads is None and net.trainings == 0
    assert net.params is None
    net.close()  # twice is harmless


def test_registry_finds_torch_through_entry_points():
    assert {"cpu", "cuda", "meta"} <= set(backends.prefixes())
    assert "cpu" in sn.available_devices()
    assert backends.backend_class("cpu").__name__ == "TorchBackend"


def test_core_never_imports_the_plugin():
    import subprocess
    import sys
    code = ("import sys, scratchnet as sn; sn.inference_network(2, [sn.fully_connected(1, "
            "sn.tanh)], seed=0); print('opencl_ext' in sys.modules, 'pyopencl' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["False", "False"]


def test_many_networks_do_not_leak(device):
    """Create and close networks in a loop: live Python objects stay flat."""
    x, y = regression_data(50)

    def cycle():
        with article_net(device) as net, sn.training_network(net, x) as train:
            sn.sgd(train, y, sn.quadratic_cost, 1, 0.1)

    for _ in range(5):
        cycle()
    gc.collect()
    before = len(gc.get_objects())
    for _ in range(100):
        cycle()
    gc.collect()
    assert len(gc.get_objects()) - before < 200


def test_transfer_copies_host_values_into_device_arrays(device):
    """sn.transfer_, the series' transfer!: host values (a list, float64
    numpy, a torch tensor) land in a layer's weights and bias on any device,
    in the network's dtype; a wrong shape is refused and nothing changes."""
    net = sn.inference_network(2, [sn.fully_connected(4, sn.tanh),
                                   sn.fully_connected(1, sn.sigmoid)], device=device, seed=0)
    w1 = [[0.3, 0.6], [0.1, 2.0], [0.9, 3.7], [0.0, 1.0]]
    sn.transfer_(net.layers[0].weights, w1)
    sn.transfer_(net.layers[0].bias, np.array([0.7, 0.2, 1.1, 2.0]))
    sn.transfer_(net.layers[1].weights, torch.tensor([[0.75, 0.15, 0.22, 0.33]]))
    sn.transfer_(net.layers[1].bias, [0.3])
    np.testing.assert_array_equal(sn.to_numpy(net.layers[0].weights), np.float32(w1))
    assert sn.to_numpy(net.layers[1].bias).dtype == np.float32
    before = sn.to_numpy(net.params)
    with pytest.raises(ValueError, match=r"src: expected the shape of dst \(4, 2\), got \(2, 4\)"):
        sn.transfer_(net.layers[0].weights, np.zeros((2, 4)))
    with pytest.raises(TypeError, match="src: expected real numbers"):
        sn.transfer_(net.layers[1].bias, ["a"])
    np.testing.assert_array_equal(sn.to_numpy(net.params), before)
    # the series' network with these weights computes 0.44 (part 11)
    x = np.array([[0.3, 0.9], [0.3, 0.9]], np.float32)
    series = sn.inference_network(2, [sn.fully_connected(4, sn.tanh),
                                      sn.fully_connected(1, sn.sigmoid)], device=device,
                                  convention="series")
    for mine, theirs in zip(series.layers, net.layers):
        sn.transfer_(mine.weights, theirs.weights)
        sn.transfer_(mine.bias, theirs.bias)
    np.testing.assert_allclose(sn.to_numpy(series(x)), [[0.4352], [0.4352]], atol=1e-4)
