"""Where QLoRA's NF4 layers go in a GPT-2 backbone, and how its config brings them back on load."""

import keras

from lora_keras import gpt2_surgery as surgery
from lora_keras.gpt2_surgery import is_nf4_quantized, nf4_layers
from lora_keras.layers import NF4Dense, NF4EinsumDense


def refuse_if_nf4(model, function_name):
    """Raises if `model` holds NF4 kernels, which `lk.<function_name>` needs as float."""
    if is_nf4_quantized(model):
        raise ValueError(
            f"Cannot `{function_name}` this model: its frozen kernels are stored as NF4 "
            "(QLoRA) and the LoRA update is float, so it cannot be folded into them. Call "
            "`lk.dequantize_nf4(model)` first: it gives a float model (float32 storage "
            f"again, LoRA kept), then `lk.{function_name}(model)` works."
        )


def nf4_settings(model):
    """`{"block_size", "double_quant"}` of an NF4 model's kernels, or None for a float one."""
    layers = list(nf4_layers(model).values())
    if not layers:
        return None
    return {"block_size": layers[0].block_size, "double_quant": layers[0].double_quant}


def place_nf4_layers(backbone, block_size=64, double_quant=True, quantize=True):
    """Puts an NF4 layer at every projection of every block; returns them.

    With `quantize=False` the NF4 layers stay zero, for weights about to load.
    Every NF4 layer is built before the first is placed: an error changes nothing.
    """
    planned = []
    for block in backbone.transformer_layers:
        for target in surgery.TARGETS:
            layer = surgery.get_layer(block, target)
            nf4_class = NF4EinsumDense if isinstance(layer, keras.layers.EinsumDense) else NF4Dense
            make = nf4_class.from_float if quantize else nf4_class.like
            planned.append((block, target, make(layer, block_size, double_quant)))
    for block, target, layer in planned:
        surgery.set_layer(block, target, layer)
    surgery.settle_class(backbone)
    return [layer for _, _, layer in planned]


def _restore(backbone, settings):
    place_nf4_layers(backbone, **settings, quantize=False)


surgery.register_section("nf4", nf4_settings, _restore)
