"""Many LoRA adapters beside one frozen projection, one adapter per example (m-LoRA)."""

import math
import numbers

import keras
import numpy as np
from keras import ops

from lora_keras.layers.adapter_routing import AdapterRouting, check_adapter_ids
from lora_keras.layers.base_lora_layer import A_INITIALIZERS, adapter_policy, check_alpha
from lora_keras.layers.base_nf4_layer import BaseNF4Layer
from lora_keras.layers.multi_lora_equations import multi_lora_equations


def adapter_scaling(adapter):
    """`alpha / rank`, or `alpha / sqrt(rank)` for rank-stabilized LoRA."""
    rank = adapter["rank"]
    return adapter["alpha"] / (math.sqrt(rank) if adapter["rslora"] else rank)


def check_adapters(adapters):
    """`adapters` as a list of `{"name", "rank", "alpha", "rslora"}`, or a ValueError."""
    adapters = list(adapters)
    if not adapters:
        raise ValueError("Multi-LoRA needs at least one adapter, got none.")
    checked = []
    for adapter in adapters:
        name, rank = adapter.get("name"), adapter.get("rank", 4)
        if not isinstance(name, str) or not name:
            raise ValueError(f"Every adapter needs a non-empty string name, got {name!r}.")
        if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or rank < 1:
            raise ValueError(
                f"Adapter {name!r}: rank must be an integer of at least 1, got rank={rank!r}."
            )
        alpha = check_alpha(adapter.get("alpha", 32.0), f"Adapter {name!r}:")
        checked.append(
            {"name": name, "rank": int(rank), "alpha": alpha, "rslora": bool(adapter.get("rslora"))}
        )
    names = [a["name"] for a in checked]
    if len(set(names)) != len(names):
        raise ValueError(f"Adapter names must not repeat, got {names}.")
    return checked


class BaseMultiLoraLayer(keras.layers.Layer):
    """Wraps a frozen projection with several LoRA adapters, one chosen per example.

    Each example `i` names its adapter `k = adapter_ids[i]`, and gets
    `activation(x W + b + scaling[k] * ((x A[k]) * mask[k]) B[k])`. The frozen
    projection runs once for the whole batch; A and B are stacked over the
    adapters and taken at each example's id, so the low-rank branch costs what
    one adapter of the largest rank costs. The gradient of a taken weight
    lands on the rows taken: an adapter with no example in a batch gets exactly
    zero gradient, and each adapter's weights see only its own examples.

    Adapters of different ranks share one padded rank `R = max(ranks)`: an
    adapter of rank `r` owns columns `[0, r)` of its A and rows `[0, r)` of its
    B. The padding starts at zero in both A and B, and `adapter_scales` (its
    scaling on the owned columns, exactly 0 on the padding, not trainable)
    multiplies the rank-sized intermediate: whatever the padding holds, it
    changes no output and gets exactly zero gradient, so it stays zero under any
    optimizer (AdamW's decay of zero is zero).

    Which adapter each example uses comes from `adapter_ids` if given, else
    from the `AdapterRouting` the layer shares with the others of its model
    (set by `MultiAdapterGPT2CausalLM` for the length of a call).

    Args:
        original_layer: a built `keras.layers.EinsumDense` or `keras.layers.Dense`
            (or an NF4 one: `lk.quantize_nf4`).
        adapters: a list of `{"name": str, "rank": int, "alpha": float,
            "rslora": bool}`, in the order of their ids. Rank defaults to 4,
            alpha to 32.0, rslora to False.
        dropout: float. Dropout on the low-rank branch's input, shared.
        a_init: how each adapter's A starts: "lora" or "he_uniform" (see
            `lk.BaseLoraLayer`); only its own `rank` columns.
        max_rank: int, the padded rank shared by the adapters: at least the
            largest rank (the default), so an adapter loaded later may be larger.
        **kwargs: standard `keras.layers.Layer` arguments such as `name`.
    """

    variant = "lora"
    ADAPTER_WEIGHT_NAMES = ("lora_kernel_a", "lora_kernel_b")

    def __init__(
        self, original_layer, adapters=(), dropout=0.0, a_init="lora", max_rank=None, **kwargs
    ):
        kwargs.setdefault("name", f"{original_layer.name}_multi_lora")
        kwargs.setdefault("dtype", adapter_policy(original_layer.dtype_policy))
        super().__init__(**kwargs)
        if isinstance(original_layer, BaseMultiLoraLayer) or hasattr(
            original_layer, "lora_kernel_a"
        ):
            raise ValueError(
                f"Layer '{original_layer.name}' already has LoRA adapters. Wrap a plain "
                "projection: build the model again, or `lk.unwrap_lora(model)` first."
            )
        if getattr(original_layer, "lora_enabled", False):
            raise ValueError(
                f"Layer '{original_layer.name}' has Keras's built-in LoRA enabled "
                "(`enable_lora`). Build the model again without `enable_lora`."
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got dropout={dropout}.")
        if a_init not in A_INITIALIZERS:
            raise ValueError(f"Unknown a_init {a_init!r}: use one of {', '.join(A_INITIALIZERS)}.")
        self.adapters = check_adapters(adapters)
        self.original_layer = original_layer
        self.dropout = float(dropout)
        self.a_init = a_init
        largest = max(a["rank"] for a in self.adapters)
        if max_rank is not None and (int(max_rank) != max_rank or max_rank < largest):
            raise ValueError(
                f"max_rank must be an integer of at least the largest rank ({largest}), got "
                f"max_rank={max_rank!r}."
            )
        self.max_rank = largest if max_rank is None else int(max_rank)
        self.dropout_layer = (
            keras.layers.Dropout(self.dropout, name="lora_dropout") if self.dropout else None
        )
        self.routing = AdapterRouting(self.adapter_names)
        if original_layer.built:
            self.build(None)
        # Frozen last, once every check has passed: a refused wrapper changes nothing.
        self.original_layer.trainable = False

    @property
    def adapter_names(self):
        return [a["name"] for a in self.adapters]

    def _base_equation(self):
        """The wrapped layer's `inputs, kernel -> outputs` einsum equation."""
        raise NotImplementedError

    def _project(self, inputs, kernel):
        return ops.einsum(self.equations.single.base, inputs, kernel)

    def _frozen_projection(self, inputs):
        """`inputs @ W` for the frozen kernel `W`, without bias or activation."""
        if isinstance(self.original_layer, BaseNF4Layer):
            return self.original_layer.project(inputs)
        return self._project(inputs, self.original_layer.kernel)

    def join_routing(self, routing):
        """Reads adapter ids from `routing`, shared with the model's other multi-LoRA layers."""
        self.routing = routing

    def build(self, input_shape):
        if not self.original_layer.built:
            self.original_layer.build(input_shape)
        if self.original_layer.kernel_constraint is not None:
            raise ValueError(
                f"Layer '{self.original_layer.name}' has a kernel constraint, which "
                "LoRA cannot respect: remove `kernel_constraint` before applying LoRA."
            )
        kernel_shape = tuple(self.original_layer.kernel.shape)
        self.equations = multi_lora_equations(self._base_equation(), kernel_shape)
        input_dims = self.equations.single.input_dims
        output_dims = self.equations.single.output_dims
        smallest = min(math.prod(input_dims), math.prod(output_dims))
        for adapter in self.adapters:
            if adapter["rank"] > smallest:
                raise ValueError(
                    f"Adapter {adapter['name']!r}: rank {adapter['rank']} is larger than the "
                    f"smallest dimension ({smallest}) of layer '{self.original_layer.name}' "
                    f"with kernel shape {kernel_shape}: choose rank <= {smallest}."
                )
        count, rank = len(self.adapters), self.max_rank
        self.lora_kernel_a = self.add_weight(
            name="lora_kernel_a", shape=(count, *input_dims, rank), initializer=self._init_a
        )
        self.lora_kernel_b = self.add_weight(
            name="lora_kernel_b", shape=(count, rank, *output_dims), initializer="zeros"
        )
        self.adapter_scales = self.add_weight(
            name="adapter_scales",
            shape=(count, rank),
            initializer=lambda shape, dtype: ops.convert_to_tensor(self._scales(), dtype),
            trainable=False,
        )
        self.built = True

    def _init_a(self, shape, dtype):
        """Each adapter's A as a single LoRA's of its rank, zero on the padded columns."""
        input_dims, blocks = shape[1:-1], []
        for adapter in self.adapters:
            own = A_INITIALIZERS[self.a_init]()((*input_dims, adapter["rank"]), dtype)
            padding = [(0, 0)] * len(input_dims) + [(0, self.max_rank - adapter["rank"])]
            blocks.append(ops.pad(own, padding))
        return ops.stack(blocks)

    def _scales(self):
        """`(adapters, max_rank)`: each adapter's scaling on its own columns, 0 on the padding."""
        scales = np.zeros((len(self.adapters), self.max_rank), "float32")
        for k, adapter in enumerate(self.adapters):
            scales[k, : adapter["rank"]] = adapter_scaling(adapter)
        return scales

    def _ids(self, adapter_ids):
        ids = self.routing.adapter_ids if adapter_ids is None else adapter_ids
        if ids is None:
            raise ValueError(
                f"Layer '{self.name}' holds {len(self.adapters)} adapters "
                f"({', '.join(self.adapter_names)}) and needs to know which one each example "
                "uses: pass `adapter_ids` (int32, one per example) to the model's inputs."
            )
        if adapter_ids is not None:
            check_adapter_ids(adapter_ids, self.adapter_names)
        return ops.reshape(ops.cast(ids, "int32"), (-1,))  # (batch,)

    def call(self, inputs, adapter_ids=None, training=None):
        ids = self._ids(adapter_ids)
        layer = self.original_layer
        outputs = self._frozen_projection(inputs)  # once for the whole batch
        lora_inputs = inputs
        if self.dropout_layer is not None and training:
            lora_inputs = self.dropout_layer(inputs, training=training)
        a = self._per_example(self.lora_kernel_a, ids)  # (batch, *input_dims, rank)
        low_rank = ops.einsum(self.equations.input_times_a, lora_inputs, a)  # (batch, ..., rank)
        scales = ops.take(self.adapter_scales, ids, axis=0)  # (batch, rank)
        middle = (1,) * (len(low_rank.shape) - 2)
        scales = ops.reshape(scales, (-1, *middle, self.max_rank))
        low_rank = ops.multiply(low_rank, ops.cast(scales, low_rank.dtype))
        b = self._per_example(self.lora_kernel_b, ids)  # (batch, rank, *output_dims)
        outputs = ops.add(outputs, ops.einsum(self.equations.low_rank_times_b, low_rank, b))
        if layer.bias is not None:
            outputs = ops.add(outputs, layer.bias)
        if layer.activation is not None:
            outputs = layer.activation(outputs)
        return outputs

    def _per_example(self, variable, ids):
        """`variable[ids]`, as a one-hot product so that the gradient is a dense tensor.

        TensorFlow's gather gives the gradient as IndexedSlices, one slice per example;
        Adam's sparse update then squares each slice apart (`sum g_i^2`, not `(sum g_i)^2`)
        and steps an adapter differently from its separate run. The product is exact (ones
        and zeros) and costs `batch * adapters * size`, small beside the frozen matmul.
        """
        flat = ops.reshape(variable, (len(self.adapters), -1))  # (adapters, size)
        one_hot = ops.one_hot(ids, len(self.adapters), dtype=flat.dtype)  # (batch, adapters)
        return ops.reshape(ops.matmul(one_hot, flat), (-1, *variable.shape[1:]))

    def adapter_weights(self):
        """`{name: variable}` of the stacked weights that train."""
        return {name: getattr(self, name) for name in self.ADAPTER_WEIGHT_NAMES}

    def get_adapter(self, index):
        """One adapter's `{"lora_kernel_a", "lora_kernel_b"}` at its own rank, as NumPy."""
        rank = self.adapters[index]["rank"]
        a = np.asarray(ops.convert_to_numpy(self.lora_kernel_a))[index, ..., :rank]
        b = np.asarray(ops.convert_to_numpy(self.lora_kernel_b))[index, :rank]
        return {"lora_kernel_a": a, "lora_kernel_b": b}

    def set_adapter(self, index, weights, rank, alpha, rslora=False):
        """Puts one adapter's factors (of `rank`, at most `max_rank`) at `index`, zero-padded.

        The adapter takes the given rank and scaling; the padding is set to zero.
        """
        adapter = check_adapters([{**self.adapters[index], "rank": rank, "alpha": alpha}])[0]
        adapter["rslora"] = bool(rslora)
        if rank > self.max_rank:
            raise ValueError(
                f"Adapter {adapter['name']!r} of rank {rank} does not fit layer '{self.name}', "
                f"whose adapters are padded to rank {self.max_rank}."
            )
        a = np.array(ops.convert_to_numpy(self.lora_kernel_a))
        b = np.array(ops.convert_to_numpy(self.lora_kernel_b))
        a[index], b[index] = 0.0, 0.0
        a[index, ..., :rank] = weights["lora_kernel_a"]
        b[index, :rank] = weights["lora_kernel_b"]
        self.adapters[index] = adapter
        self.lora_kernel_a.assign(a)
        self.lora_kernel_b.assign(b)
        self.adapter_scales.assign(self._scales())

    def compute_output_shape(self, input_shape):
        return self.original_layer.compute_output_shape(input_shape)

    def get_build_config(self):
        return self.original_layer.get_build_config()

    def build_from_config(self, config):
        if config and not self.built:
            self.build(config["input_shape"])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "original_layer": keras.saving.serialize_keras_object(self.original_layer),
                "adapters": [dict(a) for a in self.adapters],
                "dropout": self.dropout,
                "a_init": self.a_init,
                "max_rank": self.max_rank,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["original_layer"] = keras.saving.deserialize_keras_object(config["original_layer"])
        return cls(**config)
