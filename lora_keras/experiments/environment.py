"""Where a measurement was taken: backend, versions, device (in the measuring process, with Keras).

The machine itself (CPU model and instruction sets, NVIDIA GPUs) is `lora_keras.host`, which
needs no Keras, so the comparing process records it before any run starts.
"""

import os
import platform
import subprocess
import sys

from lora_keras.host import describe_host


def _device_name():
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            capability = details.get("compute_capability")
            return (
                f"GPU: {details.get('device_name', gpus[0].name)} (x{len(gpus)})",
                _capability(capability),
            )
    elif backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform != "cpu":
            name = f"{device.platform.upper()}: {device.device_kind} (x{len(jax.devices())})"
            return name, _capability(getattr(device, "compute_capability", None))
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            name = f"GPU: {torch.cuda.get_device_name(0)} (x{torch.cuda.device_count()})"
            return name, _capability(torch.cuda.get_device_capability(0))
    return f"CPU ({platform.machine()}, {os.cpu_count()} cores)", None


def _capability(value):
    """A GPU's compute capability as "8.0", from (8, 0), "8.0" or None."""
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        return ".".join(str(part) for part in value)
    return str(value)


def _backend_version():
    import keras

    backend = keras.backend.backend()
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(backend)
    return sys.modules[module].__version__ if module in sys.modules else None


def _source_commit():
    """`git describe --always --dirty` of the checkout lora_keras runs from; None outside one."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        described = subprocess.run(
            ["git", "-C", package, "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None  # no git here
    if described.returncode != 0:
        return None  # not a git checkout (an installed wheel)
    return described.stdout.strip()


def describe_environment():
    """The backend, library versions and device of this process, for results.json."""
    import keras
    import keras_hub

    device, capability = _device_name()
    return {
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
        "keras_hub_version": keras_hub.__version__,
        "backend_version": _backend_version(),
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "gpu_compute_capability": capability,
        "cpu_count": os.cpu_count(),
        **describe_host(),
        "source_commit": _source_commit(),  # the code that measured, where it is a git checkout
    }
