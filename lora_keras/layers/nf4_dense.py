"""NF4 storage for `keras.layers.Dense`: GPT-2's feed-forward projections."""

import keras
from keras import ops

from lora_keras.layers.base_nf4_layer import BaseNF4Layer


@keras.saving.register_keras_serializable(package="lora_keras")
class NF4Dense(BaseNF4Layer):
    """A `Dense` whose frozen kernel is stored as NF4 (see `BaseNF4Layer`).

    Args:
        units: the output size of the `Dense` it replaces.
        **kwargs: `BaseNF4Layer` arguments (`kernel_shape`, `bias_shape`,
            `activation`, `block_size`, `double_quant`) and standard layer arguments.

    Example:
    ```python
    dense = keras.layers.Dense(3072, activation="gelu")
    dense.build((None, None, 768))
    nf4 = lk.NF4Dense.from_float(dense)
    nf4(np.ones((1, 8, 768))).shape  # (1, 8, 3072)
    ```
    """

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)

    @property
    def equation(self):
        # Dense multiplies the last axis by a (input_dim, units) kernel.
        return "...i,io->...o"

    @classmethod
    def float_arguments(cls, layer):
        return {"units": layer.units}

    def float_layer(self):
        return keras.layers.Dense(
            self.units,
            activation=self.activation,
            use_bias=self.bias_shape is not None,
            name=self.name,
            dtype=self.dtype_policy,
        )

    def _contract(self, inputs, kernel):
        # As Dense does: matmul keeps the forward pass the same operation as the float one.
        return ops.matmul(inputs, kernel)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        config = super().get_config()
        config["units"] = self.units
        return config
