from lora_keras.layers.base_dora_layer import BaseDoraLayer
from lora_keras.layers.base_lora_layer import BaseLoraLayer
from lora_keras.layers.base_multi_lora_layer import BaseMultiLoraLayer
from lora_keras.layers.base_nf4_layer import BaseNF4Layer
from lora_keras.layers.dora_dense import DoraDense
from lora_keras.layers.dora_einsum_dense import DoraEinsumDense
from lora_keras.layers.lora_dense import LoraDense
from lora_keras.layers.lora_einsum_dense import LoraEinsumDense
from lora_keras.layers.mixlora_feedforward import MixDoraFeedForward, MixLoraFeedForward
from lora_keras.layers.multi_lora_dense import MultiLoraDense
from lora_keras.layers.multi_lora_einsum_dense import MultiLoraEinsumDense
from lora_keras.layers.nf4_dense import NF4Dense
from lora_keras.layers.nf4_einsum_dense import NF4EinsumDense
from lora_keras.layers.per_adapter_loss import PerAdapterLoss

__all__ = [
    "BaseDoraLayer",
    "BaseLoraLayer",
    "BaseMultiLoraLayer",
    "BaseNF4Layer",
    "DoraDense",
    "DoraEinsumDense",
    "LoraDense",
    "LoraEinsumDense",
    "MixDoraFeedForward",
    "MixLoraFeedForward",
    "MultiLoraDense",
    "MultiLoraEinsumDense",
    "NF4Dense",
    "NF4EinsumDense",
    "PerAdapterLoss",
]
