"""Putting several named LoRA adapters on one frozen GPT-2, and recording them in its config."""

import keras

from lora_keras import gpt2_surgery as surgery
from lora_keras.gpt2_surgery import lora_layers, mixlora_layers, multi_lora_layers
from lora_keras.layers import MultiLoraDense, MultiLoraEinsumDense, NF4EinsumDense
from lora_keras.layers.adapter_routing import AdapterRouting
from lora_keras.layers.base_multi_lora_layer import check_adapters

# What each adapter's settings may say, and what they default to.
ADAPTER_DEFAULTS = {"rank": 4, "alpha": 32.0, "variant": "lora", "rslora": False}


def _adapter_list(adapters):
    """`{name: settings}` as the layers' list of `{"name", "rank", "alpha", "rslora"}`."""
    if not isinstance(adapters, dict) or not adapters:
        raise ValueError(
            "apply_multi_lora needs a non-empty dict {name: settings}, e.g. "
            "{'weather': {'rank': 4}, 'recipe': {'rank': 8, 'alpha': 16.0}}; got "
            f"{adapters!r}."
        )
    listed = []
    for name, settings in adapters.items():
        settings = dict(settings or {})
        unknown = sorted(set(settings) - set(ADAPTER_DEFAULTS))
        if unknown:
            raise ValueError(
                f"Adapter {name!r}: unknown settings {unknown}; an adapter takes "
                f"{', '.join(ADAPTER_DEFAULTS)}."
            )
        settings = {**ADAPTER_DEFAULTS, **settings}
        if settings["variant"] != "lora":
            raise ValueError(
                f"Adapter {name!r}: variant {settings['variant']!r} is not supported with "
                "several adapters yet; only 'lora'. DoRA's magnitude divides each adapter's "
                "output by the norm of its own adapted kernel (W + s A B), a kernel-sized "
                "computation per adapter and step that the shared frozen pass cannot do "
                "once for all. Train a DoRA adapter alone with `lk.apply_lora(..., "
                "variant='dora')`."
            )
        listed.append({"name": name, **{k: settings[k] for k in ("rank", "alpha", "rslora")}})
    return check_adapters(listed)


def apply_multi_lora(model, adapters, targets=("query", "value"), dropout=0.0, a_init="lora"):
    """Puts several named LoRA adapters on the same targets of one frozen GPT-2.

    The model's inputs gain `adapter_ids` (int32, one per sequence): each
    sequence uses the adapter at that position of `adapters`. The frozen base
    runs once for the whole batch, each adapter's update touches only its own
    sequences, and one `fit` trains them all. Adapters of different ranks are
    zero-padded to the largest; the padding changes no output and never trains
    (see `lk.MultiLoraEinsumDense`). Only the adapters' A and B are trainable.

    A float16/bfloat16 frozen model (adapters stay float32) and an NF4 base
    (`lk.quantize_nf4` first) work as with `lk.apply_lora`.

    Args:
        model: a KerasHub `GPT2CausalLM` (it becomes a `MultiAdapterGPT2CausalLM`).
        adapters: `{name: {"rank": int, "alpha": float, "variant": "lora",
            "rslora": bool}}`; rank defaults to 4, alpha to 32.0.
        targets: names among "query", "key", "value", "attention_output",
            "ffn_in", "ffn_out", shared by every adapter.
        dropout: float, dropout on the low-rank branch's input, shared.
        a_init: how each A starts, as in `lk.apply_lora`.

    Returns:
        The list of wrapper layers inserted, block by block.

    Example:
    ```python
    lm = lk.load_gpt2("gpt2_base_en", weights="random")
    lk.apply_multi_lora(lm, {"weather": {"rank": 4}, "recipe": {"rank": 8, "alpha": 16.0}})
    lm({**x, "adapter_ids": np.array([0, 1], "int32")})
    ```
    """
    backbone = surgery.find_backbone(model)
    surgery.check_layout(backbone)
    targets = surgery.check_targets(targets)
    listed = _adapter_list(adapters)
    if multi_lora_layers(backbone):
        raise ValueError(
            "This model already holds several adapters: apply_multi_lora once, naming every "
            "adapter in its dict. Load more weights into a named adapter with "
            "`lk.load_adapter(model, path, adapter=NAME)`."
        )
    if lora_layers(backbone):
        raise ValueError(
            "This model already has LoRA (`lk.apply_lora`): one model holds either one "
            "adapter or several. Call `lk.unwrap_lora(model)` first, or load the base again."
        )
    if mixlora_layers(backbone):
        raise ValueError(
            "This model has MixLoRA feed-forward blocks: several MixLoRA adapters on one base "
            "are not supported yet (each block would need its experts and router per adapter). "
            "Apply several adapters to a model without MixLoRA."
        )
    surgery.check_multi_adapter_lm(model)
    wrappers = place_multi_lora(backbone, listed, targets, dropout, a_init)
    surgery.settle_multi_adapter_lm(model)
    surgery.forget_traced_functions(model)
    return wrappers


def place_multi_lora(backbone, adapters, targets, dropout, a_init, max_rank=None):
    """Wraps every target of every block, all built before the first is placed."""
    planned = []
    try:
        for block in backbone.transformer_layers:
            for target in targets:
                original = surgery.get_layer(block, target)
                einsum = (keras.layers.EinsumDense, NF4EinsumDense)
                wrapper_class = (
                    MultiLoraEinsumDense if isinstance(original, einsum) else MultiLoraDense
                )
                was_trainable = original.trainable
                wrapper = wrapper_class(
                    original, adapters, dropout=dropout, a_init=a_init, max_rank=max_rank
                )
                planned.append((block, target, wrapper, was_trainable))
    except Exception:
        # A refused call leaves the model as it was, trainable flags included.
        for _, _, wrapper, was_trainable in planned:
            wrapper.original_layer.trainable = was_trainable
        raise
    routing = AdapterRouting([a["name"] for a in adapters])  # one per model, read by every layer
    for block, target, wrapper, _ in planned:
        wrapper.join_routing(routing)
        surgery.set_layer(block, target, wrapper)
    surgery.freeze_all_but_adapters(backbone)
    surgery.settle_class(backbone)
    return [wrapper for _, _, wrapper, _ in planned]


def adapter_names(model):
    """The names of a multi-adapter model's adapters, in the order of their ids.

    Example: `lk.adapter_names(lm)` gives `["weather", "recipe"]`, so
    `adapter_ids` 0 means "weather".
    """
    layers = multi_lora_layers(model)
    if not layers:
        raise ValueError(
            "This model holds no named adapters: `lk.apply_multi_lora(model, {name: settings})` "
            "puts several on it."
        )
    return next(iter(layers.values())).adapter_names


def adapter_index(model, name):
    """The id of adapter `name`, or a ValueError listing the adapters there are."""
    names = adapter_names(model)
    if name not in names:
        raise ValueError(f"Unknown adapter {name!r}: this model holds {names}.")
    return names.index(name)


def multi_lora_settings(model):
    """The "multi_lora" section: every adapter's settings, the targets and the shared ones."""
    layers = multi_lora_layers(model)
    if not layers:
        return None
    first = next(iter(layers.values()))
    targets = sorted({path.split("/")[1] for path in layers}, key=surgery.TARGETS.index)
    adapters = [{**a, "variant": "lora"} for a in first.adapters]
    settings = {"adapters": adapters, "targets": targets, "dropout": first.dropout}
    return {**settings, "max_rank": first.max_rank}


def _restore(backbone, section):
    """Puts the adapters back on a backbone rebuilt from its config, before its weights load."""
    adapters = check_adapters(
        [{k: a[k] for k in ("name", "rank", "alpha", "rslora")} for a in section["adapters"]]
    )
    targets, dropout, max_rank = tuple(section["targets"]), section["dropout"], section["max_rank"]
    place_multi_lora(backbone, adapters, targets, dropout, "lora", max_rank)


surgery.register_section("multi_lora", multi_lora_settings, _restore)
