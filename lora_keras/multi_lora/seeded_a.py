"""Each adapter's A drawn from its own seed, so a plain LoRA model and a multi-adapter one agree.

Keras's seeded initializers draw one stream for the whole model: an adapter's A depends on what
was drawn before it, so the rank-8 adapter of a multi-adapter model starts elsewhere than a
model with rank-8 LoRA alone. Here A is drawn per (seed, rank, layer), with the reference LoRA's
bound (uniform within +-1/sqrt(fan_in), as `a_init="lora"`), and B stays as it is (zero before
training): the same start on both sides, whichever model holds the adapter.
"""

import math
import zlib

import numpy as np
from keras import ops

from lora_keras.gpt2_surgery import lora_layers, multi_lora_layers

# What `results.json` says of the start `seed_lora_a` gives.
SEEDED_A = "uniform within +-1/sqrt(fan_in), drawn per (seed, rank, layer path); B at zero"


def seeded_a(seed, rank, path, input_dims):
    """A `(*input_dims, rank)` for the layer at `path` (such as `transformer_layer_0/query`)."""
    bound = 1.0 / math.sqrt(math.prod(input_dims))
    generator = np.random.default_rng([seed, rank, zlib.crc32(path.encode())])
    return generator.uniform(-bound, bound, (*input_dims, rank)).astype("float32")


def seed_lora_a(model, seed):
    """Sets every adapter's A of `model` (`lk.apply_lora` or `lk.apply_multi_lora`) from `seed`.

    An adapter of rank r gets the same A in both kinds of model, so that trained on the same
    batches they take the same steps. A multi-adapter model's padded columns stay zero.

    Raises:
        ValueError: the model holds no LoRA adapters, or several adapters of the same rank
            (their A would be equal).

    Example:
    ```python
    lk.apply_lora(alone, rank=8)
    lk.apply_multi_lora(together, {"r4": {"rank": 4}, "r8": {"rank": 8}})
    seed_lora_a(alone, 0), seed_lora_a(together, 0)  # "r8" starts as `alone`'s adapter
    ```
    """
    single, multi = lora_layers(model), multi_lora_layers(model)
    if not single and not multi:
        raise ValueError("This model holds no LoRA adapters: apply_lora or apply_multi_lora first.")
    for path, layer in single.items():
        layer.lora_kernel_a.assign(seeded_a(seed, layer.rank, path, layer.lora_kernel_a.shape[:-1]))
    for path, layer in multi.items():
        ranks = [adapter["rank"] for adapter in layer.adapters]
        if len(set(ranks)) < len(ranks):
            raise ValueError(
                f"Adapters of the same rank ({ranks}) would start from the same A: "
                "seed_lora_a keys each adapter by its rank."
            )
        a = np.zeros(tuple(layer.lora_kernel_a.shape), "float32")  # (adapters, *in, max_rank)
        for index, rank in enumerate(ranks):
            a[index, ..., :rank] = seeded_a(seed, rank, path, a.shape[1:-1])
        layer.lora_kernel_a.assign(ops.convert_to_tensor(a))
