"""What each part of a memory estimate is, in words: what a report prints beside the figures.

Without Keras, so that a report is drawn from results.json alone; the figures come from
`lora_keras.measure.estimate`.
"""

from lora_keras.measure.units import format_bytes, format_share

# AdamW's first and second moment estimates, each the shape and dtype of its weight.
ADAMW_SLOTS = 2
COMPONENT_NOTES = {
    "weights": (
        "every weight, trainable or frozen, stored once (NF4 kernels of a QLoRA model at their "
        "packed size)"
    ),
    "gradients": "one gradient per trainable weight; frozen weights get none",
    "optimizer_state": (
        f"AdamW keeps {ADAMW_SLOTS} slots (first and second moments) per trainable weight"
    ),
    "activations": (
        "tensors the forward pass saves for the backward pass: per block the layer norms, "
        "query/key/value, the attention probabilities (batch x heads x seq x seq), the "
        "feed-forward intermediate; then the logits (batch x seq x vocabulary) and their softmax "
        "gradient. They scale with batch and sequence length, and LoRA keeps most of them"
    ),
    "dora": (
        "DoRA's extra tensors: per DoRA layer the unscaled output (batch x seq x output units) "
        "kept for the magnitude's gradient, its column norm and scale; and V = W + s*A@B with its "
        "square, kernel-sized temporaries of the largest DoRA kernel, rebuilt every step for "
        "the norm. Its magnitudes, their gradients and AdamW slots count with the trainable "
        "weights"
    ),
}


def explain_estimate(estimate):
    """Return one sentence per component of an estimate: its size, its share, and why.

    Example: `"optimizer_state: 949.40 MiB (37.5% of 2.47 GiB): AdamW keeps 2 slots ..."`.
    """
    total = estimate["total"]
    return [
        f"{name}: {format_bytes(estimate[name])} ({format_share(estimate[name], total)} of "
        f"{format_bytes(total)}): {note}."
        for name, note in COMPONENT_NOTES.items()
        if name in estimate  # `dora` only where there are DoRA layers
    ]
