"""Texts to train on: TFDS, local files, or the corpus the package ships; and batches for `fit`."""

from lora_keras.data.embedded_corpus import embedded_corpus
from lora_keras.data.load_texts import load_texts
from lora_keras.lazy import lazy_attributes

# Batching needs Keras and KerasHub (and takes TensorFlow where it is installed): imported on
# first use, so reading texts does not.
__getattr__, __dir__ = lazy_attributes(
    globals(),
    {
        "ArrayBatches": "lora_keras.data.array_batches",
        "make_lm_datasets": "lora_keras.data.batching",
        "preprocessor_detached": "lora_keras.data.batching",
    },
)

__all__ = [
    "ArrayBatches",
    "embedded_corpus",
    "load_texts",
    "make_lm_datasets",
    "preprocessor_detached",
]
