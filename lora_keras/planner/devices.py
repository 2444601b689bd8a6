"""The memory of the devices a plan can be checked against, from their public specifications.

`total` is what `nvidia-smi` reports for the card (MiB, from NVIDIA's data sheets: T4 16 GB,
L4 24 GB, A100 40/80 GB, H100 80 GB, H200 141 GB); `usable` leaves 512 MiB for the CUDA context
and the libraries' handles, which the process holds outside the allocator the planner predicts.
JAX preallocates 75% of a GPU by default: set XLA_PYTHON_CLIENT_MEM_FRACTION or
XLA_PYTHON_CLIENT_PREALLOCATE=false to let a run use the rest. `cpu` is this machine: its total
memory, and what the operating system says is available now.
"""

import re

MIB = 2**20
CUDA_CONTEXT_BYTES = 512 * MIB
GPUS = {
    "t4": ("NVIDIA T4 (16 GB)", 15360 * MIB),
    "l4": ("NVIDIA L4 (24 GB)", 23034 * MIB),
    "a100-40": ("NVIDIA A100 40 GB", 40960 * MIB),
    "a100-80": ("NVIDIA A100 80 GB", 81920 * MIB),
    "h100": ("NVIDIA H100 80 GB", 81559 * MIB),
    "h200": ("NVIDIA H200 141 GB", 143771 * MIB),
}
DEVICES = (*GPUS, "cpu")
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_UNITS.update({f"{p}i": 2 ** (10 * n) for n, p in enumerate(("k", "m", "g", "t"), start=1)})


def device_memory(name):
    """`{"name", "kind", "total_bytes", "usable_bytes", "note"}` of a device in `DEVICES`."""
    key = str(name).lower()
    if key == "cpu":
        total, available = _meminfo()
        return {
            "name": "cpu",
            "kind": "cpu",
            "total_bytes": total,
            "usable_bytes": available,
            "note": "this machine's memory; usable: what the system says is available now",
        }
    if key not in GPUS:
        raise ValueError(f"Unknown device {name!r}. Known devices: {', '.join(DEVICES)}.")
    title, total = GPUS[key]
    return {
        "name": key,
        "kind": "gpu",
        "total_bytes": total,
        "usable_bytes": total - CUDA_CONTEXT_BYTES,
        "note": f"{title}; usable: less 512 MiB for the CUDA context",
    }


def parse_memory(text):
    """Bytes of a size such as "15GiB", "16 GB", "800MiB" or "1073741824".

    GiB, MiB, KiB and TiB are powers of 1024; GB, MB, KB and TB powers of 1000.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]i?)?b?\s*", str(text), flags=re.I)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(
            f"Bad memory size {text!r}: write a positive number and a unit, such as 15GiB, "
            "16GB or 800MiB (GiB/MiB: powers of 1024; GB/MB: of 1000)."
        )
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])


def _meminfo():
    values = {}
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                key, value = line.split(":", 1)
                values[key] = int(value.split()[0]) * 1024
    except OSError:
        return None, None
    return values.get("MemTotal"), values.get("MemAvailable")
