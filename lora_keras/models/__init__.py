"""GPT-2 models: KerasHub presets downloaded, local preset folders, or the same shapes offline."""

from lora_keras.lazy import lazy_attributes
from lora_keras.models.architectures import (
    GPT2_ARCHITECTURES,
    GPT2_MINI_HELDOUT_FAMILY,
    KNOWN_PRESETS,
    has_pretrained_weights,
)

# Imported on first use: the architecture table answers argument checks before TensorFlow starts.
__getattr__, __dir__ = lazy_attributes(
    globals(),
    {"load_gpt2": "lora_keras.models.load_gpt2", "pretrained_reachable": "lora_keras.network"},
)

__all__ = [
    "GPT2_ARCHITECTURES",
    "GPT2_MINI_HELDOUT_FAMILY",
    "KNOWN_PRESETS",
    "has_pretrained_weights",
    "load_gpt2",
    "pretrained_reachable",
]
