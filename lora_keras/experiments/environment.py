"""Where a measurement was taken: backend, versions, device, and the CPU's instruction sets.

`describe_environment` runs in the measuring process (it imports Keras); `describe_host` is
Keras-free, so the comparing process records the machine (CPU model, the instruction sets that
change what a precision lever does, any NVIDIA GPU) before any run starts.
"""

import os
import platform
import shutil
import subprocess
import sys

# The instruction sets that change what a lever does, in the names /proc/cpuinfo gives them:
# x86's vector widths and native half precision (AVX512_BF16, AVX512_FP16, AMX), Arm's.
CPU_FEATURES = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_fp16",
    "amx_int8",
    "asimd",
    "asimdhp",
    "sve",
    "sve2",
    "bf16",
    "i8mm",
)


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


def describe_host():
    """The machine, without Keras: `cpu_model`, `cpu_features` and `gpus`, for results.json.

    `cpu_features` lists which of `CPU_FEATURES` the CPU has (`None` where they cannot be read:
    neither Linux nor macOS); `gpus` the NVIDIA GPUs `nvidia-smi` lists, as "NAME (compute
    capability X.Y)" (empty without one).
    """
    model, features = _cpu()
    return {"cpu_model": model, "cpu_features": features, "gpus": _nvidia_gpus()}


def _cpu(cpuinfo="/proc/cpuinfo"):
    """`(model, features)` from /proc/cpuinfo on Linux, `sysctl` on macOS, else the platform."""
    system = platform.system()
    if system == "Linux":
        try:
            with open(cpuinfo, encoding="utf-8", errors="replace") as file:
                text = file.read()
        except OSError:
            text = ""
        fields = {}
        for line in text.splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())  # the first processor's
        model = fields.get("model name") or fields.get("Hardware") or fields.get("Model")
        flags = (fields.get("flags") or fields.get("Features") or "").split()
        if flags:
            return model or platform.machine(), [name for name in CPU_FEATURES if name in flags]
    elif system == "Darwin":
        model = _sysctl("machdep.cpu.brand_string")
        if platform.machine() == "arm64":
            features = ["asimd"] + ["bf16"] * (_sysctl("hw.optional.arm.FEAT_BF16") == "1")
            return model or "Apple silicon", features
        flags = f"{_sysctl('machdep.cpu.features')} {_sysctl('machdep.cpu.leaf7_features')}"
        flags = flags.lower().replace("avx512bf16", "avx512_bf16").split()
        return model or platform.processor(), [name for name in CPU_FEATURES if name in flags]
    return platform.processor() or platform.machine(), None


def _sysctl(name):
    try:
        answer = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return answer.stdout.strip() if answer.returncode == 0 else ""


def _nvidia_gpus():
    """Each NVIDIA GPU as "NAME (compute capability X.Y)"; [] without nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return []
    query = ["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"]
    try:
        answer = subprocess.run(query, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if answer.returncode != 0:
        return []
    gpus = []
    for line in answer.stdout.strip().splitlines():
        name, _, capability = (part.strip() for part in line.rpartition(","))
        gpus.append(f"{name} (compute capability {capability})")
    return gpus
