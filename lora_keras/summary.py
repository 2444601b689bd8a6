"""How many weights train: the figure that says what LoRA is for."""

import math

from lora_keras import gpt2_surgery as surgery


def trainable_summary(model):
    """Counts trainable and frozen weights, each shared variable once.

    Args:
        model: a KerasHub `GPT2CausalLM` or `GPT2Backbone` (with or without LoRA).

    Returns:
        `{"trainable": int, "non_trainable": int, "total": int}`.
    """
    backbone = surgery.find_backbone(model)
    # A GPT2CausalLM ties its output projection to the token embedding, so the
    # backbone holds every variable the model owns.
    trainable = sum(math.prod(v.shape) for v in backbone.trainable_weights)
    non_trainable = sum(math.prod(v.shape) for v in backbone.non_trainable_weights)
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
