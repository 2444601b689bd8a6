"""A GPT-2 tokenizer trained here, for models built with random weights and no download.

It is a byte-level BPE like GPT-2's own (same byte alphabet, same `<|endoftext|>` as the last id),
trained with the `tokenizers` library and wrapped as `keras_hub.models.GPT2Tokenizer`, so the
model, its preprocessor, `fit` and `generate` are the tutorial's. Training takes well under a
second on the embedded corpus but longer on a real one, so the result is cached on disk, keyed by
the texts and the vocabulary size.
"""

import hashlib
import json
import os
import sys
from pathlib import Path

import keras_hub
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from lora_keras.io_utils import atomic_write_text

END_OF_TEXT = "<|endoftext|>"


def cache_dir():
    """Where trained tokenizers are kept: `$LORA_KERAS_CACHE`, else `~/.cache/lora_keras`."""
    return Path(os.environ.get("LORA_KERAS_CACHE", Path.home() / ".cache" / "lora_keras"))


def _as_strings(texts):
    # A `tf.data.Dataset` exists only once TensorFlow is imported; without it, texts are a list.
    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(texts, tf.data.Dataset):
        texts = texts.as_numpy_iterator()
    return [text.decode("utf-8") if isinstance(text, bytes) else str(text) for text in texts]


def train_bpe(texts, vocabulary_size):
    """Train a byte-level BPE of at most `vocabulary_size` tokens, `<|endoftext|>` included."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocabulary_size - 1,
        # All 256 byte symbols, so any text can be encoded, seen in training or not.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    vocabulary = tokenizer.get_vocab()
    # GPT-2 puts its only special token last; its preprocessor pads with id 0 under a mask.
    vocabulary[END_OF_TEXT] = len(vocabulary)
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    # `tokenizers` writes a merge as ["a", "b"] (older releases: "a b"); KerasHub reads "a b".
    merges = [merge if isinstance(merge, str) else " ".join(merge) for merge in merges]
    return vocabulary, merges


def local_gpt2_tokenizer(texts, vocabulary_size, cache=None):
    """A `GPT2Tokenizer` trained on `texts`, from the cache when it was trained before.

    Args:
        texts: iterable of strings, or a `tf.data.Dataset` of scalar strings.
        vocabulary_size: int. The most tokens to learn, `<|endoftext|>` included. A small corpus
            may run out of merges first; then the tokenizer is smaller.
        cache: folder to keep tokenizers in; `None` means `cache_dir()`.

    Returns:
        `(tokenizer, folder)`: the tokenizer and the folder its vocabulary and merges are in.

    Example:
    ```python
    tokenizer, folder = local_gpt2_tokenizer(["A small corpus.", "Two documents."], 300)
    tokenizer.detokenize(tokenizer("A small test."))
    ```
    """
    texts = _as_strings(texts)
    if not any(texts):
        raise ValueError(
            "Cannot train a tokenizer on no text: `tokenizer_texts` is empty. Pass some "
            "documents, or `None` for the embedded corpus."
        )
    digest = hashlib.sha256(f"{vocabulary_size}\n".encode())
    for text in texts:
        # The separator keeps ["ab", "c"] and ["a", "bc"] apart.
        digest.update(text.encode("utf-8") + b"\0")
    folder = Path(cache or cache_dir()) / "tokenizers" / digest.hexdigest()[:16]
    vocabulary_path, merges_path = folder / "vocabulary.json", folder / "merges.txt"
    if not (vocabulary_path.exists() and merges_path.exists()):
        vocabulary, merges = train_bpe(texts, vocabulary_size)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(merges_path, "".join(f"{merge}\n" for merge in merges))
        atomic_write_text(vocabulary_path, json.dumps(vocabulary, ensure_ascii=False))
    # Read back even after training, so a fresh and a cached tokenizer are built the same way.
    tokenizer = keras_hub.models.GPT2Tokenizer(
        vocabulary=json.loads(vocabulary_path.read_text(encoding="utf-8")),
        merges=merges_path.read_text(encoding="utf-8").splitlines(),
    )
    return tokenizer, folder
