"""The behaviour that every LoRA wrapper shares, whatever layer it wraps."""

import math
import numbers

import keras
from keras import ops

from lora_keras.layers.base_nf4_layer import BaseNF4Layer
from lora_keras.layers.lora_equations import lora_equations

HALF_DTYPES = ("float16", "bfloat16")

# How A starts (B starts at zero). "lora" is the reference LoRA's and PEFT's: kaiming-uniform
# with a=sqrt(5), i.e. uniform within +-1/sqrt(fan_in); "he_uniform" is Keras's `enable_lora`'s,
# within +-sqrt(6/fan_in), about 2.45x wider.
A_INITIALIZERS = {
    "lora": lambda: keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform"),
    "he_uniform": keras.initializers.HeUniform,
}


def adapter_policy(policy):
    """The dtype policy of the adapter weights beside a frozen layer of `policy`.

    A frozen layer stored in float16 or bfloat16 gets adapters stored in float32 and computed
    in its half dtype (`mixed_<dtype>`): AdamW's updates of a few 1e-5 would round away in
    8 mantissa bits, so the weights that train keep 24 (as PEFT's `autocast_adapter_dtype`).
    """
    if policy.variable_dtype in HALF_DTYPES:
        return keras.DTypePolicy(f"mixed_{policy.variable_dtype}")
    return policy


def check_alpha(alpha, method):
    """`alpha` as a float, or a ValueError naming `method`: a scale is a finite number above 0."""
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not alpha > 0:
        raise ValueError(
            f"{method} alpha must be a finite number above 0 (updates are scaled by alpha / "
            f"rank), got alpha={alpha!r}."
        )
    if not math.isfinite(alpha):
        raise ValueError(f"{method} alpha must be a finite number above 0, got alpha={alpha!r}.")
    return float(alpha)


def widened(kernel):
    """`kernel` in float32 when it is stored in half precision, else as it is.

    Sums with the update are taken in float32: in bfloat16 an update below about 1/256 of a
    weight would round away before it reached the kernel (or DoRA's norm).
    """
    return ops.cast(kernel, "float32") if kernel.dtype in HALF_DTYPES else kernel


class BaseLoraLayer(keras.layers.Layer):
    """Wraps a frozen projection and adds a trainable low-rank update to it.

    The output is `activation(x W + b + scaling * (dropout(x) A) B)` where `W` and
    `b` belong to the frozen `original_layer`. `A` starts as the reference LoRA's
    (see `a_init`) and `B` at zero, so the wrapper computes exactly what the
    original layer did until `B` trains.

    Subclasses only say how the wrapped layer contracts its input with its
    kernel (`_base_equation()`); the LoRA equations are derived from it, and
    everything else (weights, scaling, merging, serialization) lives here once.
    Variants (DoRA) subclass it and override only how the update applies
    (`_adapt`) and how it folds into the kernel and back (`_merged_kernel`,
    `_unmerged_kernel`).

    Args:
        original_layer: a built `keras.layers.EinsumDense` or `keras.layers.Dense`.
        rank: int. The rank of the update, at least 1 and at most the smaller of
            the kernel's input and output sizes.
        alpha: float. The update is scaled by `alpha / rank` (the LoRA paper).
        dropout: float. Dropout on the LoRA branch's input only.
        rslora: bool. Scale by `alpha / sqrt(rank)` instead (rank-stabilized LoRA).
        merged: bool. Whether the update is already folded into the frozen
            kernel (set by `merge()`; kept in the config so a saved merged model
            reloads merged).
        a_init: how A starts: "lora" (the reference LoRA's and PEFT's, uniform
            within 1/sqrt(fan_in)) or "he_uniform" (Keras's `enable_lora`'s).
        **kwargs: standard `keras.layers.Layer` arguments such as `name`.
    """

    # What `lk.apply_lora(..., variant=...)` calls this wrapper, recorded in configs and adapters.
    variant = "lora"
    # The weights that train and that an adapter file carries, by attribute name.
    ADAPTER_WEIGHT_NAMES = ("lora_kernel_a", "lora_kernel_b")

    def __init__(
        self,
        original_layer,
        rank=4,
        alpha=32.0,
        dropout=0.0,
        rslora=False,
        merged=False,
        a_init="lora",
        **kwargs,
    ):
        kwargs.setdefault("name", f"{original_layer.name}_lora")
        kwargs.setdefault("dtype", adapter_policy(original_layer.dtype_policy))
        super().__init__(**kwargs)
        if isinstance(original_layer, BaseLoraLayer):
            raise ValueError(
                f"Layer '{original_layer.name}' already has LoRA. Apply LoRA once per "
                "layer; to change its rank, unwrap it first with `lk.unwrap_lora(model)`."
            )
        if getattr(original_layer, "lora_enabled", False):
            raise ValueError(
                f"Layer '{original_layer.name}' has Keras's built-in LoRA enabled "
                "(`enable_lora`). Use one LoRA implementation per layer: build the model "
                "again without `enable_lora`."
            )
        if isinstance(rank, bool) or int(rank) != rank or rank < 1:
            raise ValueError(f"LoRA rank must be an integer of at least 1, got rank={rank}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got dropout={dropout}.")
        self.alpha = check_alpha(alpha, "LoRA")
        if a_init not in A_INITIALIZERS:
            raise ValueError(f"Unknown a_init {a_init!r}: use one of {', '.join(A_INITIALIZERS)}.")
        self.a_init = a_init
        self.original_layer = original_layer
        self.rank = int(rank)
        self.dropout = float(dropout)
        self.rslora = bool(rslora)
        self.merged = bool(merged)
        self.scaling = self.alpha / (math.sqrt(self.rank) if self.rslora else self.rank)
        # With rate 0 no Dropout layer exists, so training keeps no mask and no
        # copy of the input for the LoRA branch.
        self.dropout_layer = (
            keras.layers.Dropout(self.dropout, name="lora_dropout") if self.dropout else None
        )
        if original_layer.built:
            self.build(None)
        # Frozen last, once every check has passed: a refused wrapper changes nothing.
        self.original_layer.trainable = False

    def _base_equation(self):
        """The wrapped layer's `inputs, kernel -> outputs` einsum equation."""
        raise NotImplementedError

    def _project(self, inputs, kernel):
        """The frozen projection, computed as the wrapped layer computes it."""
        return ops.einsum(self.equations.base, inputs, kernel)

    def _frozen_projection(self, inputs):
        """`inputs @ W` for the frozen kernel `W`, without bias or activation."""
        if isinstance(self.original_layer, BaseNF4Layer):
            # NF4 (QLoRA): the layer dequantizes its kernel itself, forward and backward.
            return self.original_layer.project(inputs)
        return self._project(inputs, self.original_layer.kernel)

    def build(self, input_shape):
        if not self.original_layer.built:
            self.original_layer.build(input_shape)
        if self.original_layer.kernel_constraint is not None:
            raise ValueError(
                f"Layer '{self.original_layer.name}' has a kernel constraint, which "
                "LoRA cannot respect: remove `kernel_constraint` before applying LoRA."
            )
        kernel_shape = tuple(self.original_layer.kernel.shape)
        self.equations = lora_equations(self._base_equation(), kernel_shape)
        input_dims, output_dims = self.equations.input_dims, self.equations.output_dims
        smallest = min(math.prod(input_dims), math.prod(output_dims))
        if self.rank > smallest:
            raise ValueError(
                f"LoRA rank {self.rank} is larger than the smallest dimension ({smallest}) "
                f"of layer '{self.original_layer.name}' with kernel shape "
                f"{kernel_shape}: choose rank <= {smallest}."
            )
        self.lora_kernel_a = self.add_weight(
            name="lora_kernel_a",
            shape=(*input_dims, self.rank),
            initializer=A_INITIALIZERS[self.a_init](),
        )
        self.lora_kernel_b = self.add_weight(
            name="lora_kernel_b",
            shape=(self.rank, *output_dims),
            initializer="zeros",
        )
        self.built = True

    def call(self, inputs, training=None):
        if self.merged and training:
            # Merged, the update sits in the frozen kernel and A and B get no gradient.
            raise ValueError(
                f"Layer '{self.name}' is merged: merged LoRA must be unmerged to train. Call "
                "`lk.unmerge_lora(model)` before `fit`, and merge again after."
            )
        layer = self.original_layer
        outputs = self._frozen_projection(inputs)
        if not self.merged:
            outputs = self._adapt(outputs, inputs, training)
        if layer.bias is not None:
            outputs = ops.add(outputs, layer.bias)
        if layer.activation is not None:
            outputs = layer.activation(outputs)
        return outputs

    def _adapt(self, outputs, inputs, training):
        """The frozen projection's `outputs` with the update applied (variants override)."""
        return ops.add(outputs, self._update(self._dropped(inputs, training)))

    def _dropped(self, inputs, training):
        """The low-rank branch's input: `inputs` after dropout, while training with dropout."""
        if self.dropout_layer is None or not training:
            return inputs
        return self.dropout_layer(inputs, training=training)

    def _update(self, lora_inputs):
        """`scaling * (lora_inputs A) B`, in the frozen projection's output shape."""
        # Scale the rank-sized intermediate, not the full-width output: it is
        # the cheapest place in the branch to multiply.
        low_rank = ops.einsum(self.equations.input_times_a, lora_inputs, self.lora_kernel_a)
        low_rank = ops.multiply(low_rank, ops.cast(self.scaling, low_rank.dtype))
        return ops.einsum(self.equations.low_rank_times_b, low_rank, self.lora_kernel_b)

    def adapter_weights(self):
        """`{name: variable}` of the weights that train and that `lk.save_adapter` writes."""
        return {name: getattr(self, name) for name in self.ADAPTER_WEIGHT_NAMES}

    def delta_kernel(self):
        """The update `scaling * A @ B`, in the frozen kernel's shape."""
        # Scaling A, rank-sized, costs less than scaling the kernel-sized product.
        a = self.lora_kernel_a
        scaled_a = ops.multiply(a, ops.cast(self.scaling, a.dtype))
        return ops.einsum(self.equations.a_times_b, scaled_a, self.lora_kernel_b)

    def merge(self):
        """Folds the update into the frozen kernel; `call` then skips the branch.

        A float16 or bfloat16 kernel stores `W + scaling * A @ B` rounded to its dtype, so
        `unmerge` gives `W` back within that rounding (exactly in float32).
        """
        if self.merged:
            raise ValueError(
                f"Layer '{self.name}' is already merged: call `unmerge()` before merging again."
            )
        self._check_reversible("merge")
        kernel = self.original_layer.kernel
        kernel.assign(ops.cast(self._merged_kernel(kernel), kernel.dtype))
        self.merged = True

    def unmerge(self):
        """Takes the merged update back out of the frozen kernel."""
        if not self.merged:
            raise ValueError(f"Layer '{self.name}' is not merged: there is nothing to unmerge.")
        self._check_reversible("unmerge")
        kernel = self.original_layer.kernel
        kernel.assign(ops.cast(self._unmerged_kernel(kernel), kernel.dtype))
        self.merged = False

    def _check_reversible(self, action):
        """Raises, before anything changes, if `action` could not be undone exactly.

        LoRA's merge subtracts back what it added: always reversible. Variants override.
        """

    def _merged_kernel(self, kernel):
        """The kernel that computes the adapted layer alone: `W + scaling * A @ B`."""
        kernel = widened(kernel)
        return ops.add(kernel, ops.cast(self.delta_kernel(), kernel.dtype))

    def _unmerged_kernel(self, merged_kernel):
        """The frozen kernel `W` again, from what `_merged_kernel` returned."""
        merged_kernel = widened(merged_kernel)
        return ops.subtract(merged_kernel, ops.cast(self.delta_kernel(), merged_kernel.dtype))

    def compute_output_shape(self, input_shape):
        return self.original_layer.compute_output_shape(input_shape)

    def get_build_config(self):
        # The wrapper's weights depend on the wrapped layer's input shape, which
        # the wrapped layer knows even when the wrapper itself was never called.
        return self.original_layer.get_build_config()

    def build_from_config(self, config):
        if config and not self.built:
            self.build(config["input_shape"])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "original_layer": keras.saving.serialize_keras_object(self.original_layer),
                "rank": self.rank,
                "alpha": self.alpha,
                "dropout": self.dropout,
                "rslora": self.rslora,
                "merged": self.merged,
                "a_init": self.a_init,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["original_layer"] = keras.saving.deserialize_keras_object(config["original_layer"])
        return cls(**config)
