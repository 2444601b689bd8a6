"""Texts to the tokenized batches `fit` wants, so a timed step measures the model, not tokenizing.

KerasHub's `Task.fit` maps the attached preprocessor over every batch of every epoch, inside a
`tf.data` graph that costs seconds to trace each time `fit` is called. Here the texts are
tokenized once, eagerly (KerasHub's Python path, backed by the `tokenizers` library), into
`(x, y, sample_weight)` batches held in memory. `fit` would tokenize those again, so they are fed
with the preprocessor detached, the way KerasHub's `Task` documents for preprocessed inputs:
`with preprocessor_detached(lm): lm.fit(train_ds)`. Without TensorFlow (a JAX or torch install)
the same tokenization runs, and the batches come as `ArrayBatches` instead of a `tf.data.Dataset`.
"""

import contextlib
import functools

import keras
import keras_hub
import numpy as np

from lora_keras.data.array_batches import ArrayBatches
from lora_keras.data.optional_tensorflow import optional_tensorflow

# Documents held in the shuffle buffer: all of the embedded corpus, and for reddit_tifu (79,740
# documents) a window of about 20 MB of text.
_SHUFFLE_BUFFER = 10_000
# Documents tokenized a call, to bound the memory of one call on a large corpus.
_TOKENIZE_CHUNK = 1024


@contextlib.contextmanager
def preprocessor_detached(lm):
    """Detach `lm.preprocessor` for a block, and put it back after, even on error.

    `make_lm_datasets` yields already-tokenized batches; `lm.fit` would tokenize them again.
    Without TensorFlow, `lm.fit` is Keras's own `fit` in the block, which takes `ArrayBatches`.

    Example:
    ```python
    train_ds, val_ds = lk.make_lm_datasets(texts, lm, num_batches=100, validation_batches=10)
    with lk.preprocessor_detached(lm):
        lm.fit(train_ds, validation_data=val_ds)
    lm.generate("I like basketball")  # the preprocessor is back
    ```
    """
    preprocessor = lm.preprocessor
    lm.preprocessor = None
    own_fit = vars(lm).get("fit")  # an enclosing block's, put back on the way out
    if optional_tensorflow() is None:
        # KerasHub's `fit` turns its input into a tf.data or Grain dataset, and neither is here;
        # `make_lm_datasets` then gives `ArrayBatches`, already tokenized: Keras's own `fit`.
        lm.fit = functools.partial(keras.Model.fit, lm)
    try:
        yield lm
    finally:
        lm.preprocessor = preprocessor
        vars(lm).pop("fit", None)
        if own_fit is not None:
            lm.fit = own_fit


def _tokenize(documents, preprocessor, batch_size):
    chunks = [
        keras.tree.map_structure(
            keras.ops.convert_to_numpy, preprocessor(documents[i : i + _TOKENIZE_CHUNK])
        )
        for i in range(0, len(documents), _TOKENIZE_CHUNK)
    ]
    arrays = keras.tree.map_structure(lambda *parts: np.concatenate(parts), *chunks)
    return batch_arrays(arrays, batch_size)


def batch_arrays(arrays, batch_size):
    """Full batches of `arrays` (a structure of NumPy arrays of equal rows), in their order.

    As `make_lm_datasets` feeds `fit`: a `tf.data.Dataset`, or `ArrayBatches` without
    TensorFlow. Every batch is full, so every step costs the same and shapes stay static for XLA.
    """
    tf = optional_tensorflow()
    if tf is None:
        return ArrayBatches(arrays, batch_size)
    dataset = tf.data.Dataset.from_tensor_slices(arrays).batch(batch_size, drop_remainder=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _documents_tf(texts, tf, needed, seed, shuffle):
    """The first `needed` documents of `texts` (all for `None`), after tf.data's shuffle."""
    if not isinstance(texts, tf.data.Dataset):
        texts = tf.data.Dataset.from_tensor_slices(tf.constant(list(texts), dtype=tf.string))
    if needed is None and texts.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise ValueError(
            "The texts never end (a repeated dataset), so num_batches=None cannot take them all. "
            "Give num_batches."
        )
    if shuffle:
        texts = texts.shuffle(_SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=False)
    if needed is not None:
        # Read no further than needed: a large corpus is only tokenized as far as it is used.
        texts = texts.take(needed)
    return [text.decode("utf-8") for text in texts.as_numpy_iterator()]


def _documents_numpy(texts, needed, seed, shuffle):
    """The same without TensorFlow: NumPy's shuffle, of all the texts, gives another order."""
    documents = list(texts)
    if shuffle:
        documents = [documents[i] for i in np.random.default_rng(seed).permutation(len(documents))]
    return documents[:needed]


def make_lm_datasets(
    texts,
    preprocessor,
    batch_size=4,
    num_batches=None,
    validation_batches=0,
    seed=0,
    shuffle=True,
):
    """Shuffled, tokenized, batched training (and validation) data for a causal LM.

    The texts are shuffled once with `seed` (the same order every epoch and every run; without
    TensorFlow, NumPy shuffles them, in another order than tf.data's), the first
    `validation_batches * batch_size` documents are held out for validation, the next
    `num_batches * batch_size` become the training batches, and both are tokenized once with
    `preprocessor` (whose `sequence_length` they take). Each element is
    `({"token_ids", "padding_mask"}, y, sample_weight)` of shape `(batch_size, sequence_length)`.
    Fit with the preprocessor detached (see `preprocessor_detached`).

    Args:
        texts: a list of strings, or a `tf.data.Dataset` of scalar strings (as from
            `load_texts`, which gives a list where TensorFlow is not installed).
        preprocessor: a `GPT2CausalLMPreprocessor`, or a `CausalLM` holding one.
        batch_size: int. Documents a batch.
        num_batches: int or `None`. Training batches; `None` takes all the texts give.
        validation_batches: int. Batches held out for validation; 0 means no validation data.
        seed: int. Seeds the shuffle.
        shuffle: bool. `False` keeps the texts' order.

    Returns:
        `(train_ds, val_ds)`: `tf.data.Dataset`s, or `ArrayBatches` where TensorFlow is not
        installed; `val_ds` is `None` when `validation_batches` is 0.

    Example:
    ```python
    import lora_keras as lk

    lm = lk.load_gpt2("gpt2_tiny", weights="random")
    train_ds, val_ds = lk.make_lm_datasets(lk.load_texts("embedded"), lm, num_batches=50)
    with lk.preprocessor_detached(lm):
        lm.fit(train_ds)
    ```
    """
    if num_batches is not None and num_batches < 1:
        raise ValueError(
            f"num_batches must be at least 1, or None for all. Received: {num_batches}"
        )
    if isinstance(preprocessor, keras_hub.models.CausalLM):
        preprocessor = preprocessor.preprocessor
    held_out = validation_batches * batch_size
    needed = None if num_batches is None else held_out + num_batches * batch_size
    tf = optional_tensorflow()
    if tf is None:
        documents = _documents_numpy(texts, needed, seed, shuffle)
    else:
        documents = _documents_tf(texts, tf, needed, seed, shuffle)
    if not documents:
        raise ValueError("The texts are empty: there is nothing to train on.")
    available = len(documents) // batch_size - validation_batches
    wanted = available if num_batches is None else num_batches
    if available < max(wanted, 1):
        held = f" after {validation_batches} held out for validation" if held_out else ""
        asked = "at least 1 is needed" if num_batches is None else f"{wanted} were asked for"
        raise ValueError(
            f"The texts yield {max(available, 0)} batches of {batch_size}{held}; {asked}: "
            "lower num_batches or batch_size, or give more text."
        )
    train = _tokenize(
        documents[held_out : held_out + wanted * batch_size], preprocessor, batch_size
    )
    if not validation_batches:
        return train, None
    return train, _tokenize(documents[:held_out], preprocessor, batch_size)
