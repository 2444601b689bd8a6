from lora_keras.layers.base_dora_layer import BaseDoraLayer
from lora_keras.layers.base_lora_layer import BaseLoraLayer
from lora_keras.layers.dora_dense import DoraDense
from lora_keras.layers.dora_einsum_dense import DoraEinsumDense
from lora_keras.layers.lora_dense import LoraDense
from lora_keras.layers.lora_einsum_dense import LoraEinsumDense
from lora_keras.layers.mixlora_feedforward import MixDoraFeedForward, MixLoraFeedForward

__all__ = [
    "BaseDoraLayer",
    "BaseLoraLayer",
    "DoraDense",
    "DoraEinsumDense",
    "LoraDense",
    "LoraEinsumDense",
    "MixDoraFeedForward",
    "MixLoraFeedForward",
]
