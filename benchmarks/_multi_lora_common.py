"""What the multi-LoRA benchmarks share: the adapters, the random base, A's start, the record.

`multi_lora_together.py` (training) and `multi_lora_serving.py` (generation) import it, so both
measure the same K adapters on the same random GPT-2 and record their machine the same way.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RANKS = (4, 8, 16, 32)  # the adapters, as the ranks of a sweep


def adapter_settings(ranks):
    """`{name: settings}` for `lk.apply_multi_lora`: one adapter a rank, alpha twice the rank."""
    return {f"rank{r}": {"rank": r, "alpha": 2.0 * r} for r in ranks}


def random_gpt2(preset, dtype=None):
    """A `GPT2CausalLM` of `preset`'s shape, random weights from seed 0, no dropout.

    The same base on every side of a comparison and in every process; no download.
    """
    import keras
    import keras_hub

    from lora_keras.models import GPT2_ARCHITECTURES

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GPT2Backbone(**GPT2_ARCHITECTURES[preset], dropout=0.0, dtype=dtype)
    return keras_hub.models.GPT2CausalLM(backbone, preprocessor=None)


def initial_a(shape, adapter):
    """A of adapter `adapter` as the reference LoRA starts it, the same on both sides."""
    import numpy as np

    fan_in = int(np.prod(shape[:-1]))
    bound = 1.0 / np.sqrt(fan_in)
    return np.random.default_rng(adapter).uniform(-bound, bound, shape).astype("float32")


def environment(**extra):
    """The backend, versions, CPU model and instruction sets (`lk.describe_environment`)."""
    from lora_keras.experiments.environment import describe_environment

    return {**describe_environment(), "load_average": load_average(), **extra}


def load_average():
    """The machine's 1-minute load average now: above its core count, others shared the CPU."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def write_results(path, results):
    """Prints `results` and, given a path, writes it whole (a temporary file, then renamed)."""
    import json

    from lora_keras.io_utils import atomic_write_json

    print(json.dumps(results, indent=2))
    if path:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        atomic_write_json(path, results)
