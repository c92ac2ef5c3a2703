"""The native epoch runner: the reference epoch in C++, compiled at first use.

    epoch.cpp   the kernels: whole training steps, blocked over samples
    build.py    compile (once, cached per user) and load them
    abi.py      the ctypes mirrors of the kernels' argument structures
    runner.py   NativeFullBatch and NativeMiniBatch, the runners
"""

from .build import NativeUnavailable, load
from .runner import NativeFullBatch, NativeMiniBatch, cost_code, supports_network

__all__ = ["NativeFullBatch", "NativeMiniBatch", "NativeUnavailable", "cost_code", "load",
           "supports_network"]
