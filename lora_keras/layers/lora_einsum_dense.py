"""LoRA around `keras.layers.EinsumDense`: GPT-2's attention projections."""

import keras

from lora_keras.layers.base_lora_layer import BaseLoraLayer


@keras.saving.register_keras_serializable(package="lora_keras")
class LoraEinsumDense(BaseLoraLayer):
    """LoRA wrapper for a built `EinsumDense` (query, key, value, attention output).

    For GPT-2 base's query (`abc,cde->abde`, kernel `(768, 12, 64)`) at rank 4,
    `lora_kernel_a` is `(768, 4)` and `lora_kernel_b` is `(4, 12, 64)`. For the
    attention output (`abcd,cde->abe`, kernel `(12, 64, 768)`), A is `(12, 64, 4)`
    and B is `(4, 768)`: A takes every kernel axis that meets the input.

    Args: see `BaseLoraLayer`.

    Example:
    ```python
    dense = keras.layers.EinsumDense("abc,cde->abde", output_shape=(None, 12, 64))
    dense.build((None, None, 768))
    lora = lk.LoraEinsumDense(dense, rank=4, alpha=32.0)
    lora(np.ones((1, 8, 768))).shape  # (1, 8, 12, 64), equal to dense's output
    ```
    """

    def _base_equation(self):
        return self.original_layer.equation
