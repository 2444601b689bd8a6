"""Folding LoRA into the frozen kernels and back, and taking it out: a plain GPT-2 again."""

from lora_keras import gpt2_surgery as surgery
from lora_keras.gpt2_surgery import lora_layers
from lora_keras.qlora import refuse_if_nf4

# Why a model holding several adapters neither merges nor unwraps.
_NO_SINGLE_UPDATE = (
    "there is no single update to fold into the shared frozen kernels: each sequence uses "
    "its own adapter."
)


def _require_lora(model, action):
    wrapped = lora_layers(model)
    if not wrapped:
        raise ValueError(
            f"Cannot {action}: this model has no LoRA layers. Call `lk.apply_lora(model)` first."
        )
    return wrapped


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
    float model, which merges. So is a model holding several adapters (`lk.apply_multi_lora`).
    """
    surgery.refuse_if_multi_lora(model, "merge LoRA", _NO_SINGLE_UPDATE)
    _refuse_mixture(model, "merge")
    refuse_if_nf4(model, "merge_lora")
    for layer in _require_lora(model, "merge").values():
        layer.merge()
    surgery.forget_traced_functions(model)


def unmerge_lora(model):
    """Takes every merged LoRA update back out of its kernel, exactly."""
    surgery.refuse_if_multi_lora(model, "unmerge LoRA", "it is never merged.")
    for layer in _require_lora(model, "unmerge").values():
        layer.unmerge()
    surgery.forget_traced_functions(model)


def unwrap_lora(model):
    """Merges LoRA, then puts the plain layers back: a plain KerasHub GPT-2.

    The result saves and loads as `.keras` with no `lora_keras` import, and
    every weight is trainable again, as in a freshly loaded preset. A QLoRA
    model (NF4 kernels) is refused: `lk.dequantize_nf4(model)` first.
    """
    refuse_if_nf4(model, "unwrap_lora")
    surgery.refuse_if_multi_lora(model, "unwrap LoRA", _NO_SINGLE_UPDATE)
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
    surgery.settle_class(backbone)
    surgery.forget_traced_functions(model)
