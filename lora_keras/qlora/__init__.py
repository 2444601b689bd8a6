"""QLoRA's model side: a GPT-2's block kernels stored as NF4, LoRA trained on top.

The NF4 codec (pure math) and the NF4 layers live in `lora_keras.layers`; here is what
puts them into a model, takes them out, and records them in the backbone's config.
"""

from lora_keras.qlora.nf4_section import nf4_settings, place_nf4_layers, refuse_if_nf4
from lora_keras.qlora.quantize import dequantize_nf4, quantize_nf4

__all__ = ["dequantize_nf4", "nf4_settings", "place_nf4_layers", "quantize_nf4", "refuse_if_nf4"]
