"""QLoRA's 4-bit NormalFloat (NF4) storage: the code book and block quantization."""

from lora_keras.quant.nf4 import NF4_VALUES, NF4Tensor, nf4_dequantize, nf4_quantize

__all__ = ["NF4_VALUES", "NF4Tensor", "nf4_dequantize", "nf4_quantize"]
