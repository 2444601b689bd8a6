"""Per-adapter losses of a batch of mixed adapters."""

import numpy as np
from keras import ops

from lora_keras.multi_lora.apply import adapter_names


def adapter_sample_weight(adapter_ids, padding_mask):
    """Token weights that make a batch's loss the sum of each adapter's own mean loss.

    Keras averages `weight * loss` over every token of the batch; with these weights
    (`N / n_k` on the `n_k` counted tokens of adapter `k`, `N` the batch's token count) the
    total is `sum_k mean_k`, so each adapter's gradient is the one its separate run on the
    same examples gets, however many examples the others have, when those examples hold no
    padding. (Keras divides a batch's weighted loss by all its tokens, padding included: a
    separate run on padded examples takes its mean times its share of counted tokens.)
    Compute them per batch.

    Args:
        adapter_ids: `(batch,)` ints.
        padding_mask: `(batch, seq)`, 1 (or True) where a token counts.

    Returns:
        `(batch, seq)` float32, for `fit(..., sample_weight=...)` or `train_on_batch`.
    """
    ids = np.asarray(adapter_ids).reshape(-1)
    mask = np.asarray(padding_mask, dtype="float32")
    per_sequence = mask.sum(axis=1)
    counts = {k: per_sequence[ids == k].sum() for k in np.unique(ids)}
    scale = np.array([mask.size / counts[k] if counts[k] else 0.0 for k in ids], "float32")
    return mask * scale[:, None]


def adapter_losses(model, x, y, padding_mask=None):
    """Each adapter's mean next-token cross-entropy on its own sequences of `(x, y)`.

    The same value `fit` and `evaluate` log as `loss_NAME` (`lk.PerAdapterLoss`), computed
    here after the fact, in float64 NumPy, on one batch.

    Args:
        model: a `GPT2CausalLM` holding several adapters.
        x: a dict of `token_ids`, `padding_mask`, `adapter_ids`.
        y: `(batch, seq)` target token ids.
        padding_mask: which targets count; defaults to `x["padding_mask"]`.

    Returns:
        `{name: loss}` for each adapter with at least one counted token.
    """
    logits = np.asarray(ops.convert_to_numpy(model.predict_on_batch(x)), "float64")
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    y = np.asarray(y)
    token_losses = -np.take_along_axis(log_probs, y[..., None], axis=-1)[..., 0]
    mask = np.asarray(x["padding_mask"] if padding_mask is None else padding_mask, "float64")
    ids = np.asarray(x["adapter_ids"]).reshape(-1)
    losses = {}
    for k, name in enumerate(adapter_names(model)):
        counted = mask[ids == k]
        if counted.sum():
            losses[name] = float((token_losses[ids == k] * counted).sum() / counted.sum())
    return losses
