"""Adapter files: only the LoRA weights, keyed by layer path, with what checks them."""

import io
import json

import h5py
import numpy as np

from lora_keras import gpt2_surgery as surgery
from lora_keras.injection import apply_lora, lora_layers
from lora_keras.io_utils import atomic_write_bytes

ADAPTER_FORMAT = "lora_keras.adapter"
ADAPTER_VERSION = 1
_ARCHITECTURE_FIELDS = ("num_layers", "hidden_dim", "num_heads", "intermediate_dim")


def _architecture(backbone):
    return {field: int(getattr(backbone, field)) for field in _ARCHITECTURE_FIELDS}


def _settings(wrapped):
    first = next(iter(wrapped.values()))
    return {
        "rank": first.rank,
        "alpha": first.alpha,
        "dropout": first.dropout,
        "rslora": first.rslora,
        "targets": sorted({p.split("/")[1] for p in wrapped}, key=surgery.TARGETS.index),
    }


def save_adapter(model, path):
    """Writes the LoRA weights of `model` to an HDF5 file, whole or not at all.

    Each layer's `lora_kernel_a` and `lora_kernel_b` are stored under its path
    (`transformer_layer_0/query/...`), not its position, next to the settings
    (rank, alpha, targets, scaling rule) and the architecture, so that
    `load_adapter` can refuse a file that does not fit. A merged model saves
    the same adapter as an unmerged one.

    Args:
        model: a KerasHub GPT-2 holding LoRA layers.
        path: where to write, conventionally `name.lora.h5`.
    """
    wrapped = lora_layers(model)
    if not wrapped:
        raise ValueError("Cannot save an adapter: this model has no LoRA layers.")
    backbone = surgery.find_backbone(model)
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as file:
        file.attrs["format"] = ADAPTER_FORMAT
        file.attrs["version"] = ADAPTER_VERSION
        file.attrs["settings"] = json.dumps(_settings(wrapped))
        file.attrs["architecture"] = json.dumps(_architecture(backbone))
        for layer_path, layer in wrapped.items():
            group = file.create_group(layer_path)
            group.attrs["kernel_shape"] = tuple(layer.original_layer.kernel.shape)
            group["lora_kernel_a"] = np.asarray(layer.lora_kernel_a.numpy())
            group["lora_kernel_b"] = np.asarray(layer.lora_kernel_b.numpy())
    atomic_write_bytes(path, buffer.getvalue())


def _read(path):
    with h5py.File(path, "r") as file:
        if file.attrs.get("format") != ADAPTER_FORMAT:
            raise ValueError(f"'{path}' is not a lora_keras adapter file (no '{ADAPTER_FORMAT}').")
        settings = json.loads(file.attrs["settings"])
        architecture = json.loads(file.attrs["architecture"])
        weights = {}
        file.visititems(
            lambda name, item: (
                weights.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None
            )
        )
    return settings, architecture, weights


def _check_architecture(architecture, model):
    ours = _architecture(surgery.find_backbone(model))
    if ours != architecture:
        raise ValueError(
            f"Wrong architecture: the adapter was saved from a GPT-2 with {architecture}, "
            f"this model has {ours}. Load it into the model it was trained on."
        )


def _check_settings(settings, wrapped):
    current = _settings(wrapped)
    if current["rank"] != settings["rank"]:
        raise ValueError(
            f"Wrong rank: the adapter has rank {settings['rank']}, this model's LoRA has rank "
            f"{current['rank']}. Load it into a model without LoRA, or unwrap LoRA first."
        )
    if current["targets"] != settings["targets"]:
        raise ValueError(
            f"Wrong targets: the adapter covers {settings['targets']}, this model's LoRA "
            f"covers {current['targets']}. Load it into a model without LoRA, or unwrap first."
        )
    for key in ("alpha", "rslora"):
        if current[key] != settings[key]:
            raise ValueError(
                f"Wrong scaling: the adapter was trained with {key}={settings[key]}, this "
                f"model's LoRA has {key}={current[key]}. Load it into a model without LoRA."
            )


def load_adapter(model, path):
    """Loads LoRA weights saved by `save_adapter`, checking that they fit.

    If `model` has no LoRA yet, LoRA is first applied with the file's settings.
    If its LoRA is merged, the old update is taken out, the new weights are set
    and merged in again, so the model stays consistent.

    Args:
        model: a KerasHub `GPT2CausalLM` or `GPT2Backbone`.
        path: an adapter file.

    Returns:
        The adapter's settings (rank, alpha, dropout, rslora, targets).
    """
    settings, architecture, weights = _read(path)
    _check_architecture(architecture, model)
    wrapped = lora_layers(model)
    if not wrapped:
        apply_lora(model, **settings)
        wrapped = lora_layers(model)
    _check_settings(settings, wrapped)
    for layer_path, layer in wrapped.items():
        remerge = layer.merged
        if remerge:
            layer.unmerge()
        layer.lora_kernel_a.assign(weights[f"{layer_path}/lora_kernel_a"])
        layer.lora_kernel_b.assign(weights[f"{layer_path}/lora_kernel_b"])
        if remerge:
            layer.merge()
    return settings
