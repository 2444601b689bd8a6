"""LoRA and its family for KerasHub GPT-2, with honest time and memory measurements."""

from lora_keras.adapters import load_adapter, save_adapter
from lora_keras.gpt2_surgery import TARGETS
from lora_keras.injection import (
    LoraGPT2Backbone,
    apply_lora,
    lora_layers,
    merge_lora,
    unmerge_lora,
    unwrap_lora,
)
from lora_keras.layers import BaseLoraLayer, LoraDense, LoraEinsumDense
from lora_keras.summary import format_trainable_summary, trainable_summary

__version__ = "0.1.0"
