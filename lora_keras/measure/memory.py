"""Memory probes: one way to read peak memory per backend and device, each naming its source.

`memory_probe()` picks the probe for the running Keras backend and device. Every probe has:
- `source`: what was measured, written next to every figure (a peak means nothing without it);
- `resettable`: whether `reset()` really starts a new peak;
- `reset()`, `peak_bytes()`, `current_bytes()`.

Accelerators report their allocator's peak, which can be reset at the start of training. A CPU
has no allocator statistics (TensorFlow's `get_memory_info` answers 0 there, which we never
report); the only honest number is the process's peak resident memory, which the operating system
cannot reset. That is why a comparison runs each training mode in its own fresh process: the
peak of a process that ran only one mode is that mode's peak (plus the runtime it started).
The backend libraries are imported inside each probe, so only the running backend is needed.
"""

import resource
import sys

import keras
import psutil


class TensorFlowGpuProbe:
    """The TensorFlow allocator's peak on one GPU, reset at the start of training."""

    resettable = True

    def __init__(self, device="GPU:0"):
        import tensorflow as tf

        self.device = device
        self._experimental = tf.config.experimental
        self.source = (
            f"TensorFlow allocator peak, {device} (tf.config.experimental.get_memory_info)"
        )

    def reset(self):
        self._experimental.reset_memory_stats(self.device)

    def peak_bytes(self):
        return int(self._experimental.get_memory_info(self.device)["peak"])

    def current_bytes(self):
        return int(self._experimental.get_memory_info(self.device)["current"])


class JaxDeviceProbe:
    """JAX's `device.memory_stats()` on the first device; its peak cannot be reset."""

    # JAX has no call that resets `peak_bytes_in_use`: the peak is the process's, which is one
    # training run per process anyway.
    resettable = False

    def __init__(self, device):
        self.device = device
        self.source = (
            "JAX device.memory_stats() peak_bytes_in_use since process start (no reset in JAX), "
            f"{device.platform}:{device.id}"
        )

    def reset(self):
        pass

    def peak_bytes(self):
        return int(self.device.memory_stats()["peak_bytes_in_use"])

    def current_bytes(self):
        return int(self.device.memory_stats()["bytes_in_use"])


class TorchCudaProbe:
    """torch's CUDA caching allocator: bytes held by tensors, peak reset at training start."""

    resettable = True

    def __init__(self):
        import torch

        self._cuda = torch.cuda
        self.source = f"torch.cuda.max_memory_allocated, cuda:{torch.cuda.current_device()}"

    def reset(self):
        self._cuda.reset_peak_memory_stats()

    def peak_bytes(self):
        return int(self._cuda.max_memory_allocated())

    def current_bytes(self):
        return int(self._cuda.memory_allocated())


class ProcessMemoryProbe:
    """The process's resident memory: all a CPU offers, and it includes the runtime itself."""

    resettable = False

    source = "process peak resident memory since process start (getrusage ru_maxrss), CPU"

    def reset(self):
        # The kernel keeps ru_maxrss for the life of the process and offers no reset: see the
        # module docstring for why each mode runs in a fresh process.
        pass

    def peak_bytes(self):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # Linux reports KiB, macOS bytes.
        peak = int(peak) if sys.platform == "darwin" else int(peak) * 1024
        # Linux updates ru_maxrss lazily: it can trail the resident memory of this very moment
        # by a few hundred KiB, and a peak below the current value would be a false figure.
        return max(peak, self.current_bytes())

    def current_bytes(self):
        return int(psutil.Process().memory_info().rss)


def memory_probe(backend=None):
    """Return the memory probe for `backend` (default: the running Keras backend) and device.

    An accelerator's allocator is used when one is visible; otherwise, and for backends without
    allocator statistics, the process's peak resident memory.

    Args:
        backend: `"tensorflow"`, `"jax"`, `"torch"` or `"numpy"`; `None` for
            `keras.backend.backend()`.

    Example:

    ```python
    probe = memory_probe()
    probe.reset()
    model.fit(x, y)
    print(probe.peak_bytes(), "bytes:", probe.source)
    ```
    """
    backend = backend or keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            return TensorFlowGpuProbe()
    elif backend == "jax":
        import jax

        device = jax.devices()[0]
        # On a CPU JAX answers None (or nothing useful) for memory_stats().
        if device.platform != "cpu" and device.memory_stats():
            return JaxDeviceProbe(device)
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            return TorchCudaProbe()
    return ProcessMemoryProbe()
