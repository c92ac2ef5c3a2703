"""opencl_ext: scratchnet's layers on any OpenCL device, as a plugin.

scratchnet finds this package through its ``scratchnet.backends`` entry point
(``opencl = "opencl_ext.backend:OpenCLBackend"``); the core never imports it
by name.  Arrays are ``pyopencl.array.Array`` objects and the kernels are the
OpenCL C files in ``opencl_ext/kernels``.  Install with
``pip install 'scratchnet[opencl]'``, which brings pyopencl and PoCL (a CPU
OpenCL platform, so every machine has at least one device).

Importing this package does not import pyopencl; importing
:mod:`opencl_ext.backend` does, and raises an ``ImportError`` saying how to
install it when it is missing.
"""

__all__ = ["OpenCLBackend"]


def __getattr__(name):
    # Lazy, so that ``import opencl_ext`` works (and can say what is missing)
    # on a machine without pyopencl.
    if name == "OpenCLBackend":
        from .backend import OpenCLBackend

        return OpenCLBackend
    raise AttributeError(f"module 'opencl_ext' has no attribute {name!r}")
