"""QLoRA's model side: store a GPT-2's block kernels as NF4, or bring them back to float."""

from lora_keras import gpt2_surgery as surgery
from lora_keras.gpt2_surgery import is_nf4_quantized, lora_layers, multi_lora_layers, nf4_layers
from lora_keras.qlora.nf4_section import place_nf4_layers


def quantize_nf4(model, block_size=64, double_quant=True):
    """Stores every projection kernel of the transformer blocks as NF4 (QLoRA).

    Query, key, value, attention output and both feed-forward kernels become
    `NF4EinsumDense`/`NF4Dense` layers holding non-trainable integer variables
    (about 4.127 bits a weight with double quantization); their biases stay
    float and frozen. Embeddings and layer norms stay as they are, as in the
    QLoRA paper. Then call `lk.apply_lora(model, ...)`: LoRA trains beside the
    frozen NF4 kernels, which are dequantized on the fly in the compute dtype.

    Compile the model afterwards, as after `apply_lora`: a model compiled before
    keeps the float layers referenced (Keras's compiled trainable state) until it
    is compiled again, and their float kernels with them.

    A QLoRA model does not merge in place (the update is float, the kernel NF4):
    `lk.dequantize_nf4(model)` first gives a float model, LoRA kept, that merges.

    Args:
        model: a KerasHub `GPT2CausalLM` or `GPT2Backbone` without LoRA.
        block_size: weights per absmax block (QLoRA: 64).
        double_quant: store the absmax constants in 8 bits (QLoRA: True).

    Returns:
        The NF4 layers inserted, block by block.

    Example:
    ```python
    lm = lk.load_gpt2("gpt2_base_en", weights="random")
    lk.quantize_nf4(lm)
    lk.apply_lora(lm, rank=4)
    ```
    """
    backbone = surgery.find_backbone(model)
    surgery.check_layout(backbone)
    if is_nf4_quantized(backbone):
        raise ValueError(
            "This model's block kernels are already stored as NF4: quantize once. To start "
            "from float kernels again, call `lk.dequantize_nf4(model)`."
        )
    surgery.refuse_if_multi_lora(
        backbone,
        "quantize_nf4",
        "QLoRA quantizes the frozen base first: `lk.quantize_nf4`, then `lk.apply_multi_lora`.",
    )
    if lora_layers(backbone):
        raise ValueError(
            "This model already has LoRA: quantize first, then apply LoRA (QLoRA quantizes "
            "the frozen base model). Call `lk.unwrap_lora(model)`, then `lk.quantize_nf4` "
            "and `lk.apply_lora`."
        )
    if any(surgery.get_mixture(block) for block in backbone.transformer_layers):
        raise ValueError(
            "This model has MixLoRA feed-forward blocks, whose experts share the frozen "
            "feed-forward kernels in float: NF4 under MixLoRA is not supported. Quantize a "
            "model without MixLoRA."
        )
    for index, block in enumerate(backbone.transformer_layers):
        for target in surgery.TARGETS:
            layer = surgery.get_layer(block, target)
            if getattr(layer, "lora_enabled", False) or layer.quantization_mode is not None:
                raise ValueError(
                    f"{surgery.layer_path(index, target)} uses Keras's built-in LoRA or "
                    f"quantization (`enable_lora`/`quantize`, mode "
                    f"{layer.quantization_mode}). Build the model again without them before "
                    "`lk.quantize_nf4`."
                )
    layers = place_nf4_layers(backbone, block_size, double_quant)
    surgery.forget_traced_functions(model)
    return layers


def dequantize_nf4(model):
    """Puts float layers with the dequantized kernels back in place of the NF4 ones.

    The kernels are the NF4 values, not the original float ones (quantization
    loses what it rounds). LoRA layers stay, around the float kernels, so that
    `lk.merge_lora` and `lk.unwrap_lora` work afterwards: merging a QLoRA
    model gives a float model. The float kernels are frozen under LoRA and
    trainable without it, as in a freshly loaded preset.

    Args:
        model: a KerasHub GPT-2 quantized by `lk.quantize_nf4`.
    """
    backbone = surgery.find_backbone(model)
    quantized = nf4_layers(backbone)
    if not quantized:
        raise ValueError(
            "Cannot dequantize: this model has no NF4 layers (`lk.quantize_nf4` makes them)."
        )
    # LoRA wrappers, of one adapter or several, keep their place around the float kernels.
    wrapped = {**lora_layers(backbone), **multi_lora_layers(backbone)}
    for index, block in enumerate(backbone.transformer_layers):
        for target in surgery.TARGETS:
            path = surgery.layer_path(index, target)
            float_layer = quantized[path].to_float()
            # Under LoRA only LoRA trains; without it every weight does, as in a preset.
            float_layer.trainable = not wrapped
            if path in wrapped:
                surgery.replace_sublayer(wrapped[path], "original_layer", float_layer)
            else:
                surgery.set_layer(block, target, float_layer)
    surgery.settle_class(backbone)
    surgery.forget_traced_functions(model)
