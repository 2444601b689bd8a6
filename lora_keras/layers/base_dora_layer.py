"""DoRA: LoRA's update applied to the direction of each output unit, with a trainable magnitude."""

import numpy as np
from keras import ops

from lora_keras.layers.base_lora_layer import BaseLoraLayer, widened
from lora_keras.layers.dora_math import column_norm, magnitude_scale


class BaseDoraLayer(BaseLoraLayer):
    """Weight-decomposed low-rank adaptation (DoRA, Liu et al., 2024) of a frozen projection.

    With `V = W + scaling * A @ B`, the layer computes
    `activation(x (m * V / ||V||) + b)`: the norm is taken over the kernel's input
    axes, one value per output unit, and `m` (`magnitude`, trainable, shape of the
    kernel's output axes) starts as `||W||`, so the layer is a no-op until A, B or
    m train. As in the paper (section 4.3) `||V||` is detached from the gradient.

    Cost per step, against LoRA: `V` is rebuilt from the weights for its norm, a
    few kernel-sized temporaries (`s*A@B`, `V`, `V**2`) that nothing keeps for the
    backward pass, and `in * rank * out` more multiply-adds; the unscaled output
    (batch x seq x output units) is kept for the magnitude's gradient. The
    projection itself is not recomputed: `x (m V/||V||) = (m/||V||) (x W + s x A B)`,
    so the frozen matmul and the low-rank branch run as in LoRA and their sum is
    scaled per output unit.

    `merge()` stores `W' = m V / ||V||` in the kernel and keeps `||V||` in the
    non-trainable `merged_norm` (one value per output unit), from which
    `unmerge()` gives back `W = W' ||V|| / m - scaling * A @ B`; a magnitude of
    exactly zero erases its unit's direction, so both refuse such a layer before
    changing anything. Dropout applies to the low-rank branch's input, as in
    PEFT's DoRA: `x W + b + (m/||V|| - 1) drop(x) W + (m/||V||) s drop(x) A B`,
    which without dropout is the formula above.

    Subclasses pick the wrapped layer's equation, as the LoRA ones do; the
    kernel's output axes must come last (true of every GPT-2 projection).

    Args: see `BaseLoraLayer`.
    """

    variant = "dora"
    ADAPTER_WEIGHT_NAMES = (*BaseLoraLayer.ADAPTER_WEIGHT_NAMES, "magnitude")

    def __init__(self, original_layer, **kwargs):
        kwargs.setdefault("name", f"{original_layer.name}_dora")
        super().__init__(original_layer, **kwargs)

    def build(self, input_shape):
        super().build(input_shape)
        equations = self.equations
        if not equations.output_axes_last:
            raise ValueError(
                f"DoRA needs the kernel's output axes after its input axes, in the order the "
                f"outputs have them; layer '{self.original_layer.name}' computes "
                f"'{equations.base}'. Use variant='lora' for this layer."
            )
        # In float32, as the forward pass takes `||V||`: so the layer starts as a no-op.
        norm = column_norm(widened(self.original_layer.kernel), len(equations.input_dims))
        self.magnitude = self.add_weight(
            name="magnitude",
            shape=equations.output_dims,
            initializer=lambda shape, dtype: ops.cast(norm, dtype),
        )
        self.merged_norm = self.add_weight(
            name="merged_norm", shape=equations.output_dims, initializer="ones", trainable=False
        )

    def _adapted_scale(self, adapted_kernel):
        """`m / ||V||` for `V` the adapted kernel, one value per output unit."""
        return magnitude_scale(
            self.magnitude, column_norm(adapted_kernel, len(self.equations.input_dims))
        )

    def _adapt(self, outputs, inputs, training):
        # Detached before the norm: nothing kernel-sized is kept for the backward pass. The
        # norm is of the float32 sum, which a half-precision kernel would round.
        adapted_kernel = ops.stop_gradient(self._adapted_kernel())
        scale = self._adapted_scale(adapted_kernel)
        scale = ops.cast(scale, outputs.dtype)  # output axes last: broadcasts over batch, seq
        lora_inputs = self._dropped(inputs, training)
        update = self._update(lora_inputs)
        if lora_inputs is inputs:
            # (m/||V||) (x W + s x A B): one scaling of the sum.
            return ops.multiply(ops.add(outputs, update), scale)
        # With dropout, PEFT's form: x W + (m/||V|| - 1) drop(x) W + (m/||V||) s drop(x) A B.
        # It costs one more frozen projection, of the dropped input, while training only.
        dropped_projection = self._frozen_projection(lora_inputs)
        return ops.add(
            ops.add(outputs, ops.multiply(dropped_projection, ops.subtract(scale, 1))),
            ops.multiply(update, scale),
        )

    def _adapted_kernel(self):
        """`W + scaling * A @ B`, in float32 for a half-precision kernel."""
        return super()._merged_kernel(self.original_layer.kernel)

    def _merged_kernel(self, kernel):
        adapted_kernel = super()._merged_kernel(kernel)  # float32 for a half-precision kernel
        norm = column_norm(adapted_kernel, len(self.equations.input_dims))
        # Kept for `unmerge`: the merged kernel alone cannot tell it.
        self.merged_norm.assign(norm)
        return ops.multiply(adapted_kernel, magnitude_scale(self.magnitude, norm))

    def _check_reversible(self, action):
        zeros = int(np.sum(ops.convert_to_numpy(self.magnitude) == 0))
        if zeros:
            raise ValueError(
                f"Cannot {action} layer '{self.name}': {zeros} of its DoRA magnitudes are 0, "
                "and a merged kernel keeps no direction for such a unit, so unmerging would "
                "divide by zero. Keep the layer unmerged (it computes the same outputs), or give "
                "those magnitudes a non-zero value first."
            )

    def _unmerged_kernel(self, merged_kernel):
        adapted_kernel = ops.divide(
            merged_kernel, magnitude_scale(self.magnitude, self.merged_norm)
        )
        return super()._unmerged_kernel(adapted_kernel)
