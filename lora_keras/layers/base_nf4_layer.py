"""A frozen projection whose kernel is stored as NF4 codes: QLoRA's base layer."""

import keras
from keras import ops

from lora_keras.layers.nf4_codec import dequantize_arrays, nf4_quantize, stored_shapes


def input_gradient_equation(equation):
    """`outputs, kernel -> inputs`: the einsum giving a projection's input gradient.

    For GPT-2's query `abc,cde->abde` this is `abde,cde->abc`.
    """
    inputs_and_kernel, output_spec = equation.replace(" ", "").split("->")
    input_spec, kernel_spec = inputs_and_kernel.split(",")
    summed = set(input_spec.replace(".", "")) - set(kernel_spec) - set(output_spec)
    if summed:
        raise ValueError(
            f"Equation '{equation}' sums input axes {sorted(summed)} away without a kernel; "
            "an NF4 layer needs a projection where every input axis meets the kernel or "
            "reaches the output."
        )
    return f"{output_spec},{kernel_spec}->{input_spec}"


class BaseNF4Layer(keras.layers.Layer):
    """A frozen projection `activation(x W + b)` with `W` stored as NF4 (QLoRA).

    The kernel is kept as non-trainable integer variables (`codes`, two 4-bit codes
    a byte, and the absmax constants: `absmax_codes` int8, `absmax_scales` and
    `absmax_mean` float32 with double quantization, else `absmax` float32), so a
    `.keras` file and `model.summary()` show the real storage. The bias stays float.
    Each call dequantizes the kernel to the compute dtype; the backward pass
    dequantizes it again instead of keeping it (a custom gradient), so no float copy
    of a frozen kernel outlives its matmul. The layer itself never trains.

    Subclasses say how the float layer they replace projects (`equation`) and how to
    build it back (`to_float`). Build one from a float layer with `from_float`.

    Args:
        kernel_shape: the float kernel's shape.
        bias_shape: the bias's shape, or None for no bias.
        activation: the activation applied after the bias, as in the float layer.
        block_size: values per NF4 block (QLoRA: 64).
        double_quant: whether the absmax constants are stored in 8 bits.
        **kwargs: standard `keras.layers.Layer` arguments such as `name`, `dtype`.
    """

    # A LoRA wrapper checks for a constraint to respect: stored codes have none.
    kernel_constraint = None

    def __init__(
        self,
        kernel_shape,
        bias_shape=None,
        activation=None,
        block_size=64,
        double_quant=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.kernel_shape = tuple(int(d) for d in kernel_shape)
        self.bias_shape = None if bias_shape is None else tuple(int(d) for d in bias_shape)
        self.activation = keras.activations.get(activation)
        self.block_size = int(block_size)
        self.double_quant = bool(double_quant)
        self.storage_names = tuple(
            stored_shapes(self.kernel_shape, self.block_size, self.double_quant)
        )
        self.trainable = False

    @property
    def equation(self):
        """The float layer's `inputs, kernel -> outputs` einsum equation."""
        raise NotImplementedError

    @classmethod
    def float_arguments(cls, layer):
        """The constructor arguments, beyond the base ones, that describe float `layer`."""
        raise NotImplementedError

    def float_layer(self):
        """A new, unbuilt float layer of the class this one replaced."""
        raise NotImplementedError

    def build(self, input_shape=None):
        shapes = stored_shapes(self.kernel_shape, self.block_size, self.double_quant)
        for name, (shape, dtype) in shapes.items():
            variable = self.add_weight(
                name=name, shape=shape, dtype=dtype, initializer="zeros", trainable=False
            )
            setattr(self, name, variable)
        self.bias = None
        if self.bias_shape is not None:
            self.bias = self.add_weight(
                name="bias", shape=self.bias_shape, initializer="zeros", trainable=False
            )
        self.built = True

    @classmethod
    def like(cls, layer, block_size=64, double_quant=True):
        """A built NF4 layer shaped for float `layer`, its variables still zero."""
        nf4 = cls(
            kernel_shape=layer.kernel.shape,
            bias_shape=None if layer.bias is None else layer.bias.shape,
            activation=layer.activation,
            block_size=block_size,
            double_quant=double_quant,
            name=layer.name,
            dtype=layer.dtype_policy,
            **cls.float_arguments(layer),
        )
        nf4.build(layer.get_build_config()["input_shape"])
        return nf4

    @classmethod
    def from_float(cls, layer, block_size=64, double_quant=True):
        """A built NF4 layer holding float `layer`'s kernel as NF4 and its bias as is."""
        nf4 = cls.like(layer, block_size, double_quant)
        quantized = nf4_quantize(ops.convert_to_numpy(layer.kernel), block_size, double_quant)
        for name, array in quantized.arrays.items():
            getattr(nf4, name).assign(array)
        if layer.bias is not None:
            nf4.bias.assign(layer.bias)
        return nf4

    def to_float(self):
        """A built float layer with the dequantized kernel and this layer's bias."""
        layer = self.float_layer()
        layer.build(self.get_build_config()["input_shape"])
        layer.kernel.assign(ops.cast(self.kernel, layer.kernel.dtype))
        if self.bias is not None:
            layer.bias.assign(self.bias)
        return layer

    def _storage(self):
        return {name: getattr(self, name) for name in self.storage_names}

    @property
    def kernel(self):
        """The dequantized kernel, in the compute dtype: computed on each access."""
        return dequantize_arrays(
            self.kernel_shape, self.block_size, dtype=self.compute_dtype, **self._storage()
        )

    def _contract(self, inputs, kernel):
        return ops.einsum(self.equation, inputs, kernel)

    def project(self, inputs):
        """`inputs @ W` with `W` dequantized in the forward pass and again in the backward."""
        names = self.storage_names
        gradient_equation = input_gradient_equation(self.equation)

        def dequantize(arrays, after):
            stored = dict(zip(names, arrays, strict=True))
            return dequantize_arrays(
                self.kernel_shape, self.block_size, dtype=self.compute_dtype, after=after, **stored
            )

        @ops.custom_gradient
        def frozen_projection(x, *arrays):
            def grad(*args, upstream=None):
                # TensorFlow and JAX pass the upstream gradient positionally, torch by name.
                if upstream is None:
                    (upstream,) = args
                # Recomputed here, not captured from the forward pass, and only once the
                # upstream gradient exists (as the forward one waits for `x`): the float
                # kernel lives only as long as one matmul, forward or backward.
                kernel = dequantize(arrays, after=upstream)
                return (ops.einsum(gradient_equation, upstream, kernel),) + (None,) * len(arrays)

            return self._contract(x, dequantize(arrays, after=x)), grad

        stored = [ops.convert_to_tensor(variable) for variable in self._storage().values()]
        return frozen_projection(inputs, *stored)

    def call(self, inputs):
        outputs = self.project(inputs)
        if self.bias is not None:
            outputs = ops.add(outputs, self.bias)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "kernel_shape": self.kernel_shape,
                "bias_shape": self.bias_shape,
                "activation": keras.activations.serialize(self.activation),
                "block_size": self.block_size,
                "double_quant": self.double_quant,
            }
        )
        return config
