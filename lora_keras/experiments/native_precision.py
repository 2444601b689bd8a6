"""Does this machine compute in half precision natively? Said before a run that would not.

A bfloat16 or float16 lever saves time and memory only where the hardware has that arithmetic:
on a CPU without AVX512_BF16 or AMX, bfloat16 matmuls are emulated through float32, and
measured on a 2-core AMD EPYC with AVX2 (no AVX-512) a bfloat16 LoRA step took 4.10 s against
3.52 s in float32. Keras-free: the comparing process warns before any run starts, from
`describe_host()`, and results.json keeps the warnings.
"""

from lora_keras.experiments.checks import flag_name
from lora_keras.levers.options import PRECISION_OPTIONS

# The CPU instruction sets (as /proc/cpuinfo names them) that compute each type natively.
NATIVE_ON_CPU = {
    "bfloat16": ("avx512_bf16", "amx_bf16", "bf16"),
    "float16": ("avx512_fp16", "amx_fp16"),
}
# The least NVIDIA compute capability with native arithmetic in each type (tensor cores).
NATIVE_ON_GPU = {"bfloat16": (8, 0), "float16": (7, 0)}


def half_precision_warnings(runs, host):
    """One warning a precision lever of `runs` that `host`'s device does not compute natively.

    Args:
        runs: `PlannedRun`s (their `options` say the levers).
        host: `describe_host()`: runs train on its first NVIDIA GPU if it has one, else its CPU.

    Returns:
        A list of sentences, empty when every lever is native here or the CPU's instruction
        sets could not be read.
    """
    levers = {}
    for run in runs:
        for lever in PRECISION_OPTIONS:
            dtype = getattr(run.options, lever)
            if dtype is not None:
                levers.setdefault((lever, dtype), None)
    warnings = []
    for lever, dtype in levers:
        missing = _not_native(dtype, host)
        if missing:
            warnings.append(
                f"warning: {flag_name(lever)} {dtype} on {missing}: expect it slower, and "
                "perhaps larger, than float32 here, not faster; the report shows its measured "
                "effect."
            )
    return warnings


def _not_native(dtype, host):
    """What lacks native `dtype` arithmetic, in words ("this CPU (...), which has no ..."), or
    `None` when it has it or nothing can be said."""
    gpus = host.get("gpus") or []
    if gpus:
        name, _, capability = gpus[0].rpartition(" (compute capability ")
        try:
            version = tuple(int(part) for part in capability.rstrip(")").split("."))
        except ValueError:
            return None
        least = NATIVE_ON_GPU[dtype]
        if version >= least:
            return None
        return (
            f"this GPU ({name}, compute capability {'.'.join(map(str, version))}), which has "
            f"no native {dtype} arithmetic (it needs compute capability "
            f"{'.'.join(map(str, least))} or above)"
        )
    features = host.get("cpu_features")
    if features is None or set(NATIVE_ON_CPU[dtype]) & set(features):
        return None
    needed = " or ".join(name.upper() for name in NATIVE_ON_CPU[dtype] if name != "bf16")
    return (
        f"this CPU ({host.get('cpu_model')}), which has no native {dtype} arithmetic (no "
        f"{needed}): {dtype} is emulated through float32"
    )
