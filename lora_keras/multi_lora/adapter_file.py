"""One adapter of many, to and from the file a single-adapter model reads.

`lk.save_adapter(model, path, adapter=NAME)` and `lk.load_adapter(model, path, adapter=NAME)`
call these: the file is the one `apply_lora` models write (same groups, same settings), so an
adapter trained beside others loads into its own plain model, and the reverse.
"""

from lora_keras.gpt2_surgery import multi_lora_layers
from lora_keras.multi_lora.apply import adapter_index, multi_lora_settings


def _require_multi(model, adapter, action):
    """The model's multi-LoRA layers, or a ValueError when `adapter=` does not fit the model."""
    layers = multi_lora_layers(model)
    if not layers:
        raise ValueError(
            f"Cannot {action} adapter={adapter!r}: this model holds no named adapters. Leave "
            "out `adapter=` for a model with one LoRA, or `lk.apply_multi_lora` first."
        )
    if adapter is None:
        names = next(iter(layers.values())).adapter_names
        raise ValueError(
            f"This model holds several adapters ({', '.join(names)}): name the one to "
            f"{action} with `adapter=NAME`."
        )
    return layers


def adapter_groups(model, adapter):
    """`(settings, {layer path: (kernel shape, {weight name: array})})` of one adapter.

    The settings are those `lk.apply_lora` records, so the file reads as a plain LoRA one.
    """
    layers = _require_multi(model, adapter, "save")
    index = adapter_index(model, adapter)
    section = multi_lora_settings(model)
    own = section["adapters"][index]
    settings = {
        "rank": own["rank"],
        "alpha": own["alpha"],
        "dropout": section["dropout"],
        "rslora": own["rslora"],
        "targets": section["targets"],
        "variant": "lora",
    }
    groups = {
        path: (tuple(layer.original_layer.kernel.shape), layer.get_adapter(index))
        for path, layer in layers.items()
    }
    return settings, groups


def check_adapter_file(model, adapter, settings, mixture):
    """The id of `adapter` if the file's adapter fits it, else a ValueError; nothing changes."""
    layers = _require_multi(model, adapter, "load")
    index = adapter_index(model, adapter)
    if settings is None or mixture is not None:
        raise ValueError(
            f"Cannot load this file into adapter {adapter!r}: it holds a MixLoRA mixture, and "
            "several adapters on one model are LoRA only. Load it into a model of its own."
        )
    if settings["variant"] != "lora":
        raise ValueError(
            f"Cannot load a {settings['variant']!r} adapter into adapter {adapter!r}: several "
            "adapters on one model are LoRA only. Load it into a model of its own."
        )
    targets = multi_lora_settings(model)["targets"]
    if list(settings["targets"]) != list(targets):
        raise ValueError(
            f"Wrong targets: the file's adapter covers {settings['targets']}, this model's "
            f"adapters cover {targets}. Load it into a model with the same targets."
        )
    max_rank = next(iter(layers.values())).max_rank
    if settings["rank"] > max_rank:
        raise ValueError(
            f"The file's adapter has rank {settings['rank']}, larger than this model's padded "
            f"rank {max_rank}: apply the adapters again with a rank of at least "
            f"{settings['rank']} for {adapter!r} (or `max_rank` in the layers)."
        )
    return index


def set_adapter_weights(model, index, settings, stored):
    """Puts the file's factors at adapter `index` of every layer, with the file's rank and alpha."""
    for path, layer in multi_lora_layers(model).items():
        layer.set_adapter(
            index,
            stored[path]["weights"],
            rank=settings["rank"],
            alpha=settings["alpha"],
            rslora=settings["rslora"],
        )
