"""Where a measurement was taken: backend, versions, device. Runs in the measuring process."""

import os
import platform
import subprocess
import sys


def _device_name():
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            return f"GPU: {details.get('device_name', gpus[0].name)} (x{len(gpus)})"
    elif backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform != "cpu":
            return f"{device.platform.upper()}: {device.device_kind} (x{len(jax.devices())})"
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            return f"GPU: {torch.cuda.get_device_name(0)} (x{torch.cuda.device_count()})"
    return f"CPU ({platform.machine()}, {os.cpu_count()} cores)"


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

    return {
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
        "keras_hub_version": keras_hub.__version__,
        "backend_version": _backend_version(),
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "device": _device_name(),
        "cpu_count": os.cpu_count(),
        "source_commit": _source_commit(),  # the code that measured, where it is a git checkout
    }
