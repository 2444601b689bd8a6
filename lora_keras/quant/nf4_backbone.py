"""Where NF4 layers sit in a GPT-2 backbone, and how its config brings them back on load."""

import keras
import keras_hub

from lora_keras import gpt2_surgery as surgery
from lora_keras.layers import BaseLoraLayer, BaseNF4Layer, NF4Dense, NF4EinsumDense


def _frozen_layer(layer):
    """The layer holding the frozen kernel: the wrapped one under LoRA."""
    return layer.original_layer if isinstance(layer, BaseLoraLayer) else layer


def nf4_layers(model):
    """The NF4 layers of `model`'s transformer blocks (under LoRA or not), keyed by path."""
    backbone = surgery.find_backbone(model)
    found = {}
    for index, block in enumerate(backbone.transformer_layers):
        for target in surgery.TARGETS:
            layer = _frozen_layer(surgery.get_layer(block, target))
            if isinstance(layer, BaseNF4Layer):
                found[surgery.layer_path(index, target)] = layer
    return found


def is_nf4_quantized(model):
    """Whether `model`'s transformer block kernels are stored as NF4 (`lk.quantize_nf4`).

    Example: refuse what NF4 kernels cannot do, such as merging in place.
    """
    return bool(nf4_layers(model))


def refuse_if_nf4(model, function_name):
    """Raises if `model` holds NF4 kernels, which `lk.<function_name>` needs as float."""
    if is_nf4_quantized(model):
        raise ValueError(
            f"Cannot `{function_name}` this model: its frozen kernels are stored as NF4 "
            "(QLoRA) and the LoRA update is float, so it cannot be folded into them. Call "
            "`lk.dequantize_nf4(model)` first: it gives a float model (float32 storage "
            f"again, LoRA kept), then `lk.{function_name}(model)` works."
        )


def nf4_config(model):
    """`{"nf4": {"block_size", "double_quant"}}` for an NF4 model, `{}` for a float one."""
    layers = list(nf4_layers(model).values())
    if not layers:
        return {}
    return {"nf4": {"block_size": layers[0].block_size, "double_quant": layers[0].double_quant}}


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
    return [layer for _, _, layer in planned]


def backbone_from_config(config):
    """`GPT2Backbone.from_config`, with NF4 layers in place where the config says so."""
    config = dict(config)
    nf4 = config.pop("nf4", None)
    backbone = keras_hub.models.GPT2Backbone.from_config(config)
    if nf4:
        place_nf4_layers(backbone, **nf4, quantize=False)
        backbone.__class__ = NF4GPT2Backbone
    return backbone


@keras.saving.register_keras_serializable(package="lora_keras")
class NF4GPT2Backbone(keras_hub.models.GPT2Backbone):
    """A `GPT2Backbone` whose block kernels are stored as NF4 (`lk.quantize_nf4`).

    A backbone is rebuilt from its config when a `.keras` file loads; this class
    adds the NF4 settings to the config and puts empty NF4 layers back before
    the stored codes load. `apply_lora` turns it into `LoraGPT2Backbone`, whose
    config carries the same NF4 settings.
    """

    def get_config(self):
        return {**super().get_config(), **nf4_config(self)}

    @classmethod
    def from_config(cls, config):
        return backbone_from_config(config)
