"""What each part of a memory estimate is, in words: what a report prints beside the figures.

Without Keras, so that a report is drawn from results.json alone; the figures come from
`lora_keras.measure.estimate` (a built model) and `lora_keras.planner` (a configuration), one
model. An estimate holds only the components that were the peak's: in the optimizer update's
phase, no activations but the logits still held.
"""

from lora_keras.planner.formula import ADAMW_SLOTS
from lora_keras.units import format_bytes, format_share

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
    "framework": (
        "the backend's own share beside the tensors above: memory it holds whatever the model "
        "(a traced graph, workspaces, cached blocks) and what an unfused graph keeps beyond the "
        "minimal activations; fitted to the committed measurements "
        "(benchmarks/results/planner-calibration.md)"
    ),
    "optimizer_update": (
        "temporaries of the AdamW update, where it is the peak: the update of every weight at "
        "once (torch's foreach ops, TensorFlow's graph) holds a few trainable-sized tensors "
        "beside the gradients; XLA updates in place"
    ),
    "mixlora": (
        "MixLoRA's extra activations: the GELU cannot be shared, so each token's k chosen "
        "experts save a GELU input and output (batch x seq x intermediate) each, and the "
        "routing-weighted sum entering the shared output matmul"
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
