"""Texts to train on: TFDS, local files, or the corpus the package ships; and batches for `fit`."""

from lora_keras.data.batching import make_lm_datasets, preprocessor_detached
from lora_keras.data.embedded_corpus import embedded_corpus
from lora_keras.data.load_texts import load_texts

__all__ = ["embedded_corpus", "load_texts", "make_lm_datasets", "preprocessor_detached"]
