"""MixLoRA: a routed mixture of LoRA experts sharing one frozen feed-forward block."""

import contextlib
import functools

import keras
from keras import ops

from lora_keras.layers import dora_math, mixlora_math
from lora_keras.layers.base_lora_layer import adapter_policy, check_alpha


@keras.saving.register_keras_serializable(package="lora_keras")
class MixLoraFeedForward(keras.layers.Layer):
    """A frozen `Dense -> Dense` feed-forward block turned into a top-k mixture of LoRA experts.

    Expert `e` computes `out_e(act(in_e(x)))`, where `in_e` and `out_e` are the
    frozen layers plus expert `e`'s LoRA updates (`A` He-uniform, `B` zero, so
    every expert equals the frozen block at first). A float32 router without
    bias picks `top_k` experts a token; the output is their sum weighted by the
    softmax probabilities renormalised over the chosen. The frozen matmuls run
    once for all experts (see `mixlora_math.top_k_mixture`). A load-balance loss
    `aux_loss_coef * E * sum_i f_i p_i` over the non-padding tokens is added with
    `add_loss` (see `mixlora_math.load_balance`): by default once per model, over
    the routers of all its blocks together, as the MixLoRA reference does
    (`aux_loss_scope="model"`; the blocks of a model share a `BalancePool`), or
    once per block (`"block"`). A training call adds the routed choices of each
    expert to `expert_counts` (see `lk.expert_loads`).

    Args:
        intermediate_dense: the built frozen `Dense` into the intermediate size,
            with its activation (GPT-2's `ffn_in`).
        output_dense: the built frozen `Dense` back to the hidden size (`ffn_out`).
        num_experts: int, at least 1.
        top_k: int, experts a token goes to, from 1 to `num_experts`.
        rank: int, the rank of every expert's updates.
        alpha: float, updates are scaled by `alpha / rank`.
        aux_loss_coef: float, the weight of the load-balance loss (the MixLoRA
            reference's 0.001).
        aux_loss_scope: "model" (one loss over every block's routing, the MixLoRA
            reference's and Mixtral's) or "block" (one a block, divided by `top_k`:
            lora_keras 0.1.0's).
        dropout: float, dropout on the LoRA branches' inputs.
        **kwargs: standard `keras.layers.Layer` arguments such as `name`.

    Example:
    ```python
    ffn_in = keras.layers.Dense(3072, activation="gelu")
    ffn_in.build((None, None, 768))
    ffn_out = keras.layers.Dense(768)
    ffn_out.build((None, None, 3072))
    block = lk.MixLoraFeedForward(ffn_in, ffn_out, num_experts=8, top_k=2, rank=8)
    block(np.ones((1, 8, 768))).shape  # (1, 8, 768)
    ```
    """

    def __init__(
        self,
        intermediate_dense,
        output_dense,
        num_experts=8,
        top_k=2,
        rank=8,
        alpha=16.0,
        aux_loss_coef=0.001,
        dropout=0.0,
        aux_loss_scope="model",
        **kwargs,
    ):
        kwargs.setdefault("name", "mixlora_feedforward")
        # Experts stored in float32 beside a half-precision block, as LoRA's adapters are.
        kwargs.setdefault("dtype", adapter_policy(intermediate_dense.dtype_policy))
        super().__init__(**kwargs)
        if int(num_experts) != num_experts or num_experts < 1:
            raise ValueError(
                f"MixLoRA needs at least 1 expert, got num_experts={num_experts}. The paper uses 8."
            )
        if int(top_k) != top_k or not 1 <= top_k <= num_experts:
            raise ValueError(
                f"top_k must be an integer from 1 to num_experts={num_experts}, got top_k={top_k}: "
                "a token cannot go to more experts than there are."
            )
        if int(rank) != rank or rank < 1:
            raise ValueError(f"MixLoRA rank must be an integer of at least 1, got rank={rank}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MixLoRA dropout must be in [0, 1), got dropout={dropout}.")
        self.alpha = check_alpha(alpha, "MixLoRA")
        if not 0.0 <= aux_loss_coef < float("inf"):
            raise ValueError(
                "MixLoRA aux_loss_coef must be a finite number of at least 0 (0 turns the "
                f"load-balance loss off), got aux_loss_coef={aux_loss_coef!r}."
            )
        if aux_loss_scope not in mixlora_math.BALANCE_SCOPES:
            raise ValueError(
                f"Unknown aux_loss_scope {aux_loss_scope!r}: use one of "
                f"{', '.join(mixlora_math.BALANCE_SCOPES)}."
            )
        for role, layer in (("intermediate", intermediate_dense), ("output", output_dense)):
            if not isinstance(layer, keras.layers.Dense):
                raise ValueError(
                    f"The {role} layer of a MixLoRA block must be a plain keras.layers.Dense, "
                    f"got {type(layer).__name__}. Remove other adapters from the feed-forward "
                    "block first."
                )
        self.intermediate_dense = intermediate_dense
        self.output_dense = output_dense
        self.num_experts = int(num_experts)
        self.top_k = int(top_k)
        self.rank = int(rank)
        self.aux_loss_coef = float(aux_loss_coef)
        self.dropout = float(dropout)
        self.aux_loss_scope = aux_loss_scope
        self.scaling = self.alpha / self.rank
        # A block alone pools its own routing; `apply_mixlora` gives a model's blocks one pool.
        self.join_balance_pool(BalancePool(size=1), position=0)
        self.router = keras.layers.Dense(
            self.num_experts,
            use_bias=False,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.02),
            dtype="float32",  # routing decisions stay float32 under mixed precision
            name="router",
        )
        self.dropout_layer = (
            keras.layers.Dropout(self.dropout, name="lora_dropout") if self.dropout else None
        )
        self._padding_mask = None
        if intermediate_dense.built and output_dense.built:
            self.build(None)
        # Frozen last, once every check has passed: a refused block changes nothing.
        self.intermediate_dense.trainable = False
        self.output_dense.trainable = False

    def build(self, input_shape):
        hidden, intermediate = (int(d) for d in self.intermediate_dense.kernel.shape)
        smallest = min(hidden, intermediate)
        if self.rank > smallest:
            raise ValueError(
                f"MixLoRA rank {self.rank} is larger than the smallest dimension ({smallest}) "
                f"of the feed-forward block ({hidden} -> {intermediate}): choose rank <= "
                f"{smallest}."
            )
        self.router.build((None, hidden))
        experts, rank = self.num_experts, self.rank
        # He-uniform for each (fan_in, rank) matrix: Keras counts the expert axis into
        # fan_in for a stacked (E, fan_in, rank) kernel, so scale 2 becomes 2 * E.
        he_per_expert = keras.initializers.VarianceScaling(2.0 * experts, "fan_in", "uniform")
        self.expert_in_a = self.add_weight(
            name="expert_in_a", shape=(experts, hidden, rank), initializer=he_per_expert
        )
        self.expert_in_b = self.add_weight(
            name="expert_in_b", shape=(experts, rank, intermediate), initializer="zeros"
        )
        self.expert_out_a = self.add_weight(
            name="expert_out_a", shape=(experts, intermediate, rank), initializer=he_per_expert
        )
        self.expert_out_b = self.add_weight(
            name="expert_out_b", shape=(experts, rank, hidden), initializer="zeros"
        )
        self.expert_counts = self.add_weight(
            name="expert_counts",
            shape=(experts,),
            initializer="zeros",
            dtype="float32",
            trainable=False,
            autocast=False,  # read in float32 under mixed precision: bfloat16 rounds counts > 256
        )
        self._build_variant()
        self.built = True

    def _build_variant(self):
        """Weights a variant adds to the experts (none for LoRA)."""

    def _expert_scales(self, experts):
        """Per-expert output-column scales `(in (E, I), out (E, D))`, or None for LoRA."""
        return None

    def adapter_weights(self):
        """`{name: variable}` of the weights that train (the router and the experts) and that
        `lk.save_adapter` writes; as a LoRA layer's. Names are unique within a block."""
        variables = [self.router.kernel, *self.expert_factors(), *self._variant_weights()]
        return {variable.name: variable for variable in variables}

    def _variant_weights(self):
        """Weights a variant adds to the experts, which train too (none for LoRA)."""
        return []

    def join_balance_pool(self, pool, position):
        """Pools this block's routing with the other blocks of `pool`, as block `position`."""
        self._balance_pool, self._pool_position = pool, position

    def expert_factors(self):
        """Every expert's LoRA factors, stacked along a first axis of `num_experts`."""
        return mixlora_math.ExpertFactors(
            self.expert_in_a, self.expert_in_b, self.expert_out_a, self.expert_out_b
        )

    @contextlib.contextmanager
    def padding_mask_for_call(self, padding_mask):
        """Within this context, calls skip the tokens where `padding_mask` is 0 in the statistics.

        KerasHub's decoder calls its feed-forward layers with the hidden states
        only; `gpt2_surgery` hands the decoder's padding mask over this way.
        """
        self._padding_mask = padding_mask
        try:
            yield
        finally:
            self._padding_mask = None

    def call(self, inputs, padding_mask=None, training=None):
        if padding_mask is None:
            padding_mask = self._padding_mask
        hidden = ops.shape(inputs)[-1]
        x = ops.reshape(inputs, (-1, hidden))  # (N, D), N = every token of the batch
        mask = (
            ops.ones((ops.shape(x)[0],), "float32")
            if padding_mask is None
            else ops.reshape(ops.cast(padding_mask, "float32"), (-1,))
        )
        probabilities, weights, indices = mixlora_math.top_k_routing(self.router(x), self.top_k)
        own = mixlora_math.routing_statistics(probabilities, indices, mask)
        statistics = own
        if self.aux_loss_scope == "model":
            statistics = self._balance_pool.pooled(self._pool_position, own)
        if statistics is not None:  # every block of the pool has routed: the loss is due
            balance = mixlora_math.load_balance(statistics, self.top_k, self.aux_loss_scope)
            self.add_loss(self.aux_loss_coef * balance)
        if training:
            self.expert_counts.assign_add(own.counts)
        dense_in, dense_out = self.intermediate_dense, self.output_dense
        frozen = mixlora_math.FrozenFeedForward(
            dense_in.kernel, dense_in.bias, dense_out.kernel, dense_out.bias, dense_in.activation
        )
        experts = self.expert_factors()
        dropout = None
        if self.dropout_layer is not None:

            def dropout(t):
                return self.dropout_layer(t, training=training)

        outputs = mixlora_math.top_k_mixture(
            x,
            ops.cast(weights, x.dtype),
            indices,
            frozen,
            experts,
            self.scaling,
            scales=self._expert_scales(experts),
            dropout=dropout,
        )
        return ops.reshape(outputs, ops.shape(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_build_config(self):
        # The weights depend only on the frozen layers, which know their shapes.
        return self.intermediate_dense.get_build_config()

    def build_from_config(self, config):
        if config and not self.built:
            self.build(config["input_shape"])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "intermediate_dense": keras.saving.serialize_keras_object(self.intermediate_dense),
                "output_dense": keras.saving.serialize_keras_object(self.output_dense),
                "num_experts": self.num_experts,
                "top_k": self.top_k,
                "rank": self.rank,
                "alpha": self.alpha,
                "aux_loss_coef": self.aux_loss_coef,
                "dropout": self.dropout,
                "aux_loss_scope": self.aux_loss_scope,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.setdefault("aux_loss_scope", "block")  # what configs of lora_keras 0.1.0 did
        for key in ("intermediate_dense", "output_dense"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


@keras.saving.register_keras_serializable(package="lora_keras")
class MixDoraFeedForward(MixLoraFeedForward):
    """MixDoRA: `MixLoraFeedForward` whose experts are DoRA updates of the shared kernels.

    Expert `e`'s kernels are `m_e * (W + s A_e B_e) / ||W + s A_e B_e||`, the
    norm over the input axis and detached, with its own trainable magnitudes
    `m_e` (one a output unit, starting at `||W||`, so the block starts equal to
    the frozen one). The input side still shares `x W_in`; the output side
    scales each expert's columns differently, so its frozen product runs once
    a chosen expert (`top_k` times) instead of once, and the column norms cost
    about `E r D I` multiply-adds a step for each kernel.

    Args: see `MixLoraFeedForward`.

    Example:
    ```python
    block = lk.MixDoraFeedForward(ffn_in, ffn_out, num_experts=8, top_k=2, rank=8)
    ```
    """

    def _build_variant(self):
        experts = self.num_experts

        def kernel_norms(dense):
            def initializer(shape, dtype=None):
                norms = dora_math.column_norm(dense.kernel, num_input_axes=1)
                return ops.cast(ops.tile(norms[None], (experts, 1)), dtype)

            return initializer

        intermediate = self.intermediate_dense.kernel.shape[1]
        hidden = self.output_dense.kernel.shape[1]
        self.expert_in_magnitude = self.add_weight(
            name="expert_in_magnitude",
            shape=(experts, intermediate),
            initializer=kernel_norms(self.intermediate_dense),
        )
        self.expert_out_magnitude = self.add_weight(
            name="expert_out_magnitude",
            shape=(experts, hidden),
            initializer=kernel_norms(self.output_dense),
        )

    def _variant_weights(self):
        return [self.expert_in_magnitude, self.expert_out_magnitude]

    def _expert_scales(self, experts):
        norms_in = mixlora_math.dora_column_norms(
            self.intermediate_dense.kernel, experts.in_a, experts.in_b, self.scaling
        )
        norms_out = mixlora_math.dora_column_norms(
            self.output_dense.kernel, experts.out_a, experts.out_b, self.scaling
        )
        dtype = self.compute_dtype
        return (
            dora_math.magnitude_scale(self.expert_in_magnitude, ops.cast(norms_in, dtype)),
            dora_math.magnitude_scale(self.expert_out_magnitude, ops.cast(norms_out, dtype)),
        )


class BalancePool:
    """The routing statistics of one model's MixLoRA blocks, pooled over one forward pass.

    With `aux_loss_scope="model"` the load-balance loss is one term over every block's
    routing together (the MixLoRA reference concatenates all layers' router logits), so no
    block can add it alone. The blocks run in order within one call: each hands its
    statistics here, and the last receives their sum and adds the loss. Tensors are held
    only from the first block of a call to the last.
    """

    def __init__(self, size):
        self.size = size
        self._statistics = []

    def pooled(self, position, statistics):
        """Every block's statistics summed when block `position` is the last, else None."""
        if position == 0 or position != len(self._statistics):
            self._statistics = []  # a new call (or blocks called out of order: nothing pooled)
        if position != len(self._statistics):
            return None
        self._statistics.append(statistics)
        if position < self.size - 1:
            return None
        parts, self._statistics = zip(*self._statistics, strict=True), []
        return mixlora_math.RoutingStatistics(*(functools.reduce(ops.add, p) for p in parts))
