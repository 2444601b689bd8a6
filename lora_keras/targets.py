"""The names of the GPT-2 projections LoRA can wrap, checked without importing Keras.

Kept apart from `gpt2_surgery` (which knows where each one sits in KerasHub's layers) so that
the command line lists and checks them before TensorFlow starts.
"""

TARGETS = ("query", "key", "value", "attention_output", "ffn_in", "ffn_out")


def check_targets(targets):
    """Returns `targets` as a tuple after checking every name is known."""
    if isinstance(targets, str):
        targets = (targets,)
    targets = tuple(targets)
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        raise ValueError(
            f"Unknown LoRA target(s) {unknown or list(targets)}. "
            f"Valid targets: {', '.join(TARGETS)}."
        )
    if len(set(targets)) != len(targets):
        raise ValueError(f"LoRA targets must not repeat, got {list(targets)}.")
    return targets
