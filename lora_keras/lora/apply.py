"""Putting LoRA (or DoRA) into a KerasHub GPT-2, and recording it in the backbone's config."""

import keras

from lora_keras import gpt2_surgery as surgery
from lora_keras.gpt2_surgery import lora_layers
from lora_keras.layers import (
    BaseLoraLayer,
    DoraDense,
    DoraEinsumDense,
    LoraDense,
    LoraEinsumDense,
    NF4EinsumDense,
)

# Each variant's wrappers: (for an EinsumDense, for a Dense). The one place a variant is chosen.
VARIANTS = {
    "lora": (LoraEinsumDense, LoraDense),
    "dora": (DoraEinsumDense, DoraDense),
}


def lora_settings(wrapped):
    """What LoRA layers `{path: layer}` share: rank, alpha, dropout, rslora, targets, variant."""
    first = next(iter(wrapped.values()))
    return {
        "rank": first.rank,
        "alpha": first.alpha,
        "dropout": first.dropout,
        "rslora": first.rslora,
        "targets": sorted({path.split("/")[1] for path in wrapped}, key=surgery.TARGETS.index),
        "variant": first.variant,
    }


def apply_lora(
    model,
    rank=4,
    alpha=32.0,
    targets=("query", "value"),
    dropout=0.0,
    rslora=False,
    variant="lora",
    a_init="lora",
):
    """Wraps the target projections of every transformer block with LoRA.

    Afterwards only the LoRA weights are trainable: embeddings, layer norms,
    kernels and biases are frozen. Nothing in the model changes until all
    wrappers have been built, so a bad argument leaves the model as it was.

    Args:
        model: a KerasHub `GPT2CausalLM` or `GPT2Backbone`.
        rank: int, the rank of each update.
        alpha: float, the update is scaled by `alpha / rank`.
        targets: names among "query", "key", "value", "attention_output",
            "ffn_in", "ffn_out".
        dropout: float, dropout on the LoRA branch's input.
        rslora: bool, scale by `alpha / sqrt(rank)` instead.
        variant: "lora", or "dora" (`lk.DoraEinsumDense`, `lk.DoraDense`: a
            trainable magnitude per output unit, which trains with A and B).
        a_init: how A starts: "lora" (the reference LoRA's and PEFT's) or
            "he_uniform" (Keras's `enable_lora`'s); see `lk.BaseLoraLayer`.

    Returns:
        The list of wrapper layers inserted, block by block.
    """
    backbone = surgery.find_backbone(model)
    surgery.check_layout(backbone)
    targets = surgery.check_targets(targets)
    surgery.refuse_if_multi_lora(
        backbone, "apply LoRA", "a model holds either one adapter or several, not both."
    )
    if variant not in VARIANTS:
        raise ValueError(
            f"Unknown LoRA variant {variant!r}. Known variants: {', '.join(VARIANTS)}."
        )
    existing = lora_layers(backbone)
    for index, block in enumerate(backbone.transformer_layers):
        for target in targets:
            if target in surgery.FEEDFORWARD_TARGETS and surgery.get_mixture(block):
                raise ValueError(
                    f"Cannot apply LoRA to {surgery.layer_path(index, target)}: the feed-forward "
                    "block is a MixLoRA mixture whose experts already carry LoRA. Apply LoRA to "
                    "attention targets only (query, key, value, attention_output)."
                )
            if isinstance(surgery.get_layer(block, target), BaseLoraLayer):
                raise ValueError(
                    f"LoRA is already applied to {surgery.layer_path(index, target)}. Apply "
                    "LoRA once; to start again, call `lk.unwrap_lora(model)` first."
                )
    if existing:
        # One model, one set of settings: configs and adapter files record a single one.
        ours = {"rank": int(rank), "alpha": float(alpha), "dropout": float(dropout)}
        ours.update(rslora=bool(rslora), variant=variant)
        theirs = {key: lora_settings(existing)[key] for key in ours}
        if ours != theirs:
            raise ValueError(
                f"This model already has LoRA with {theirs}; more targets must use the same "
                f"settings, got {ours}. Or call `lk.unwrap_lora(model)` first."
            )
    planned = []
    for_einsum, for_dense = VARIANTS[variant]
    try:
        for block in backbone.transformer_layers:
            for target in targets:
                original = surgery.get_layer(block, target)
                einsum = (keras.layers.EinsumDense, NF4EinsumDense)
                wrapper_class = for_einsum if isinstance(original, einsum) else for_dense
                was_trainable = original.trainable
                wrapper = wrapper_class(
                    original, rank=rank, alpha=alpha, dropout=dropout, rslora=rslora, a_init=a_init
                )
                planned.append((block, target, wrapper, was_trainable))
    except Exception:
        # A refused call leaves the model as it was, trainable flags included.
        for _, _, wrapper, was_trainable in planned:
            wrapper.original_layer.trainable = was_trainable
        raise
    for block, target, wrapper, _ in planned:
        surgery.set_layer(block, target, wrapper)
    wrappers = [wrapper for _, _, wrapper, _ in planned]
    surgery.freeze_all_but_adapters(backbone)
    surgery.settle_class(backbone)
    surgery.forget_traced_functions(model)
    return wrappers


def _describe(backbone):
    """The "lora" section of an adapted backbone's config: settings and merged layers."""
    wrapped = lora_layers(backbone)
    if not wrapped:
        return None
    merged = [path for path, layer in wrapped.items() if layer.merged]
    return {**lora_settings(wrapped), "merged_layers": merged}


def _restore(backbone, section):
    """Puts LoRA back on a backbone rebuilt from its config, before its weights load."""
    apply_lora(
        backbone,
        rank=section["rank"],
        alpha=section["alpha"],
        targets=section["targets"],
        dropout=section["dropout"],
        rslora=section["rslora"],
        variant=section.get("variant", "lora"),  # configs written before variants: LoRA
    )
    # The kernels that load next already hold the merged update.
    wrapped = lora_layers(backbone)
    for path in section["merged_layers"]:
        wrapped[path].merged = True


surgery.register_section("lora", _describe, _restore)
