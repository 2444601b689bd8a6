"""The machine, without Keras: the CPU's model and instruction sets, and any NVIDIA GPU.

What every measurement records beside its figures (results.json's environment, gpt2_mini's
pretraining record): the same lever can speed a run up on one CPU and slow it down on another.
"""

import platform
import shutil
import subprocess

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
