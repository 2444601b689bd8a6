"""The MixLoRA part of an adapter file: routers and experts, with what checks them.

`lk.save_adapter` and `lk.load_adapter` call these; the file keeps the mixture
in one group, `mixlora/`, beside the LoRA layers' groups.
"""

import json

import numpy as np

from lora_keras import gpt2_surgery as surgery
from lora_keras.gpt2_surgery import lora_layers, mixlora_layers
from lora_keras.mixlora.apply import apply_mixlora, mixlora_settings
from lora_keras.mixlora.settings import saved_settings

GROUP = "mixlora"


def write_mixture(file, model):
    """Writes the settings and every block's router and expert weights into `file` (h5py)."""
    group = file.create_group(GROUP)
    group.attrs["settings"] = json.dumps(mixlora_settings(model))
    for layer_path, mixture in mixlora_layers(model).items():
        block_group = group.create_group(layer_path)
        for name, variable in mixture.adapter_weights().items():
            block_group[name] = np.asarray(variable.numpy())


def read_mixture(file):
    """`(settings, {layer path: {weight name: array}})` from `file`, or None without a mixture."""
    if GROUP not in file:
        return None
    group = file[GROUP]
    blocks = {}
    for block_name, block in group.items():
        for target, weights in block.items():
            blocks[f"{block_name}/{target}"] = {name: data[()] for name, data in weights.items()}
    return saved_settings(json.loads(group.attrs["settings"])), blocks


def check_mixture(stored, model):
    """Refuses, before anything changes, a mixture that `model` cannot take as it is."""
    settings, blocks = stored
    current = mixlora_layers(model)
    if current:
        ours = mixlora_settings(model)
        if ours != settings:
            raise ValueError(
                f"Wrong MixLoRA settings: the adapter has {settings}, this model's mixture has "
                f"{ours}. Load it into a model without MixLoRA."
            )
    else:
        on_ffn = [p for p in lora_layers(model) if p.split("/")[1] in surgery.FEEDFORWARD_TARGETS]
        if on_ffn:
            raise ValueError(
                f"The adapter holds a MixLoRA mixture but this model has LoRA on {on_ffn}, "
                "where the mixture goes. Load it into a model without feed-forward LoRA."
            )
    backbone = surgery.find_backbone(model)
    expected = {surgery.layer_path(i, "ffn") for i in range(len(backbone.transformer_layers))}
    if set(blocks) != expected:
        raise ValueError(
            f"The adapter's mixture covers {sorted(blocks)}, this model has {sorted(expected)}. "
            "The file is damaged or was saved from another model."
        )


def load_mixture(stored, model):
    """Applies the stored mixture if `model` has none, then sets its weights."""
    settings, blocks = stored
    if not mixlora_layers(model):
        apply_mixlora(model, **settings)
    for layer_path, mixture in mixlora_layers(model).items():
        for name, variable in mixture.adapter_weights().items():
            variable.assign(blocks[layer_path][name])
    return settings
