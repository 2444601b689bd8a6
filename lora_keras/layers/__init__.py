from lora_keras.layers.base_lora_layer import BaseLoraLayer
from lora_keras.layers.lora_dense import LoraDense
from lora_keras.layers.lora_einsum_dense import LoraEinsumDense
from lora_keras.layers.mixlora_feedforward import MixDoraFeedForward, MixLoraFeedForward

__all__ = [
    "BaseLoraLayer",
    "LoraDense",
    "LoraEinsumDense",
    "MixDoraFeedForward",
    "MixLoraFeedForward",
]
