"""DoRA around `keras.layers.Dense`: GPT-2's feed-forward projections."""

import keras

from lora_keras.layers.base_dora_layer import BaseDoraLayer
from lora_keras.layers.lora_dense import LoraDense


@keras.saving.register_keras_serializable(package="lora_keras")
class DoraDense(BaseDoraLayer, LoraDense):
    """DoRA wrapper for a built `Dense` layer (GPT-2's `ffn_in` and `ffn_out`).

    `magnitude` is `(units,)`, one value per column of the `(input_dim, units)`
    kernel. The frozen layer's activation (GELU for `ffn_in`) applies after the
    rescaled projection and the bias, as it would to a fine-tuned kernel.

    Args: see `BaseLoraLayer`.

    Example:
    ```python
    dense = keras.layers.Dense(3072, activation="gelu")
    dense.build((None, None, 768))
    dora = lk.DoraDense(dense, rank=8, alpha=16.0)
    dora.magnitude.shape  # (3072,)
    dora(np.ones((1, 8, 768))).shape  # (1, 8, 3072)
    ```
    """
