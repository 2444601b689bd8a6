"""Batches that train several adapters in one `fit`: each step holds a batch of every adapter."""

import keras
import numpy as np

from lora_keras.data.batching import batch_arrays
from lora_keras.multi_lora.apply import adapter_names
from lora_keras.multi_lora.losses import adapter_sample_weight


def mixed_batches(model, datasets):
    """One batch of each adapter's data a step, side by side, with `adapter_ids` and weights.

    Step `i` of the result is batch `i` of every dataset, concatenated in the order of the
    adapters' ids, with `x["adapter_ids"]` naming each sequence's adapter and
    `lk.adapter_sample_weight` as its sample weight (so each adapter's gradient is the one its
    separate run on its batches would get, for unpadded batches: see there). `fit` then logs
    each adapter's loss as `loss_NAME`.

    Args:
        model: a model holding several adapters (`lk.apply_multi_lora`).
        datasets: `{adapter name: batches}`, each as `lk.make_lm_datasets` gives them:
            `({"token_ids", "padding_mask"}, y, sample_weight)` batches of one size. An
            adapter left out gets no examples, so no update.

    Returns:
        The same kind of batches (a `tf.data.Dataset`, or `ArrayBatches` without TensorFlow),
        as many as the shortest dataset holds. Fit them with the preprocessor detached
        (`lk.preprocessor_detached`), as `make_lm_datasets`'s batches.

    Example:
    ```python
    texts = {name: lk.load_texts(f"embedded:{name}") for name in ("weather", "recipe")}
    datasets = {name: lk.make_lm_datasets(t, lm, num_batches=50)[0] for name, t in texts.items()}
    with lk.preprocessor_detached(lm):
        lm.fit(lk.mixed_batches(lm, datasets))  # logs loss, loss_weather, loss_recipe
    ```
    """
    names = adapter_names(model)
    unknown = [name for name in datasets if name not in names]
    if unknown or not datasets:
        raise ValueError(
            f"datasets must map adapter names to batches; this model holds {names}, got "
            f"{list(datasets) or 'none'}."
        )
    owned = [(k, datasets[name]) for k, name in enumerate(names) if name in datasets]
    return side_by_side(owned, lambda ids, counted: adapter_sample_weight(ids, counted))


def side_by_side(owned, weigh):
    """Step `i`: batch `i` of every `(adapter id, batches)` of `owned`, concatenated in order.

    Args:
        owned: `[(adapter id, batches)]`, batches as `lk.make_lm_datasets` gives them.
        weigh: `weigh(adapter_ids, sample_weight)`, the step's weights from its adapter ids
            and its batches' own sample weights, side by side.

    Returns:
        `batch_arrays` batches with `x["adapter_ids"]`, as many as the shortest holds.
    """
    steps = []
    for batches in zip(*(batches for _, batches in owned), strict=False):  # the shortest
        # (x, y, sample_weight) of each adapter, as NumPy
        parts = [keras.tree.map_structure(np.asarray, tuple(batch)) for batch in batches]
        ids = np.concatenate(
            [np.full(len(part[1]), k, "int32") for (k, _), part in zip(owned, parts, strict=True)]
        )
        x = {key: np.concatenate([part[0][key] for part in parts]) for key in parts[0][0]}
        weights = weigh(ids, np.concatenate([part[2] for part in parts]))
        steps.append(({**x, "adapter_ids": ids}, np.concatenate([p[1] for p in parts]), weights))
    if not steps:
        raise ValueError("The datasets hold no batch: there is nothing to train on.")
    arrays = keras.tree.map_structure(lambda *step: np.concatenate(step), *steps)
    return batch_arrays(arrays, len(steps[0][1]))
