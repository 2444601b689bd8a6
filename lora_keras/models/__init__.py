"""GPT-2 models: KerasHub presets downloaded, local preset folders, or the same shapes offline."""

from lora_keras.models.architectures import GPT2_ARCHITECTURES, KNOWN_PRESETS
from lora_keras.models.load_gpt2 import load_gpt2
from lora_keras.network import pretrained_reachable

__all__ = ["GPT2_ARCHITECTURES", "KNOWN_PRESETS", "load_gpt2", "pretrained_reachable"]
