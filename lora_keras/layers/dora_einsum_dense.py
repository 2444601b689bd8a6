"""DoRA around `keras.layers.EinsumDense`: GPT-2's attention projections."""

import keras

from lora_keras.layers.base_dora_layer import BaseDoraLayer
from lora_keras.layers.lora_einsum_dense import LoraEinsumDense


@keras.saving.register_keras_serializable(package="lora_keras")
class DoraEinsumDense(BaseDoraLayer, LoraEinsumDense):
    """DoRA wrapper for a built `EinsumDense` (query, key, value, attention output).

    The factors are LoRA's (`LoraEinsumDense`); `magnitude` has the shape of the
    kernel's output axes: `(12, 64)` for GPT-2 base's query (kernel `(768, 12, 64)`),
    `(768,)` for the attention output (kernel `(12, 64, 768)`, whose norm runs over
    both input axes, heads and head_dim).

    Args: see `BaseLoraLayer`.

    Example:
    ```python
    dense = keras.layers.EinsumDense("abcd,cde->abe", output_shape=(None, 768))
    dense.build((None, None, 12, 64))
    dora = lk.DoraEinsumDense(dense, rank=4, alpha=32.0)
    dora.magnitude.shape  # (768,)
    dora(np.ones((1, 8, 12, 64))).shape  # (1, 8, 768), equal to dense's output
    ```
    """
