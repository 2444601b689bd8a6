"""Many LoRA adapters around `keras.layers.EinsumDense`: GPT-2's attention projections."""

import keras

from lora_keras.layers.base_multi_lora_layer import BaseMultiLoraLayer


@keras.saving.register_keras_serializable(package="lora_keras")
class MultiLoraEinsumDense(BaseMultiLoraLayer):
    """Multi-adapter LoRA wrapper for a built `EinsumDense` (query, key, value, output).

    For GPT-2 base's query (`abc,cde->abde`, kernel `(768, 12, 64)`) with
    adapters of ranks 4 and 8, `lora_kernel_a` is `(2, 768, 8)` and
    `lora_kernel_b` is `(2, 8, 12, 64)`; the rank-4 adapter owns the first 4
    columns of its A and rows of its B.

    Args: see `BaseMultiLoraLayer`.

    Example:
    ```python
    dense = keras.layers.EinsumDense("abc,cde->abde", output_shape=(None, 12, 64))
    dense.build((None, None, 768))
    multi = lk.MultiLoraEinsumDense(
        dense, adapters=[{"name": "weather", "rank": 4}, {"name": "recipe", "rank": 8}]
    )
    multi(np.ones((2, 8, 768)), adapter_ids=np.array([0, 1])).shape  # (2, 8, 12, 64)
    ```
    """

    def _base_equation(self):
        return self.original_layer.equation
