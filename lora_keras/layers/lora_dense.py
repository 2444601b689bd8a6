"""LoRA around `keras.layers.Dense`: GPT-2's feed-forward projections."""

import keras
from keras import ops

from lora_keras.layers.base_lora_layer import BaseLoraLayer


@keras.saving.register_keras_serializable(package="lora_keras")
class LoraDense(BaseLoraLayer):
    """LoRA wrapper for a built `Dense` layer (GPT-2's `ffn_in` and `ffn_out`).

    `lora_kernel_a` is `(input_dim, rank)` and `lora_kernel_b` is `(rank, units)`.
    The frozen layer's activation (GELU for `ffn_in`) applies after the update,
    as it would to a fine-tuned kernel.

    Args: see `BaseLoraLayer`.

    Example:
    ```python
    dense = keras.layers.Dense(3072, activation="gelu")
    dense.build((None, None, 768))
    lora = lk.LoraDense(dense, rank=8, alpha=16.0)
    lora(np.ones((1, 8, 768))).shape  # (1, 8, 3072)
    ```
    """

    def _base_equation(self):
        # Dense multiplies the last axis by a (input_dim, units) kernel.
        return "...i,io->...o"

    def _project(self, inputs, kernel):
        # Dense multiplies with matmul; doing the same keeps the wrapper's
        # output bit-identical to the original layer's while B is zero.
        return ops.matmul(inputs, kernel)
