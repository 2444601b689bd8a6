"""How many weights train: the figure that says what LoRA is for."""

import math

from lora_keras import gpt2_surgery as surgery


def trainable_summary(model):
    """Counts trainable and frozen weights, each shared variable once.

    A kernel stored as NF4 (`lk.quantize_nf4`) counts as the weights it stands for,
    not as its packed codes and constants: `stored_weight_bytes` says what it takes.

    Args:
        model: a KerasHub `GPT2CausalLM` or `GPT2Backbone` (with or without LoRA).

    Returns:
        `{"trainable": int, "non_trainable": int, "total": int}`.
    """
    backbone = surgery.find_backbone(model)
    nf4 = surgery.nf4_layers(backbone).values()
    nf4_storage = {id(v) for layer in nf4 for v in layer.non_trainable_weights}
    nf4_storage -= {id(layer.bias) for layer in nf4 if layer.bias is not None}
    # A GPT2CausalLM ties its output projection to the token embedding, so the
    # backbone holds every variable the model owns.
    trainable = sum(math.prod(v.shape) for v in backbone.trainable_weights)
    non_trainable = sum(
        math.prod(v.shape) for v in backbone.non_trainable_weights if id(v) not in nf4_storage
    )
    non_trainable += sum(math.prod(layer.kernel_shape) for layer in nf4)
    return {
        "trainable": int(trainable),
        "non_trainable": int(non_trainable),
        "total": int(trainable + non_trainable),
    }


def format_trainable_summary(model):
    """One line like PEFT's `print_trainable_parameters`.

    For example `trainable 147,456 of 124,587,264 (0.12%)`.
    """
    counts = trainable_summary(model)
    share = 100.0 * counts["trainable"] / counts["total"]
    return f"trainable {counts['trainable']:,} of {counts['total']:,} ({share:.2f}%)"
