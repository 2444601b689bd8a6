"""Putting LoRA into a KerasHub GPT-2, folding it back, and taking it out again."""

import keras
import keras_hub

from lora_keras import gpt2_surgery as surgery
from lora_keras.layers import (
    BaseLoraLayer,
    DoraDense,
    DoraEinsumDense,
    LoraDense,
    LoraEinsumDense,
    NF4EinsumDense,
)
from lora_keras.quant.nf4_backbone import backbone_from_config, nf4_config, refuse_if_nf4

# Each variant's wrappers: (for an EinsumDense, for a Dense). The one place a variant is chosen.
VARIANTS = {
    "lora": (LoraEinsumDense, LoraDense),
    "dora": (DoraEinsumDense, DoraDense),
}


@keras.saving.register_keras_serializable(package="lora_keras")
class LoraGPT2Backbone(keras_hub.models.GPT2Backbone):
    """A `GPT2Backbone` whose config also says where LoRA sits.

    A backbone is rebuilt from its own config when a `.keras` file loads, which
    would bring back plain projections and then fail to place the LoRA weights
    ("Layer 'query' expected 2 variables, but received 0"). `apply_lora` turns
    the backbone into this class so that the config carries the LoRA settings
    and `from_config` puts the wrappers back before the weights load.
    `unwrap_lora` turns it back into a plain `GPT2Backbone`.
    """

    def get_config(self):
        config = super().get_config()
        wrapped = lora_layers(self)
        if wrapped:  # a MixLoRA backbone (a subclass) may have no LoRA
            config["lora"] = {
                **lora_settings(wrapped),
                "merged_layers": [path for path, layer in wrapped.items() if layer.merged],
            }
        config.update(nf4_config(self))  # NF4 kernels under LoRA (QLoRA), if any
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        lora = config.pop("lora", None)
        backbone = backbone_from_config(config)
        if lora is None:
            return backbone
        apply_lora(
            backbone,
            rank=lora["rank"],
            alpha=lora["alpha"],
            targets=lora["targets"],
            dropout=lora["dropout"],
            rslora=lora["rslora"],
            variant=lora.get("variant", "lora"),  # configs written before variants: LoRA
        )
        # The kernels that load next already hold the merged update.
        wrapped = lora_layers(backbone)
        for path in lora["merged_layers"]:
            wrapped[path].merged = True
        return backbone


def lora_layers(model):
    """The LoRA wrappers in `model`, keyed by stable paths like `transformer_layer_0/query`."""
    backbone = surgery.find_backbone(model)
    found = {}
    for index, block in enumerate(backbone.transformer_layers):
        for target in surgery.TARGETS:
            layer = surgery.get_layer(block, target)
            if isinstance(layer, BaseLoraLayer):
                found[surgery.layer_path(index, target)] = layer
    return found


def forget_traced_functions(model):
    """Drops the functions Keras traced from `model`, so the next call traces them again.

    A trace bakes in Python-level choices: which layer sits at `query`, and
    whether a wrapper is `merged`. After changing either, an old
    `predict_function` would add a merged update twice, and an old
    `generate_function` would ignore new LoRA layers.
    """
    for owner in (model, surgery.find_backbone(model)):
        for name in ("train_function", "test_function", "predict_function", "generate_function"):
            if getattr(owner, name, None) is not None:
                setattr(owner, name, None)


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


def _require_lora(model, action):
    wrapped = lora_layers(model)
    if not wrapped:
        raise ValueError(
            f"Cannot {action}: this model has no LoRA layers. Call `lk.apply_lora(model)` first."
        )
    return wrapped


def apply_lora(
    model,
    rank=4,
    alpha=32.0,
    targets=("query", "value"),
    dropout=0.0,
    rslora=False,
    variant="lora",
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

    Returns:
        The list of wrapper layers inserted, block by block.
    """
    backbone = surgery.find_backbone(model)
    surgery.check_layout(backbone)
    targets = surgery.check_targets(targets)
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
                    original, rank=rank, alpha=alpha, dropout=dropout, rslora=rslora
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
    _freeze_all_but_lora(backbone)
    if not isinstance(backbone, LoraGPT2Backbone):  # a MixLoRA backbone stays one
        backbone.__class__ = LoraGPT2Backbone
    forget_traced_functions(model)
    return wrappers


def _freeze_all_but_lora(backbone):
    lora_ids = {
        id(variable)
        for layer in lora_layers(backbone).values()
        for variable in layer.adapter_weights().values()
    }
    # A MixLoRA block's router and experts train too (`lk.apply_mixlora`).
    for block in backbone.transformer_layers:
        mixture = surgery.get_mixture(block)
        lora_ids.update(id(v) for v in (mixture.adapter_weights if mixture else ()))
    for variable in backbone.weights:
        variable.trainable = id(variable) in lora_ids


def _refuse_mixture(model, action):
    if any(surgery.get_mixture(b) for b in surgery.find_backbone(model).transformer_layers):
        raise ValueError(
            f"Cannot {action} LoRA: this model has MixLoRA feed-forward blocks, and a routed "
            "mixture has no single dense equivalent to fold into the frozen kernels (each "
            "token uses its own experts). Save the adapter with `lk.save_adapter` instead, or "
            "load the model again without MixLoRA."
        )


def merge_lora(model):
    """Folds every LoRA update into its frozen kernel: inference at the base cost.

    A QLoRA model (NF4 kernels) is refused: `lk.dequantize_nf4(model)` first gives a
    float model, which merges.
    """
    _refuse_mixture(model, "merge")
    refuse_if_nf4(model, "merge_lora")
    for layer in _require_lora(model, "merge").values():
        layer.merge()
    forget_traced_functions(model)


def unmerge_lora(model):
    """Takes every merged LoRA update back out of its kernel, exactly."""
    for layer in _require_lora(model, "unmerge").values():
        layer.unmerge()
    forget_traced_functions(model)


def unwrap_lora(model):
    """Merges LoRA, then puts the plain layers back: a plain KerasHub GPT-2.

    The result saves and loads as `.keras` with no `lora_keras` import, and
    every weight is trainable again, as in a freshly loaded preset. A QLoRA
    model (NF4 kernels) is refused: `lk.dequantize_nf4(model)` first.
    """
    refuse_if_nf4(model, "unwrap_lora")
    backbone = surgery.find_backbone(model)
    _refuse_mixture(backbone, "unwrap")
    wrapped = _require_lora(backbone, "unwrap")
    for index, block in enumerate(backbone.transformer_layers):
        for target in surgery.TARGETS:
            layer = wrapped.get(surgery.layer_path(index, target))
            if layer is None:
                continue
            if not layer.merged:
                layer.merge()
            layer.original_layer.trainable = True
            surgery.set_layer(block, target, layer.original_layer)
    for variable in backbone.weights:
        variable.trainable = True
    backbone.__class__ = keras_hub.models.GPT2Backbone
    forget_traced_functions(model)
