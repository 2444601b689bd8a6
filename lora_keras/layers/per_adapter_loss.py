"""`PerAdapterLoss`: each adapter's mean next-token loss on its own tokens, as a Keras metric."""

import keras
from keras import ops


class PerAdapterLoss(keras.metrics.Metric):
    """Each adapter's mean next-token cross-entropy over its own counted tokens.

    A model holding several adapters (`lk.apply_multi_lora`) trains them all in
    one `fit`, on batches that mix their examples; the batch's `loss` mixes them
    too. This metric keeps, for each adapter, the weighted sum of its tokens'
    cross-entropy and of their weights (two `(adapters,)` variables, so it runs
    on TensorFlow, JAX and torch alike, and Keras resets it each epoch), and
    reports `{"loss_NAME": sum / weight}` for each adapter. A batch without an
    adapter's examples adds nothing to it; an adapter with no counted token at
    all reports 0, never NaN.

    With the weights of `lk.adapter_sample_weight` (constant within an adapter)
    or 0/1 masks, each value is the plain mean over that adapter's counted tokens,
    as `lk.adapter_losses` computes it after the fact. `MultiAdapterGPT2CausalLM`
    holds one and updates it in `compute_metrics`, so `fit` and `evaluate` log
    `loss_NAME` (and `val_loss_NAME`) for every adapter.

    Args:
        adapter_names: the adapters' names, in the order of their ids.
        name: the metric's name.
        **kwargs: standard `keras.metrics.Metric` arguments such as `dtype`.

    Example:
    ```python
    metric = lk.PerAdapterLoss(["weather", "recipe"])
    metric.update_state(adapter_ids, y, logits, sample_weight=padding_mask)
    metric.result()  # {"loss_weather": ..., "loss_recipe": ...}
    ```
    """

    def __init__(self, adapter_names, name="per_adapter_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.adapter_names = list(adapter_names)
        count = len(self.adapter_names)
        self.loss_sums = self.add_variable((count,), "zeros", name="loss_sums")
        self.weight_sums = self.add_variable((count,), "zeros", name="weight_sums")

    def update_state(self, adapter_ids, y_true, y_pred, sample_weight=None):
        """Adds one batch: `adapter_ids` `(batch,)`, `y_true` `(batch, seq)` token ids,
        `y_pred` `(batch, seq, vocabulary)` logits, `sample_weight` `(batch, seq)` or None
        (every token counts)."""
        losses = keras.losses.sparse_categorical_crossentropy(
            y_true, ops.cast(y_pred, "float32"), from_logits=True
        )  # (batch, seq), in float32 whatever the compute dtype, as Keras's losses compute
        losses = ops.cast(losses, self.dtype)
        if sample_weight is None:
            weights = ops.ones_like(losses)
        else:
            weights = ops.broadcast_to(ops.cast(sample_weight, self.dtype), ops.shape(losses))
        flat = (ops.shape(losses)[0], -1)
        per_sequence = ops.sum(ops.reshape(losses * weights, flat), axis=1)  # (batch,)
        counted = ops.sum(ops.reshape(weights, flat), axis=1)  # (batch,)
        ids = ops.reshape(ops.cast(adapter_ids, "int32"), (-1,))
        owner = ops.one_hot(ids, len(self.adapter_names), dtype=self.dtype)  # (batch, adapters)
        self.loss_sums.assign_add(ops.sum(owner * per_sequence[:, None], axis=0))
        self.weight_sums.assign_add(ops.sum(owner * counted[:, None], axis=0))

    def result(self):
        means = ops.divide_no_nan(self.loss_sums, self.weight_sums)  # 0 where nothing counted
        return {f"loss_{name}": means[k] for k, name in enumerate(self.adapter_names)}

    def get_config(self):
        return {**super().get_config(), "adapter_names": self.adapter_names}
