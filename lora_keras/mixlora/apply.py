"""Putting MixLoRA (or MixDoRA) into the feed-forward blocks of a KerasHub GPT-2."""

import keras
import numpy as np

from lora_keras import gpt2_surgery as surgery
from lora_keras.gpt2_surgery import is_nf4_quantized, lora_layers, mixlora_layers
from lora_keras.layers import MixDoraFeedForward, MixLoraFeedForward
from lora_keras.layers.mixlora_feedforward import BalancePool
from lora_keras.mixlora.settings import MIXLORA_DEFAULTS, MIXLORA_VARIANTS, saved_settings

# variant -> the block class: each variant is its own layer, never an `if` in one.
VARIANTS = dict(zip(MIXLORA_VARIANTS, (MixLoraFeedForward, MixDoraFeedForward), strict=True))


def mixlora_settings(model):
    """The settings `apply_mixlora` was called with, read back from the blocks."""
    mixtures = mixlora_layers(model)
    if not mixtures:
        return None
    first = next(iter(mixtures.values()))
    variant = next(name for name, cls in VARIANTS.items() if type(first) is cls)
    keys = [key for key in MIXLORA_DEFAULTS if key != "variant"]
    return {**{key: getattr(first, key) for key in keys}, "variant": variant}


def apply_mixlora(
    model,
    num_experts=MIXLORA_DEFAULTS["num_experts"],
    top_k=MIXLORA_DEFAULTS["top_k"],
    rank=MIXLORA_DEFAULTS["rank"],
    alpha=MIXLORA_DEFAULTS["alpha"],
    aux_loss_coef=MIXLORA_DEFAULTS["aux_loss_coef"],
    dropout=MIXLORA_DEFAULTS["dropout"],
    aux_loss_scope=MIXLORA_DEFAULTS["aux_loss_scope"],
    variant=MIXLORA_DEFAULTS["variant"],
):
    """Replaces the feed-forward block of every transformer layer by a mixture of LoRA experts.

    Every expert shares the frozen `ffn_in -> gelu -> ffn_out` block and
    differs from it by its own LoRA (or, with `variant="dora"`, DoRA) updates;
    a router sends each token to its `top_k` experts. Nothing else changes:
    put LoRA on attention with `lk.apply_lora`, before or after. Afterwards only
    the routers, the experts and any LoRA weights train. At first every expert
    equals the frozen block, so the model's outputs are unchanged. A refused
    call leaves the model as it was.

    Args:
        model: a KerasHub `GPT2CausalLM` or `GPT2Backbone`.
        num_experts, top_k, rank, alpha, aux_loss_coef, dropout, aux_loss_scope: see
            `lk.MixLoraFeedForward` (by default the MixLoRA reference's load-balance loss:
            one over every block's routing, weighted 0.001).
        variant: "lora" (MixLoRA) or "dora" (MixDoRA).

    Returns:
        The list of MixLoRA blocks inserted, one a transformer layer.
    """
    backbone = surgery.find_backbone(model)
    surgery.check_layout(backbone)
    surgery.refuse_if_multi_lora(
        backbone, "apply MixLoRA", "MixLoRA beside several adapters is not supported yet."
    )
    if variant not in VARIANTS:
        raise ValueError(f"Unknown MixLoRA variant '{variant}'. Known: {', '.join(VARIANTS)}.")
    if is_nf4_quantized(backbone):
        raise ValueError(
            "This model's block kernels are stored as NF4 (QLoRA); MixLoRA's experts share the "
            "frozen feed-forward kernels in float. Apply MixLoRA to a float model, or call "
            "`lk.dequantize_nf4(model)` first."
        )
    if mixlora_layers(backbone):
        raise ValueError(
            "MixLoRA is already applied to this model's feed-forward blocks. Apply it once; "
            "to start again, load the model again."
        )
    lora_on_ffn = [
        path for path in lora_layers(backbone) if path.split("/")[1] in surgery.FEEDFORWARD_TARGETS
    ]
    if lora_on_ffn:
        raise ValueError(
            f"LoRA already wraps {lora_on_ffn}; MixLoRA replaces the whole feed-forward block "
            "with its own experts. Apply LoRA to attention targets only, or call "
            "`lk.unwrap_lora(model)` first."
        )
    planned = []
    try:
        for block in backbone.transformer_layers:
            dense_in, dense_out = (surgery.get_layer(block, t) for t in surgery.FEEDFORWARD_TARGETS)
            was_trainable = (dense_in.trainable, dense_out.trainable)
            mixture = VARIANTS[variant](
                dense_in,
                dense_out,
                num_experts=num_experts,
                top_k=top_k,
                rank=rank,
                alpha=alpha,
                aux_loss_coef=aux_loss_coef,
                dropout=dropout,
                aux_loss_scope=aux_loss_scope,
                name=f"{block.name}_mixlora",
            )
            planned.append((block, mixture, was_trainable))
    except Exception:
        # A refused call leaves the model as it was, trainable flags included.
        for block, _, (trainable_in, trainable_out) in planned:
            surgery.get_layer(block, "ffn_in").trainable = trainable_in
            surgery.get_layer(block, "ffn_out").trainable = trainable_out
        raise
    pool = BalancePool(size=len(planned))  # one load-balance loss over all of them
    for position, (block, mixture, _) in enumerate(planned):
        mixture.join_balance_pool(pool, position)
        surgery.set_mixture(block, mixture)
    surgery.freeze_all_but_adapters(backbone)
    surgery.settle_class(backbone)
    surgery.forget_traced_functions(model)
    return [mixture for _, mixture, _ in planned]


def expert_loads(model):
    """The fraction of routed (token, slot) choices each expert got in training, per layer.

    Counted over non-padding tokens in every training call since
    `apply_mixlora` (or since the model was loaded). A layer that has not
    trained yet has all fractions 0.

    Returns:
        `{"transformer_layer_0/ffn": [fraction of expert 0, ...], ...}`.
    """
    loads = {}
    for path, mixture in mixlora_layers(model).items():
        counts = np.asarray(keras.ops.convert_to_numpy(mixture.expert_counts), dtype="float64")
        total = counts.sum()
        loads[path] = (counts / total if total else counts).tolist()
    return loads


def mixlora_record(model):
    """The MixLoRA part of a run record: its settings and expert loads, or `{}` without one."""
    if not mixlora_layers(model):
        return {}
    settings = mixlora_settings(model)
    return {
        "rank": settings["rank"],
        "alpha": settings["alpha"],
        "mixlora": settings,
        "expert_loads": expert_loads(model),
    }


def _restore(backbone, settings):
    apply_mixlora(backbone, **saved_settings(settings))


surgery.register_section("mixlora", mixlora_settings, _restore)
