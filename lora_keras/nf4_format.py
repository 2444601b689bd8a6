"""The layout of QLoRA's NF4 storage, without Keras: what the codec stores and the planner counts.

`lora_keras.layers.nf4_codec` quantizes into this layout; the planner and the estimate count
its size from here, before any model exists.
"""

# Blocks of 64 weights share one absmax; with double quantization the absmax constants are
# 8-bit, 256 of them sharing one float32 scale (QLoRA's storage).
BLOCK_SIZE = 64
ABSMAX_GROUP_SIZE = 256


def nf4_bits_per_weight(block_size=BLOCK_SIZE, double_quant=True):
    """Bits a weight in NF4 storage: 4.127 for QLoRA's settings, 4.5 without double
    quantization. A 4-bit code, plus a share of its block's absmax: 32 bits, or 8 bits and a
    share of a float32 second-level scale per group of 256 blocks."""
    absmax_bits = 8 + 32 / ABSMAX_GROUP_SIZE if double_quant else 32
    return 4 + absmax_bits / block_size
