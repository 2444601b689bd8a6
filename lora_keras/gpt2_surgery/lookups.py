"""The lookups and freezing every method shares: its layers by path, only adapters trainable."""

from lora_keras.gpt2_surgery.layout import (
    TARGETS,
    find_backbone,
    get_layer,
    get_mixture,
    layer_path,
)
from lora_keras.layers import BaseLoraLayer, BaseMultiLoraLayer, BaseNF4Layer


def lora_layers(model):
    """The LoRA wrappers in `model`, keyed by stable paths like `transformer_layer_0/query`."""
    return _layers_at_targets(model, lambda layer: isinstance(layer, BaseLoraLayer))


def multi_lora_layers(model):
    """The multi-adapter LoRA wrappers in `model` (`lk.apply_multi_lora`), keyed by path."""
    return _layers_at_targets(model, lambda layer: isinstance(layer, BaseMultiLoraLayer))


def nf4_layers(model):
    """The NF4 layers of `model`'s transformer blocks (under LoRA or not), keyed by path."""
    return {
        path: frozen
        for path, frozen in _layers_at_targets(model, lambda layer: True, frozen=True).items()
        if isinstance(frozen, BaseNF4Layer)
    }


def _layers_at_targets(model, keep, frozen=False):
    backbone = find_backbone(model)
    found = {}
    for index, block in enumerate(backbone.transformer_layers):
        for target in TARGETS:
            layer = get_layer(block, target)
            if frozen and isinstance(layer, (BaseLoraLayer, BaseMultiLoraLayer)):
                layer = layer.original_layer  # the layer holding the frozen kernel
            if keep(layer):
                found[layer_path(index, target)] = layer
    return found


def is_nf4_quantized(model):
    """Whether `model`'s transformer block kernels are stored as NF4 (`lk.quantize_nf4`).

    Example: refuse what NF4 kernels cannot do, such as merging in place.
    """
    return bool(nf4_layers(model))


def mixlora_layers(model):
    """The MixLoRA blocks in `model`, keyed by paths like `transformer_layer_0/ffn`."""
    backbone = find_backbone(model)
    found = {}
    for index, block in enumerate(backbone.transformer_layers):
        mixture = get_mixture(block)
        if mixture is not None:
            found[layer_path(index, "ffn")] = mixture
    return found


def freeze_all_but_adapters(backbone):
    """Makes the LoRA weights (one adapter or many) and the MixLoRA routers and experts the only
    trainable weights."""
    adapters = [
        *lora_layers(backbone).values(),
        *mixlora_layers(backbone).values(),
        *multi_lora_layers(backbone).values(),
    ]
    adapter_ids = {id(v) for layer in adapters for v in layer.adapter_weights().values()}
    for variable in backbone.weights:
        variable.trainable = id(variable) in adapter_ids


def turn_off_dropout(model):
    """Sets every dropout of `model`'s backbone to rate 0 (GPT-2's presets train with 0.1).

    Dropout draws its masks for the shape of the batch: the same sequences in a batch of
    another size get other masks, so two runs can only take the same steps without it.
    Called before the first trace (a traced function keeps the rate it saw).

    Returns:
        The dropout rates found, before they were set to 0.
    """
    import keras

    dropouts = [
        layer
        for layer in find_backbone(model)._flatten_layers()
        if isinstance(layer, keras.layers.Dropout)
    ]
    rates = sorted({float(layer.rate) for layer in dropouts})
    for layer in dropouts:
        layer.rate = 0.0
    return rates


def forget_traced_functions(model):
    """Drops the functions Keras traced from `model`, so the next call traces them again.

    A trace bakes in Python-level choices: which layer sits at `query`, and
    whether a wrapper is `merged`. After changing either, an old
    `predict_function` would add a merged update twice, and an old
    `generate_function` would ignore new LoRA layers.
    """
    for owner in (model, find_backbone(model)):
        for name in ("train_function", "test_function", "predict_function", "generate_function"):
            if getattr(owner, name, None) is not None:
                setattr(owner, name, None)


# --- The one adapted backbone ----------------------------------------------------------------
