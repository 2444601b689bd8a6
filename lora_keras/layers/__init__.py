from lora_keras.layers.base_lora_layer import BaseLoraLayer
from lora_keras.layers.base_nf4_layer import BaseNF4Layer
from lora_keras.layers.lora_dense import LoraDense
from lora_keras.layers.lora_einsum_dense import LoraEinsumDense
from lora_keras.layers.nf4_dense import NF4Dense
from lora_keras.layers.nf4_einsum_dense import NF4EinsumDense

__all__ = [
    "BaseLoraLayer",
    "BaseNF4Layer",
    "LoraDense",
    "LoraEinsumDense",
    "NF4Dense",
    "NF4EinsumDense",
]
