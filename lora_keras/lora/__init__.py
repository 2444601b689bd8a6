"""LoRA's model side, and DoRA's (its variant): put it into a GPT-2, fold it in, take it out."""

from lora_keras.lora.apply import VARIANTS, apply_lora, lora_settings
from lora_keras.lora.merge import merge_lora, unmerge_lora, unwrap_lora

__all__ = ["VARIANTS", "apply_lora", "lora_settings", "merge_lora", "unmerge_lora", "unwrap_lora"]
