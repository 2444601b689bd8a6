"""DoRA's weight decomposition (Liu et al., 2024) as pure functions of tensors.

Every DoRA layer (and any other layer that decomposes a kernel the same way)
shares these. A kernel's input axes come first and its output axes last
(`LoraEquations.output_axes_last`), so one value per output unit broadcasts
onto the kernel and onto the layer's outputs alike.
"""

import keras
from keras import ops


def column_norm(kernel, num_input_axes):
    """The L2 norm of `kernel` over its first `num_input_axes` axes: one value per output unit.

    For a query kernel `(768, 12, 64)` with one input axis the result is `(12, 64)`;
    for the attention output `(12, 64, 768)` with two, it is `(768,)`.
    """
    return ops.sqrt(ops.sum(ops.square(kernel), axis=tuple(range(num_input_axes))))


def magnitude_scale(magnitude, norm):
    """`magnitude / norm`, the factor that gives each output unit of a kernel the magnitude.

    The norm is floored at Keras's epsilon so an all-zero column scales to 0
    instead of NaN; any real column norm is far above it, so the floor changes nothing else.
    """
    floor = ops.cast(keras.config.epsilon(), norm.dtype)
    return ops.divide(ops.cast(magnitude, norm.dtype), ops.maximum(norm, floor))
