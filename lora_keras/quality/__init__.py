"""What a model has learned, measured: held-out loss and perplexity, beside what it cost."""

from lora_keras.lazy import lazy_attributes

# Needs Keras and KerasHub: imported on first use.
__getattr__, __dir__ = lazy_attributes(
    globals(), {"evaluate_heldout": "lora_keras.quality.evaluate_heldout"}
)

__all__ = ["evaluate_heldout"]
