"""scratchnet: deep learning from scratch to GPU, in Python.

A port of Dragan Djuric's *Deep Learning from Scratch to GPU* (2019): fully
connected networks whose forward and backward passes are written by hand with
matrix products, on torch tensors (CPU, CUDA) or any OpenCL device (plugin
``opencl_ext``).  Quick tour::

    import scratchnet as sn
    net = sn.inference_network(4, [sn.fully_connected(32, sn.sigmoid),
                                   sn.fully_connected(16, sn.tanh),
                                   sn.fully_connected(1, sn.linear)], seed=0)
    training = sn.training_network(net, x)         # rows of x are samples
    sn.sgd(training, y, sn.quadratic_cost, 1000, (0.1, 0.01))
"""

from .arrays import amax, to_numpy, transfer_
from .backends import available_devices
from .engine.threads import get_num_threads, set_num_threads
from .fit.minibatch import train
from .fit.sgd import sgd
from .monitors.base import Monitor, Rewind
from .monitors.guard import DivergenceError, DivergenceWarning
from .nn import distributed
from .nn.activations import Activation, elu, linear, relu, sigmoid, softmax, tanh
from .nn.checkpoint import CheckpointError, load, load_training, save
from .nn.costs import Cost, cross_entropy, quadratic_cost
from .nn.distributed import distributed_training_network
from .nn.layers import fully_connected
from .nn.network import Network, TrainingNetwork, inference_network, training_network
from .nn.optim import SGD, Adam

__all__ = [
    "Activation", "Monitor", "Network", "Rewind", "SGD", "TrainingNetwork", "amax",
    "available_devices", "distributed", "distributed_training_network", "fully_connected",
    "get_num_threads",
    "inference_network", "linear", "quadratic_cost", "relu", "set_num_threads", "sgd",
    "sigmoid", "tanh", "to_numpy", "training_network", "transfer_",
    # reliability: guard, checkpoints
    "CheckpointError", "DivergenceError", "DivergenceWarning", "load", "load_training", "save",
    # beyond the series
    "Adam", "Cost", "cross_entropy", "elu", "softmax", "train",
]
#: The package version, written here only: pyproject.toml reads it (setuptools dynamic attr).
__version__ = "0.1.0"
