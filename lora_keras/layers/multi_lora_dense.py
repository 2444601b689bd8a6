"""Many LoRA adapters around `keras.layers.Dense`: GPT-2's feed-forward projections."""

import keras
from keras import ops

from lora_keras.layers.base_multi_lora_layer import BaseMultiLoraLayer


@keras.saving.register_keras_serializable(package="lora_keras")
class MultiLoraDense(BaseMultiLoraLayer):
    """Multi-adapter LoRA wrapper for a built `Dense` layer (`ffn_in`, `ffn_out`).

    `lora_kernel_a` is `(adapters, input_dim, max_rank)` and `lora_kernel_b`
    `(adapters, max_rank, units)`; the activation applies after the update.

    Args: see `BaseMultiLoraLayer`.

    Example:
    ```python
    dense = keras.layers.Dense(3072, activation="gelu")
    dense.build((None, None, 768))
    multi = lk.MultiLoraDense(dense, adapters=[{"name": "a", "rank": 2}, {"name": "b"}])
    multi(np.ones((2, 8, 768)), adapter_ids=np.array([1, 0])).shape  # (2, 8, 3072)
    ```
    """

    def _base_equation(self):
        return "...i,io->...o"

    def _project(self, inputs, kernel):
        # As Dense computes it, so the frozen part is bit-identical to the original layer's.
        return ops.matmul(inputs, kernel)
