"""NF4 storage for `keras.layers.EinsumDense`: GPT-2's attention projections."""

import keras

from lora_keras.layers.base_nf4_layer import BaseNF4Layer


@keras.saving.register_keras_serializable(package="lora_keras")
class NF4EinsumDense(BaseNF4Layer):
    """An `EinsumDense` whose frozen kernel is stored as NF4 (see `BaseNF4Layer`).

    Args:
        equation: the einsum equation of the `EinsumDense` it replaces.
        output_shape: that layer's output shape (without the batch axis).
        bias_axes: that layer's bias axes, or None.
        **kwargs: `BaseNF4Layer` arguments (`kernel_shape`, `bias_shape`,
            `activation`, `block_size`, `double_quant`) and standard layer arguments.

    Example:
    ```python
    dense = keras.layers.EinsumDense("abc,cde->abde", output_shape=(None, 12, 64),
                                     bias_axes="de")
    dense.build((None, None, 768))
    nf4 = lk.NF4EinsumDense.from_float(dense)
    nf4(np.ones((1, 8, 768))).shape  # (1, 8, 12, 64), close to dense's output
    ```
    """

    def __init__(self, equation, output_shape, bias_axes=None, **kwargs):
        super().__init__(**kwargs)
        self._equation = equation
        self.partial_output_shape = tuple(output_shape)
        self.bias_axes = bias_axes

    @property
    def equation(self):
        return self._equation

    @classmethod
    def float_arguments(cls, layer):
        return {
            "equation": layer.equation,
            "output_shape": layer.partial_output_shape,
            "bias_axes": layer.bias_axes,
        }

    def float_layer(self):
        return keras.layers.EinsumDense(
            self.equation,
            output_shape=self.partial_output_shape,
            bias_axes=self.bias_axes,
            activation=self.activation,
            name=self.name,
            dtype=self.dtype_policy,
        )

    def compute_output_shape(self, input_shape):
        inputs_and_kernel, output_spec = self.equation.split("->")
        input_spec, kernel_spec = inputs_and_kernel.split(",")
        sizes = dict(zip(kernel_spec, self.kernel_shape, strict=True))
        sizes.update(zip(input_spec, input_shape, strict=True))
        return tuple(sizes[letter] for letter in output_spec)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "equation": self.equation,
                "output_shape": self.partial_output_shape,
                "bias_axes": self.bias_axes,
            }
        )
        return config
