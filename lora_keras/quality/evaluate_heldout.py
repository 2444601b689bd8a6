"""`evaluate_heldout`: a causal LM's mean next-token loss on documents it never trained on.

The loss is token-weighted: the cross-entropy of every target token that is not padding, summed
over all the documents and divided by the number of those tokens, so a long document weighs more
than a short one and the last, partial batch counts as much per token as any other (a mean of
batch means would not). Target tokens are what the attached preprocessor makes of each document,
truncated to `sequence_length`: every token after the start token, the end token included when it
fits. It runs the model in inference mode (no dropout), in a fixed order, with no training and no
random numbers, so the same model and documents always give the same figures, on every backend.
"""

import math
import numbers

import keras
import keras_hub
import numpy as np


def _check_count(name, value, allow_none=False):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer of at least 1, got {value!r}.")


def _documents(texts):
    if isinstance(texts, (str, bytes)):
        raise ValueError("texts must be a list of documents, got a single string. Wrap it: [text].")
    documents = [text.decode("utf-8") if isinstance(text, bytes) else text for text in texts]
    if not documents:
        raise ValueError("texts is empty: there is nothing to evaluate on. Give some documents.")
    for document in documents:
        if not isinstance(document, str):
            raise ValueError(f"texts must hold strings, got {type(document).__name__}.")
    return documents


def evaluate_heldout(lm, texts, batch_size=8, sequence_length=None, max_batches=None, adapter=None):
    """The mean next-token cross-entropy (nats) and perplexity of `lm` on `texts`.

    Nothing trains: the weights, the optimizer and the preprocessor are left as they were.

    Args:
        lm: a `keras_hub.models.CausalLM` (e.g. from `load_gpt2`) with its preprocessor
            attached; adapters (LoRA, DoRA, QLoRA, MixLoRA) may be in it.
        texts: a list of documents (strings), none of them trained on.
        batch_size: int. Documents a forward pass.
        sequence_length: int or `None`. Tokens kept of each document, at most the model's
            positions; `None` means the preprocessor's own.
        max_batches: int or `None`. Evaluate only the first `max_batches * batch_size`
            documents; `None` means all.
        adapter: for a model holding several adapters (`lk.apply_multi_lora`), the name of
            the one to evaluate: every document goes through it.

    Returns:
        `{"loss": float, "perplexity": float, "tokens": int}`: the token-weighted mean loss,
        `exp(loss)`, and the number of target tokens it is the mean of.

    Example:
    ```python
    import lora_keras as lk

    lm = lk.load_gpt2("gpt2_mini", weights="pretrained")
    split = lk.corpus_split("recipe")
    lk.evaluate_heldout(lm, split.keep_heldout)  # {"loss": ..., "perplexity": ..., "tokens": ...}
    ```
    """
    if not isinstance(lm, keras_hub.models.CausalLM):
        raise ValueError(
            f"evaluate_heldout takes a keras_hub CausalLM (e.g. from load_gpt2), got "
            f"{type(lm).__name__}."
        )
    preprocessor = lm.preprocessor
    if preprocessor is None:
        raise ValueError(
            "The model has no preprocessor attached, so it cannot read text. Evaluate outside "
            "`preprocessor_detached(lm)`, or attach a GPT2CausalLMPreprocessor."
        )
    documents = _documents(texts)
    _check_count("batch_size", batch_size)
    _check_count("max_batches", max_batches, allow_none=True)
    maximum = lm.backbone.max_sequence_length
    if sequence_length is None:
        sequence_length = preprocessor.sequence_length
    _check_count("sequence_length", sequence_length)
    if sequence_length > maximum:
        raise ValueError(
            f"sequence_length={sequence_length} is above the model's maximum: it has position "
            f"embeddings for {maximum} tokens. Use sequence_length <= {maximum}."
        )
    if max_batches is not None:
        documents = documents[: max_batches * batch_size]
    adapter_id = None
    if adapter is not None:
        from lora_keras.multi_lora.apply import adapter_index

        adapter_id = adapter_index(lm, adapter)
    total, tokens = 0.0, 0
    for start in range(0, len(documents), batch_size):
        x, y, weights = preprocessor(
            documents[start : start + batch_size], sequence_length=sequence_length
        )
        x = {key: keras.ops.convert_to_numpy(value) for key, value in x.items()}
        if adapter_id is not None:
            x["adapter_ids"] = np.full(len(x["token_ids"]), adapter_id, "int32")
        # (batch, seq, vocabulary), in float32 whatever the model computes in.
        logits = keras.ops.cast(lm(x, training=False), "float32")
        losses = keras.ops.sparse_categorical_crossentropy(
            keras.ops.convert_to_numpy(y), logits, from_logits=True
        )  # (batch, seq)
        weights = keras.ops.convert_to_numpy(weights).astype("float64")
        total += float(np.sum(keras.ops.convert_to_numpy(losses).astype("float64") * weights))
        tokens += int(weights.sum())
    loss = total / tokens
    return {"loss": loss, "perplexity": math.exp(loss), "tokens": tokens}
