"""Adapter files: only the LoRA weights, keyed by layer path, with what checks them."""

import io
import json
import os

import h5py
import numpy as np

from lora_keras import gpt2_surgery as surgery
from lora_keras.gpt2_surgery import lora_layers, mixlora_layers, multi_lora_layers
from lora_keras.io_utils import atomic_write_bytes
from lora_keras.lora import VARIANTS, apply_lora, lora_settings
from lora_keras.mixlora.adapter_file import check_mixture, load_mixture, read_mixture, write_mixture
from lora_keras.multi_lora.adapter_file import (
    adapter_groups,
    check_adapter_file,
    set_adapter_weights,
)

ADAPTER_FORMAT = "lora_keras.adapter"
# Version 2 names the variant that wrote the file (DoRA files also hold magnitudes), so a
# lora_keras that reads version 1 refuses a DoRA file instead of loading it as LoRA.
ADAPTER_VERSION = 2
# Version 1 files hold LoRA factors only, written before variants existed.
_READABLE_VERSIONS = {1: "lora", 2: None}
_ARCHITECTURE_FIELDS = ("num_layers", "hidden_dim", "num_heads", "intermediate_dim")


def _architecture(backbone):
    return {field: int(getattr(backbone, field)) for field in _ARCHITECTURE_FIELDS}


def save_adapter(model, path, adapter=None):
    """Writes the LoRA weights of `model` to an HDF5 file, whole or not at all.

    Each layer's `lora_kernel_a` and `lora_kernel_b` (and a DoRA layer's
    `magnitude`) are stored under its path (`transformer_layer_0/query/...`), not
    its position, next to the settings (rank, alpha, targets, scaling rule,
    variant) and the architecture, so that
    `load_adapter` can refuse a file that does not fit. A merged model saves
    the same adapter as an unmerged one.

    A model holding several adapters (`lk.apply_multi_lora`) writes the one named
    `adapter`, at its own rank, into the same file a model with that adapter alone writes.

    Args:
        model: a KerasHub GPT-2 holding LoRA layers.
        path: where to write, conventionally `name.lora.h5`.
        adapter: the adapter's name, for a model holding several (and only then).
    """
    if adapter is not None or multi_lora_layers(model):
        settings, groups = adapter_groups(model, adapter)
        _write(path, model, settings, groups, mixture=False)
        return
    wrapped = lora_layers(model)
    mixture = mixlora_layers(model)
    if not wrapped and not mixture:
        raise ValueError("Cannot save an adapter: this model has no LoRA or MixLoRA layers.")
    groups = {
        layer_path: (
            tuple(layer.original_layer.kernel.shape),
            {name: np.asarray(v.numpy()) for name, v in layer.adapter_weights().items()},
        )
        for layer_path, layer in wrapped.items()
    }
    # settings are null when the model has MixLoRA only
    _write(path, model, lora_settings(wrapped) if wrapped else None, groups, bool(mixture))


def _write(path, model, settings, groups, mixture):
    """Writes the file: settings, architecture, `{layer path: (kernel shape, weights)}`."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as file:
        file.attrs["format"] = ADAPTER_FORMAT
        file.attrs["version"] = ADAPTER_VERSION
        file.attrs["settings"] = json.dumps(settings)
        file.attrs["architecture"] = json.dumps(_architecture(surgery.find_backbone(model)))
        for layer_path, (kernel_shape, weights) in groups.items():
            group = file.create_group(layer_path)
            group.attrs["kernel_shape"] = kernel_shape
            for name, array in weights.items():
                group[name] = array
        if mixture:
            write_mixture(file, model)
    atomic_write_bytes(path, buffer.getvalue())


def _read(path):
    """Returns `(settings, architecture, layers, mixture)`, `layers` keyed by layer path."""
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
        version = file.attrs.get("version")
        if version not in _READABLE_VERSIONS:
            raise ValueError(
                f"'{path}' is a version {version} adapter file; this lora_keras reads versions "
                f"up to {ADAPTER_VERSION}. Install the lora_keras that wrote it."
            )
        settings = json.loads(file.attrs["settings"])  # None: the file holds MixLoRA only
        if settings is not None:
            settings.setdefault("variant", _READABLE_VERSIONS[version])
        if settings is not None and settings["variant"] not in VARIANTS:
            raise ValueError(
                f"'{path}' holds a {settings['variant']!r} adapter; this lora_keras knows the "
                f"variants {', '.join(VARIANTS)}. Install the lora_keras that wrote it."
            )
        architecture = json.loads(file.attrs["architecture"])
        layers = {}
        for block_name, block in file.items():
            if block_name == "mixlora":  # read by `read_mixture`
                continue
            for target, group in block.items():
                layers[f"{block_name}/{target}"] = {
                    "kernel_shape": tuple(int(d) for d in group.attrs["kernel_shape"]),
                    "weights": {name: group[name][()] for name in group},
                }
        mixture = read_mixture(file)
    return settings, architecture, layers, mixture


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
    names = sorted(VARIANTS[settings["variant"]][0].ADAPTER_WEIGHT_NAMES)
    for layer_path, stored in layers.items():
        weights = stored["weights"]
        if sorted(weights) != names:
            raise ValueError(
                f"The adapter file holds {sorted(weights)} for {layer_path}; a "
                f"{settings['variant']!r} adapter holds {names}. The file is damaged or was not "
                "written by `lk.save_adapter`."
            )
        rank = settings["rank"]
        shapes = (weights["lora_kernel_a"].shape[-1], weights["lora_kernel_b"].shape[0])
        if stored["kernel_shape"] != expected[layer_path] or shapes != (rank, rank):
            raise ValueError(
                f"Adapter of the wrong shape for {layer_path}: saved for a kernel of shape "
                f"{stored['kernel_shape']} at rank {rank}, this model's kernel has shape "
                f"{expected[layer_path]}."
            )
        # What a variant adds to A and B (DoRA's magnitude) has one value per output unit.
        output_dims = weights["lora_kernel_b"].shape[1:]
        for name in sorted(set(weights) - {"lora_kernel_a", "lora_kernel_b"}):
            if weights[name].shape != output_dims:
                raise ValueError(
                    f"Adapter of the wrong shape for {layer_path}: its {name} has shape "
                    f"{weights[name].shape}, its B has output shape {output_dims}."
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
    if current["variant"] != settings["variant"]:
        raise ValueError(
            f"Wrong variant: the adapter was written by a {settings['variant']!r} model, this "
            f"model's LoRA is {current['variant']!r}. Load it into a model without LoRA, or "
            "unwrap first with `lk.unwrap_lora(model)`."
        )
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


def load_adapter(model, path, adapter=None):
    """Loads LoRA weights saved by `save_adapter`, checking that they fit.

    If `model` has no LoRA yet, LoRA is first applied with the file's settings.
    If its LoRA is merged, the old update is taken out, the new weights are set
    and merged in again, so the model stays consistent.

    Args:
        model: a KerasHub `GPT2CausalLM` or `GPT2Backbone`.
        path: an adapter file.
        adapter: the adapter's name, for a model holding several (and only then).

    A file holding a MixLoRA mixture (routers and experts) puts it in place the
    same way.

    A model holding several adapters (`lk.apply_multi_lora`) loads the file into the
    one named `adapter`: a LoRA file on the same targets, of a rank up to the model's
    padded rank; the adapter takes the file's rank and alpha.

    Returns:
        The adapter's LoRA settings (rank, alpha, dropout, rslora, targets, variant),
        and its MixLoRA settings under "mixlora" when it has a mixture.
    """
    settings, architecture, layers, mixture = _read(path)
    _check_architecture(architecture, model)
    if adapter is not None or multi_lora_layers(model):
        index = check_adapter_file(model, adapter, settings, mixture)
        _check_layers(settings, layers, model)  # all checks before the model changes
        set_adapter_weights(model, index, settings, layers)
        return settings
    if mixture is not None:
        check_mixture(mixture, model)
    if settings is None:  # MixLoRA only
        return {"mixlora": load_mixture(mixture, model)}
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
        for name, variable in layer.adapter_weights().items():
            variable.assign(layers[layer_path]["weights"][name])
        if remerge:
            layer.merge()
    if mixture is not None:
        return {**settings, "mixlora": load_mixture(mixture, model)}
    return settings
