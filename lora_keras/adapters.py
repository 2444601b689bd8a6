"""Adapter files: only the LoRA weights, keyed by layer path, with what checks them."""

import io
import json
import os

import h5py
import numpy as np

from lora_keras import gpt2_surgery as surgery
from lora_keras.injection import apply_lora, lora_layers, lora_settings
from lora_keras.io_utils import atomic_write_bytes

ADAPTER_FORMAT = "lora_keras.adapter"
ADAPTER_VERSION = 1
_ARCHITECTURE_FIELDS = ("num_layers", "hidden_dim", "num_heads", "intermediate_dim")


def _architecture(backbone):
    return {field: int(getattr(backbone, field)) for field in _ARCHITECTURE_FIELDS}


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
        file.attrs["settings"] = json.dumps(lora_settings(wrapped))
        file.attrs["architecture"] = json.dumps(_architecture(backbone))
        for layer_path, layer in wrapped.items():
            group = file.create_group(layer_path)
            group.attrs["kernel_shape"] = tuple(layer.original_layer.kernel.shape)
            group["lora_kernel_a"] = np.asarray(layer.lora_kernel_a.numpy())
            group["lora_kernel_b"] = np.asarray(layer.lora_kernel_b.numpy())
    atomic_write_bytes(path, buffer.getvalue())


def _read(path):
    """Returns `(settings, architecture, layers)`, `layers` keyed by layer path."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No adapter file at '{path}'.")
    try:
        return _read_hdf5(path)
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as error:
        # h5py's own messages name neither the file nor what to do.
        raise ValueError(
            f"Cannot read '{path}' as an adapter file: it is damaged (truncated?) or not an "
            f"HDF5 file ({type(error).__name__}: {error}). Save it again with `lk.save_adapter`."
        ) from error


def _read_hdf5(path):
    with h5py.File(path, "r") as file:
        if file.attrs.get("format") != ADAPTER_FORMAT:
            raise ValueError(f"'{path}' is not a lora_keras adapter file (no '{ADAPTER_FORMAT}').")
        if file.attrs.get("version") != ADAPTER_VERSION:
            raise ValueError(
                f"'{path}' is a version {file.attrs.get('version')} adapter file; this "
                f"lora_keras reads version {ADAPTER_VERSION}. Install the lora_keras that wrote it."
            )
        settings = json.loads(file.attrs["settings"])
        architecture = json.loads(file.attrs["architecture"])
        layers = {}
        for block_name, block in file.items():
            for target, group in block.items():
                layers[f"{block_name}/{target}"] = {
                    "kernel_shape": tuple(int(d) for d in group.attrs["kernel_shape"]),
                    "lora_kernel_a": group["lora_kernel_a"][()],
                    "lora_kernel_b": group["lora_kernel_b"][()],
                }
    return settings, architecture, layers


def _check_layers(settings, layers, model):
    """Every layer the settings name is in the file, with factors that fit its kernel."""
    backbone = surgery.find_backbone(model)
    expected = {}
    for index, block in enumerate(backbone.transformer_layers):
        for target in settings["targets"]:
            layer = surgery.get_layer(block, target)
            layer = getattr(layer, "original_layer", layer)
            expected[surgery.layer_path(index, target)] = tuple(layer.kernel.shape)
    missing, unexpected = sorted(set(expected) - set(layers)), sorted(set(layers) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"The adapter file does not match its own settings: missing {missing}, unexpected "
            f"{unexpected}. The file is damaged or was not written by `lk.save_adapter`."
        )
    for layer_path, stored in layers.items():
        rank = settings["rank"]
        shapes = (stored["lora_kernel_a"].shape[-1], stored["lora_kernel_b"].shape[0])
        if stored["kernel_shape"] != expected[layer_path] or shapes != (rank, rank):
            raise ValueError(
                f"Adapter of the wrong shape for {layer_path}: saved for a kernel of shape "
                f"{stored['kernel_shape']} at rank {rank}, this model's kernel has shape "
                f"{expected[layer_path]}."
            )


def _check_architecture(architecture, model):
    ours = _architecture(surgery.find_backbone(model))
    if ours != architecture:
        raise ValueError(
            f"Wrong architecture: the adapter was saved from a GPT-2 with {architecture}, "
            f"this model has {ours}. Load it into the model it was trained on."
        )


def _check_settings(settings, wrapped):
    current = lora_settings(wrapped)
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
    settings, architecture, layers = _read(path)
    _check_architecture(architecture, model)
    _check_layers(settings, layers, model)  # all checks before the model changes
    wrapped = lora_layers(model)
    if not wrapped:
        apply_lora(model, **settings)
        wrapped = lora_layers(model)
    _check_settings(settings, wrapped)
    for layer_path, layer in wrapped.items():
        remerge = layer.merged
        if remerge:
            layer.unmerge()
        layer.lora_kernel_a.assign(layers[layer_path]["lora_kernel_a"])
        layer.lora_kernel_b.assign(layers[layer_path]["lora_kernel_b"])
        if remerge:
            layer.merge()
    return settings
