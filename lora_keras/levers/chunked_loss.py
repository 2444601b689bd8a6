"""`ChunkedLossCausalLM`: GPT-2's causal-LM loss without the whole logits tensor."""

import keras
from keras import ops

from lora_keras.layers.adapter_routing import step_inputs


class _PerTokenLoss(keras.losses.Loss):
    """Passes per-token losses through, so Keras weighs and reduces them as it would any loss."""

    def call(self, y_true, y_pred):
        return y_pred


class ChunkedLossCausalLM(keras.Model):
    """Trains a GPT-2 backbone on next-token cross-entropy, one sequence chunk at a time.

    A `GPT2CausalLM` computes the logits of every position at once, a
    `(batch, sequence, vocabulary)` tensor (4 x 128 x 50,257 floats for GPT-2
    base), and its loss keeps their softmax for the backward pass: the largest
    activations of a training step. This model outputs the backbone's hidden
    states instead, and its `compute_loss` projects them onto the tied token
    embedding `chunk_size` positions at a time, each chunk's logits and
    cross-entropy wrapped in `keras.remat`: the backward pass recomputes them,
    so no more than one chunk's logits are needed at a time. The loss value and
    the gradients are those of `SparseCategoricalCrossentropy(from_logits=True)`
    on the whole logits, weighted and reduced by Keras the same way (sample
    weights included; `add_loss` terms are added as usual).

    `keras.remat` is `tf.recompute_grad` on TensorFlow, `jax.checkpoint` on JAX
    and `torch.utils.checkpoint` on torch, so the model trains on all three.
    Compile it without a `loss`: it computes its own.

    A backbone holding several adapters (`lk.apply_multi_lora`) takes `adapter_ids`
    in the inputs, as `MultiAdapterGPT2CausalLM` does; they stay set for the whole
    training step, so blocks that `rematerialise_blocks` recomputes in the backward
    pass use them too (`lk.adapter_sample_weight` weighs the loss per adapter).

    Args:
        backbone: a `keras_hub.models.GPT2Backbone` (its token embedding is the
            output projection, as in `GPT2CausalLM`).
        chunk_size: int. Positions per chunk; the last chunk may be shorter.
        **kwargs: standard `keras.Model` arguments such as `name`.

    Example:

    ```python
    lm = lk.load_gpt2("gpt2_tiny", weights="random")
    model = lk.ChunkedLossCausalLM(lm.backbone, chunk_size=32)
    model.compile(optimizer="adamw")
    model.fit(x, y)  # x: {"token_ids", "padding_mask"}, y: next token ids
    ```
    """

    def __init__(self, backbone, chunk_size=32, **kwargs):
        super().__init__(**kwargs)
        if int(chunk_size) != chunk_size or chunk_size < 1:
            raise ValueError(f"chunk_size must be an integer of at least 1, got {chunk_size}.")
        self.backbone = backbone
        self.chunk_size = int(chunk_size)

    def call(self, inputs, training=None):
        routing, inputs, adapter_ids = self._routing(inputs)
        if routing is None:
            return self.backbone(inputs, training=training)  # (batch, seq, hidden)
        with routing.ids_for_call(adapter_ids):
            return self.backbone(inputs, training=training)

    def train_step(self, *args, **kwargs):
        routing, _, adapter_ids = self._routing(step_inputs(args))  # set for the whole step
        if routing is None:
            return super().train_step(*args, **kwargs)
        with routing.ids_for_call(adapter_ids):
            return super().train_step(*args, **kwargs)

    def _routing(self, inputs):
        """`(routing, inputs without adapter_ids, adapter_ids)`; routing None for one adapter."""
        from lora_keras.gpt2_surgery.lookups import multi_lora_layers

        layers = multi_lora_layers(self.backbone)
        has_ids = isinstance(inputs, dict) and "adapter_ids" in inputs
        if not layers:
            if has_ids:
                raise ValueError(
                    "The inputs hold 'adapter_ids', but this backbone holds no named adapters: "
                    "drop adapter_ids, or put several adapters on it with "
                    "`lk.apply_multi_lora(model, {name: settings})` first."
                )
            return None, inputs, None
        if not has_ids:
            return None, inputs, None  # the adapters' layers say what is missing
        rest = {key: value for key, value in inputs.items() if key != "adapter_ids"}
        return next(iter(layers.values())).routing, rest, inputs["adapter_ids"]

    def compile(self, loss=None, **kwargs):
        if loss is not None:
            raise ValueError(
                "ChunkedLossCausalLM computes its own cross-entropy over sequence chunks: "
                f"compile it without `loss` (got loss={loss!r})."
            )
        super().compile(loss=_PerTokenLoss(), **kwargs)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return super().compute_loss(x, y, self.token_losses(y_pred, y), sample_weight, training)

    def token_losses(self, hidden_states, labels):
        """The cross-entropy of each position, `(batch, seq)`, computed chunk by chunk."""
        embedding = self.backbone.token_embedding
        sequence_length = hidden_states.shape[1]
        losses = []
        for start in range(0, sequence_length, self.chunk_size):
            stop = min(start + self.chunk_size, sequence_length)
            chunk_labels = labels[:, start:stop]

            def chunk_loss(chunk, chunk_labels=chunk_labels):
                logits = embedding(chunk, reverse=True)  # (batch, chunk, vocabulary)
                # In float32 whatever the compute dtype, as Keras's losses compute.
                return keras.losses.sparse_categorical_crossentropy(
                    chunk_labels, ops.cast(logits, "float32"), from_logits=True
                )

            losses.append(keras.remat(chunk_loss)(hidden_states[:, start:stop, :]))
        return ops.concatenate(losses, axis=1)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "backbone": keras.saving.serialize_keras_object(self.backbone),
                "chunk_size": self.chunk_size,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)
