"""The run of a sweep that trains its ranks together: one frozen GPT-2, one LoRA adapter a rank.

`train_one` trains it as any other run, with these pieces in place of a mode's: the adapters
(`set_up_together`), each training batch once per adapter (`together_batches`), each adapter's
loss of every step (`adapter_loss_metrics`, `AdapterLossHistory`) and its held-out losses
(`evaluate_adapters`). Each adapter sees the batches its own run sees, in a block of rows of
its own, weighted so that the step's loss is the sum of each adapter's loss in its own run:
each adapter's gradient, and so its steps, are its own run's (`RunSpec.together` says what
both sides share for that: no dropout, no gradient clipping, A seeded by rank).
"""

import keras
import numpy as np
from keras import ops


def adapter_name(rank):
    """The name of the adapter of rank `rank` (its run alone is `lora_rank_<rank>`)."""
    return f"rank_{rank}"


def set_up_together(lm, spec, run):
    """Puts one adapter a rank of `run.together` on `lm`, the spec's alpha and targets for all.

    Returns:
        The adapters' names, in the order of their ids.
    """
    from lora_keras.multi_lora import apply_multi_lora

    adapters = {adapter_name(rank): {"rank": rank, "alpha": spec.alpha} for rank in run.together}
    apply_multi_lora(lm, adapters, targets=tuple(spec.targets))
    return list(adapters)


def together_batches(train_ds, count):
    """Each batch of `train_ds` repeated for `count` adapters: `count` blocks of rows.

    Keras divides a batch's weighted loss by all its tokens, counted or not, so an adapter's
    loss in its own run is its weighted sum over its own batch's tokens. Each block's weights
    are its own run's times the batch's rows over the block's (`adapter_sample_weight` of a mask
    that counts every token): the together loss is then the sum of the adapters' own losses.

    Args:
        train_ds: `make_lm_datasets`'s batches `({"token_ids", "padding_mask"}, y, weights)`.
        count: the number of adapters; block `k` of every batch has `adapter_ids` k.

    Returns:
        The batches, `count` times larger, as `batch_arrays` gives them.
    """
    from lora_keras.multi_lora import adapter_sample_weight
    from lora_keras.multi_lora.mixed_batches import side_by_side

    def weigh(ids, own):  # (rows, seq): the own run's weights, scaled by rows over the block's
        return own * adapter_sample_weight(ids, np.ones((len(ids), 1), "float32"))

    batches = list(train_ds)  # read once: every block of a step holds the same batch
    return side_by_side([(k, batches) for k in range(count)], weigh)


class AdapterLoss(keras.metrics.Metric):
    """One adapter's loss in the last step, from its block of rows of a `together_batches` batch.

    The step's loss as its own run computes it: the block's weighted cross-entropy over the
    block's tokens (its weights, scaled by the number of adapters, scaled back). Not a running
    mean: each step's value replaces the last.
    """

    def __init__(self, index, count, adapter, **kwargs):
        kwargs.setdefault("name", f"loss_{adapter}")
        super().__init__(**kwargs)
        self.index, self.count, self.adapter = index, count, adapter
        self.value = self.add_variable(shape=(), initializer="zeros", name="value")

    def update_state(self, y_true, y_pred, sample_weight=None):
        def own(values):  # this adapter's block of rows
            return ops.reshape(values, (self.count, -1, *values.shape[1:]))[self.index]

        logits = ops.cast(own(y_pred), "float32")  # (rows, seq, vocabulary)
        losses = ops.sparse_categorical_crossentropy(own(y_true), logits, from_logits=True)
        weights = ops.ones_like(losses) if sample_weight is None else own(sample_weight)
        total = ops.sum(losses * ops.cast(weights, "float32"))
        self.value.assign(total / ops.cast(self.count * ops.size(losses), "float32"))

    def result(self):
        return self.value

    def reset_state(self):
        self.value.assign(0.0)

    def get_config(self):
        config = super().get_config()
        config.update(index=self.index, count=self.count, adapter=self.adapter)
        return config


def adapter_loss_metrics(names):
    """One `AdapterLoss` an adapter, for `compile(weighted_metrics=...)` (they read weights)."""
    return [AdapterLoss(index, len(names), name) for index, name in enumerate(names)]


class AdapterLossHistory(keras.callbacks.Callback):
    """`losses[name]`: each adapter's loss of every step, from its `AdapterLoss` metric."""

    def __init__(self, names):
        super().__init__()
        self.names = list(names)
        self.losses = {name: [] for name in self.names}

    def on_train_begin(self, logs=None):
        self.losses = {name: [] for name in self.names}

    def on_train_batch_end(self, batch, logs=None):
        for name in self.names:
            self.losses[name].append(float(logs[f"loss_{name}"]))


def evaluate_adapters(evaluate, names, before=True):
    """`({adapter: evaluate(adapter=...)}, seconds)`: each adapter's held-out losses.

    Before training every B is zero and each adapter computes the frozen model's outputs: one
    evaluation (the first adapter's) stands for all of them.
    """
    if before:
        results, seconds = evaluate(adapter=names[0])
        return dict.fromkeys(names, results), seconds
    results, total = {}, 0.0
    for name in names:
        results[name], seconds = evaluate(adapter=name)
        total += seconds
    return results, total
