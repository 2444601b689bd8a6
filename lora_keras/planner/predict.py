"""One run's predicted peak memory, from its configuration alone: no model is built."""

from lora_keras.levers.options import CHUNK_SIZE, check_mode_options, check_options
from lora_keras.mixlora.settings import MIXLORA_DEFAULTS
from lora_keras.models.architectures import GPT2_ARCHITECTURES
from lora_keras.planner.counting import MODES, PROJECTIONS, count_params
from lora_keras.planner.formula import estimate_training_memory
from lora_keras.planner.framework import combine, framework_for

HALF_BYTES = 2  # float16 and bfloat16


def architecture(preset):
    """The `GPT2_ARCHITECTURES` row of `preset`, or a ValueError naming the known ones."""
    if preset not in GPT2_ARCHITECTURES:
        raise ValueError(
            f"Unknown preset {preset!r}. Known presets: {', '.join(GPT2_ARCHITECTURES)}."
        )
    return GPT2_ARCHITECTURES[preset]


def predict_peak(
    preset,
    mode,
    batch_size,
    sequence_length,
    backend="tensorflow",
    device_kind="cpu",
    options=None,
    rank=4,
    targets=("query", "value"),
    mixlora=None,
    dropout=True,
):
    """Predict the peak memory of one training run, by component.

    Args:
        preset: a name of `GPT2_ARCHITECTURES` (only its shapes are used).
        mode: "full", "lora", "keras_lora", "dora", "qlora" or "mixlora".
        batch_size, sequence_length: the shape of one batch of token ids.
        backend: "tensorflow", "jax" or "torch". device_kind: "cpu" or "gpu".
        options: the levers (`lora_keras.levers.options.Options` fields) as a dict.
        rank, targets: LoRA's. mixlora: MixLoRA's settings (defaults filled in).
        dropout: whether dropout is active (GPT-2's presets train with it).

    Returns:
        `(components, phase, counts)`: bytes per component (`framework.combine`), the moment
        of the peak ("backward" or "update"), and `count_params`'s weight counts.

    Example: `predict_peak("gpt2_base_en", "lora", 4, 128)[0]["total"]` (TensorFlow, CPU).
    """
    arch = architecture(preset)
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}. Known modes: {', '.join(MODES)}.")
    for name, value in {"batch_size": batch_size, "sequence_length": sequence_length}.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if sequence_length > arch["max_sequence_length"]:
        raise ValueError(
            f"sequence_length {sequence_length} is longer than {preset}'s position "
            f"embedding ({arch['max_sequence_length']})."
        )
    options = check_mode_options(mode, check_options(**(options or {})))
    mixlora = {**MIXLORA_DEFAULTS, **(mixlora or {})}
    framework = framework_for(backend, device_kind, options["jit_compile"])
    counts = count_params(arch, mode, rank=rank, targets=targets, mixlora=mixlora)
    half = options["mixed_precision"] or options["frozen_dtype"]
    mixed = bool(options["mixed_precision"])
    dora_units = dora_largest = 0
    if mode == "dora":
        for target in targets:
            inputs, outputs = PROJECTIONS[target](arch["hidden_dim"], arch["intermediate_dim"])
            dora_units += arch["num_layers"] * outputs
            dora_largest = max(dora_largest, inputs * outputs)
    loss_chunk = CHUNK_SIZE if options["chunked_loss"] else None
    first = estimate_training_memory(
        num_layers=arch["num_layers"],
        hidden_dim=arch["hidden_dim"],
        num_heads=arch["num_heads"],
        intermediate_dim=arch["intermediate_dim"],
        vocabulary_size=arch["vocabulary_size"],
        trainable_params=counts["trainable"],
        total_params=counts["total"],
        batch_size=batch_size,
        sequence_length=sequence_length,
        compute_dtype_bytes=HALF_BYTES if half else 4,
        frozen_dtype_bytes=HALF_BYTES if options["frozen_dtype"] else 4,
        dropout=dropout,
        nf4_params=counts["nf4"],
        dora_output_units=dora_units,
        dora_largest_kernel=dora_largest,
        remat=options["remat"] and (framework.remat_saves_mixed or not mixed),
        loss_chunk=loss_chunk,
        kernel_casts=mixed,
        logits_copies=2 if framework.fused_loss else 3,
        mixlora_top_k=mixlora["top_k"] if mode == "mixlora" and mixlora["variant"] == "lora" else 0,
    )
    # In full fine-tuning the tied embedding's gradient is the first one the backward pass makes.
    head = (
        arch["vocabulary_size"] * arch["hidden_dim"] * 4 if mode == "full" else first["gradients"]
    )
    logits = batch_size * min(loss_chunk or sequence_length, sequence_length)
    components, phase = combine(first, framework, head, logits * arch["vocabulary_size"] * 4)
    return components, phase, counts
